"""
cnnfind: trained convolutional networks for everyday astronomical image
analysis, behind the interfaces astronomers already use.
"""

try:
    from importlib.metadata import PackageNotFoundError, version
    __version__ = version('cnnfind')
except PackageNotFoundError:  # running from a source tree
    __version__ = 'unknown'

from cnnfind.detection import CNNStarFinder  # noqa: E402
from cnnfind.exceptions import CNNFindWarning  # noqa: E402
from cnnfind.morphology import GalaxyMorphClassifier  # noqa: E402

__all__ = ['CNNStarFinder', 'CNNFindWarning', 'GalaxyMorphClassifier',
           '__version__']
