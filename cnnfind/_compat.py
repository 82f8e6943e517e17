# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Differences between the supported photutils versions (3.0 and 3.1+), in
one place.
"""

from astropy.utils import minversion

__all__ = []

#: photutils >= 3.1: DAOStarFinder's ``flux`` is the sum over the kernel's
#: footprint (its circular mask), not over the whole kernel box.
PHOTUTILS_GE_31 = minversion('photutils', '3.1')

#: Keyword arguments that keep ``SourceFinder`` quiet: 3.0 shows a
#: deblending progress bar unless told not to; 3.1 shows none and
#: deprecates the keyword.
SOURCEFINDER_QUIET = {} if PHOTUTILS_GE_31 else {'progress_bar': False}
