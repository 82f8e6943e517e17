"""
Galaxy morphology: elliptical / spiral / no-galaxy classification.
"""

from cnnfind.morphology.classifier import GalaxyMorphClassifier

__all__ = ['GalaxyMorphClassifier']
