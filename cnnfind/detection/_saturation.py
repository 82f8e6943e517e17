"""
Saturated stars: the plateaus of clipped pixels that a network trained
on one PSF scale can mistake for extended sources.
"""

import numpy as np
from scipy import ndimage

__all__ = []


def _saturated_stars(data, valid, sky, noise, fwhm, *, min_pixels=4,
                     min_level=20.0):
    """
    Centroids of saturated plateaus and the region each one covers.

    A plateau is a connected group of valid pixels within 10 % (and at
    least half the noise) of the image maximum, when that maximum is at
    least ``min_level`` noise above the sky: the signature of a
    saturation level (CCD full well, ADC limit, or the soft limit of a
    photographic plate). It must hold at least ``min_pixels`` and four
    times the pixels an unsaturated Gaussian core has that close to its
    peak (``0.8 * fwhm**2``).
    Bleed trails join their star's plateau, so each star gives one
    detection.

    Returns
    -------
    x, y : 1D arrays
        Pixel centroids of the plateaus.
    region : 2D bool array or `None`
        The plateaus grown by ``max(2, 1.5 * fwhm)`` pixels; `None` when
        nothing is saturated.
    """
    empty = (np.zeros(0), np.zeros(0), None)
    top = float(np.max(data, where=valid, initial=-np.inf))
    if not np.isfinite(top) or top - sky < min_level * noise:
        return empty
    plateau = valid & (data >= top - max(0.5 * noise, 0.1 * (top - sky)))
    min_size = max(min_pixels, 0.8 * fwhm**2)
    if plateau.sum() < min_size:  # the usual case: nothing saturated
        return empty
    labels, n = ndimage.label(plateau, structure=np.ones((3, 3)))
    if n == 0:
        return empty
    ids = np.arange(1, n + 1)
    sizes = ndimage.sum(plateau, labels, ids)
    ids = ids[sizes >= min_size]
    if len(ids) == 0:
        return empty
    labels = np.where(np.isin(labels, ids), labels, 0)
    y, x = np.array(ndimage.center_of_mass(plateau, labels, ids)).T
    grow = max(2, int(np.ceil(1.5 * fwhm)))
    region = ndimage.binary_dilation(labels > 0, np.ones((3, 3)),
                                     iterations=grow)
    return x, y, region
