"""
Warnings issued by cnnfind.
"""

from astropy.utils.exceptions import AstropyUserWarning

__all__ = ['CNNFindWarning']


class CNNFindWarning(AstropyUserWarning):
    """A cnnfind result may be less reliable than usual."""
