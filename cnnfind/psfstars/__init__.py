# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
PSFStarSelector: pick the stars that make the best PSF model, ready for
`photutils.psf.EPSFBuilder`.
"""

from cnnfind.psfstars.selector import PSFStarSelector  # noqa: F401

__all__ = ['PSFStarSelector']
