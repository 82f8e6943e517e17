"""
Saturated stars: the plateaus of clipped pixels that a network trained
on one PSF scale can mistake for extended sources.
"""

import numpy as np
from scipy import ndimage

__all__ = []


def _components(px, py):
    """
    8-connected groups of the pixels ``(px, py)``: a label per pixel,
    numbered in the order of each group's first pixel, and the number of
    groups.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree
    n = len(px)
    pairs = cKDTree(np.column_stack([px, py])).query_pairs(
        1.0, p=np.inf, output_type='ndarray')
    graph = coo_matrix((np.ones(len(pairs), bool), (pairs[:, 0],
                                                    pairs[:, 1])),
                       shape=(n, n))
    n_groups, labels = connected_components(graph, directed=False)
    return labels, n_groups


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
    level = top - max(0.5 * noise, 0.1 * (top - sky))
    # The plateau pixels, found in one pass; everything after works on
    # them alone (few), never on the whole image again.
    idx = np.flatnonzero(data.ravel() >= level)
    idx = idx[valid.ravel()[idx]]
    min_size = max(min_pixels, 0.8 * fwhm**2)
    if idx.size < min_size:  # the usual case: nothing saturated
        return empty
    py, px = np.divmod(idx, data.shape[1])
    lab, n = _components(px, py)
    sizes = np.bincount(lab, minlength=n)
    ids = np.nonzero(sizes >= min_size)[0]
    if len(ids) == 0:
        return empty
    x = np.bincount(lab, weights=px, minlength=n)[ids] / sizes[ids]
    y = np.bincount(lab, weights=py, minlength=n)[ids] / sizes[ids]
    grow = max(2, int(np.ceil(1.5 * fwhm)))
    region = np.zeros(data.shape, bool)
    for i in ids:
        # Grow each plateau inside its box widened by ``grow``: the same
        # as dilating it on the whole image, at the cost of the box.
        cx, cy = px[lab == i], py[lab == i]
        x0, y0 = max(cx.min() - grow, 0), max(cy.min() - grow, 0)
        x1, y1 = cx.max() + grow + 1, cy.max() + grow + 1
        own = np.zeros((min(y1, data.shape[0]) - y0,
                        min(x1, data.shape[1]) - x0), bool)
        own[cy - y0, cx - x0] = True
        region[y0:y0 + own.shape[0], x0:x0 + own.shape[1]] |= (
            ndimage.binary_dilation(own, np.ones((3, 3)), iterations=grow))
    return x, y, region
