"""
Star detection: `CNNStarFinder`.
"""

from cnnfind.detection.finder import *  # noqa: F401, F403
