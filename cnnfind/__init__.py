"""
cnnfind: trained convolutional networks for everyday astronomical image
analysis, behind the interfaces astronomers already use.
"""

try:
    from importlib.metadata import PackageNotFoundError, version
    __version__ = version('cnnfind')
except PackageNotFoundError:  # running from a source tree
    __version__ = 'unknown'

from cnnfind.denoise import N2VDenoiser  # noqa: E402
from cnnfind.detection import CNNStarFinder  # noqa: E402
from cnnfind.exceptions import CNNFindWarning  # noqa: E402
from cnnfind.morphology import GalaxyMorphClassifier  # noqa: E402
from cnnfind.psfstars import PSFStarSelector  # noqa: E402

__all__ = ['CNNStarFinder', 'CNNFindWarning', 'GalaxyMorphClassifier',
           'N2VDenoiser', 'PSFStarSelector', '__version__']
