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


#: Most saturation levels searched (from the brightest pixel down).
_MAX_LEVELS = 12


def _plateaus(data, valid, sky, noise, min_size, min_level):
    """
    Pixels ``px, py`` of the saturated plateaus and a plateau label per
    pixel (`_saturated_stars`), or `None`.

    The brightest remaining pixel sets a level (within 10 %, and at least
    half the noise, of it); connected groups of pixels at that level
    with at least ``min_size`` pixels are plateaus. Smaller groups (hot
    pixels, cosmic rays, the peaks of unsaturated stars) and the
    plateaus found are set aside and the search goes on below them, so
    an outlier brighter than the saturation level does not hide it, and
    amplifiers or exposures with different saturation levels are all
    found. It stops at the first level less than half as far above the
    sky as the first saturation level found, after `_MAX_LEVELS`, or
    below ``min_level`` noise above the sky.
    """
    floor = sky + min_level * noise
    # Every pixel that can be part of a plateau, found in one pass;
    # everything after works on them alone, never on the whole image.
    idx = np.flatnonzero(data.ravel() >= floor)
    idx = idx[valid.ravel()[idx]]
    if idx.size < min_size:  # the usual case: nothing saturated
        return None
    values = data.ravel()[idx]
    left = np.ones(idx.size, bool)
    chosen, labels, n_plateaus, first = [], [], 0, None
    for _ in range(_MAX_LEVELS):
        if not left.any():
            break
        top = float(values[left].max())
        if first is not None and top - sky < 0.5 * (first - sky):
            break
        level = top - max(0.5 * noise, 0.1 * (top - sky))
        band = np.flatnonzero(left & (values >= level))
        left[band] = False
        if band.size < min_size:
            continue
        py, px = np.divmod(idx[band], data.shape[1])
        lab, n = _components(px, py)
        sizes = np.bincount(lab, minlength=n)
        big = sizes[lab] >= min_size
        if not big.any():
            continue
        if first is None:
            first = top
        # The plateaus' surroundings are left out of the lower levels,
        # where they would form rings around them.
        keep = band[big]
        chosen.append(keep)
        _, lab = np.unique(lab[big], return_inverse=True)
        labels.append(lab + n_plateaus)
        n_plateaus += lab.max() + 1
        # Only pixels that a lower level can still reach are looked at.
        cand = np.flatnonzero(left & (values >= sky + 0.5 * (first - sky)))
        if cand.size:
            left[cand[_near(idx[cand], idx[keep], data.shape)]] = False
    if not chosen:
        return None
    keep = np.concatenate(chosen)
    py, px = np.divmod(idx[keep], data.shape[1])
    return px, py, np.concatenate(labels), n_plateaus


def _near(idx, ref, shape, grow=2):
    """Which of the flat pixel indices ``idx`` lie within ``grow``
    pixels (chessboard distance) of the flat pixel indices ``ref``."""
    from scipy.spatial import cKDTree
    ry, rx = np.divmod(ref, shape[1])
    py, px = np.divmod(idx, shape[1])
    dist, _ = cKDTree(np.column_stack([rx, ry])).query(
        np.column_stack([px, py]), p=np.inf, distance_upper_bound=grow + 0.5)
    return np.isfinite(dist)


def _saturated_stars(data, valid, sky, noise, fwhm, *, min_pixels=4,
                     min_level=20.0):
    """
    Centroids of saturated plateaus and the region each one covers.

    A plateau is a connected group of valid pixels within 10 % (and at
    least half the noise) of a saturation level at least ``min_level``
    noise above the sky: the signature of a CCD full well, an ADC limit
    or the soft limit of a photographic plate. The levels are searched
    from the brightest pixel down (see `_plateaus`), so hot pixels and
    cosmic rays above the saturation level do not hide it, and several
    levels (amplifiers, co-added exposures) are found. A plateau must
    hold at least ``min_pixels`` and four times the pixels an
    unsaturated Gaussian core has that close to its peak
    (``0.8 * fwhm**2``).
    Bleed trails join their star's plateau, so each star gives one
    detection, centred by `_star_centre` (on the star, not on the middle
    of its trail).

    Returns
    -------
    x, y : 1D arrays
        Pixel positions of the saturated stars.
    region : 2D bool array or `None`
        The plateaus grown by ``max(2, 1.5 * fwhm)`` pixels; `None` when
        nothing is saturated.
    """
    empty = (np.zeros(0), np.zeros(0), None)
    min_size = max(min_pixels, 0.8 * fwhm**2)
    found = _plateaus(data, valid, sky, noise, min_size, min_level)
    if found is None:
        return empty
    px, py, lab, n = found
    ids = np.arange(n)
    grow = max(2, int(np.ceil(1.5 * fwhm)))
    region = np.zeros(data.shape, bool)
    x, y = np.zeros(len(ids)), np.zeros(len(ids))
    for k, i in enumerate(ids):
        own = lab == i
        x[k], y[k] = _star_centre(data, valid, sky, px, py, own, fwhm)
        # Grow each plateau inside its box widened by ``grow``: the same
        # as dilating it on the whole image, at the cost of the box.
        cx, cy = px[own], py[own]
        x0, y0 = max(cx.min() - grow, 0), max(cy.min() - grow, 0)
        x1, y1 = cx.max() + grow + 1, cy.max() + grow + 1
        own = np.zeros((min(y1, data.shape[0]) - y0,
                        min(x1, data.shape[1]) - x0), bool)
        own[cy - y0, cx - x0] = True
        region[y0:y0 + own.shape[0], x0:x0 + own.shape[1]] |= (
            ndimage.binary_dilation(own, np.ones((3, 3)), iterations=grow))
    return x, y, region


def _core_centre(cx, cy):
    """
    Centre of a saturated star from its plateau pixels ``(cx, cy)``.

    A bleed trail makes the plateau long along the columns (or rows): the
    star sits where the plateau is wider than its trail. Along that axis
    the centre is the centroid of each line's excess width over the
    trail's (the lower quartile of the line widths); across it, the mean
    of the pixels of those lines. Returns ``(x, y, along_columns)``.
    """
    along_columns = np.ptp(cy) >= np.ptp(cx)
    along, across = (cy, cx) if along_columns else (cx, cy)
    first = along.min()
    width = np.bincount(along - first).astype(float)
    excess = np.clip(width - np.percentile(width[width > 0], 25), 0, None)
    if excess.sum() == 0:  # as wide as its trail everywhere
        excess = width
    c_along = (np.arange(len(width)) * excess).sum() / excess.sum() + first
    c_across = across[excess[along - first] > 0].mean()
    if along_columns:
        return c_across, c_along, True
    return c_along, c_across, False


def _star_centre(data, valid, sky, px, py, own, fwhm, *, n_iter=20):
    """
    Position of the saturated star whose plateau pixels are
    ``(px[own], py[own])``.

    A plateau without a trail (no longer than twice its width plus 3
    pixels) is centred on its centroid. With one, the start is
    `_core_centre`; along the trail the position is then
    refined from the unsaturated wings: the windowed centroid, along the
    trail, of the sky-subtracted light in the ``2 * fwhm`` columns on
    each side of the columns the plateaus occupy. Those columns hold no
    trail, and the window is symmetric about the current position (rows
    whose mirror image is off the image are left out), so the halo
    around the star pulls the estimate onto its centre, where the
    centroid of the whole plateau sits on the middle of the trail.
    """
    cx, cy = px[own], py[own]
    long_side, short_side = sorted([np.ptp(cx), np.ptp(cy)], reverse=True)
    if long_side <= 2 * short_side + 3:
        # No trail: a round flat top (or two blended ones), centred on
        # its centroid.
        return cx.mean(), cy.mean()
    x0, y0, along_columns = _core_centre(cx, cy)
    if along_columns:
        img, ok, c_along, c_across = data, valid, y0, x0
        sat_along, sat_across = py, px
    else:
        img, ok, c_along, c_across = data.T, valid.T, x0, y0
        sat_along, sat_across = px, py
    n_along, n_across = img.shape
    own_across = cx if along_columns else cy
    half = int(np.ceil(3 * fwhm + 0.5 * np.sqrt(own.sum() / np.pi)))
    side = int(np.ceil(2 * fwhm))
    start = c_along
    for _ in range(n_iter):
        r0 = max(int(round(c_along)) - half, 0)
        r1 = min(int(round(c_along)) + half + 1, n_along)
        # The columns of this star's plateau within the window, and any
        # plateau pixels (its trail, another star's) next to them.
        in_rows = (sat_along >= r0) & (sat_along < r1)
        lo, hi = own_across.min(), own_across.max()
        near = sat_across[in_rows & (sat_across >= lo - side - 1)
                          & (sat_across <= hi + side + 1)]
        if len(near):
            lo, hi = min(lo, near.min()), max(hi, near.max())
        cols = np.r_[lo - 1 - side:lo - 1, hi + 2:hi + 2 + side]
        cols = cols[(cols >= 0) & (cols < n_across)]
        rows = np.arange(r0, r1)
        mirror = np.round(2 * c_along - rows)
        use = (np.abs(rows - c_along) <= half) & (mirror >= 0) & (
            mirror < n_along)
        if len(cols) == 0 or not use.any():
            return x0, y0
        block = img[np.ix_(rows[use], cols)] - sky
        weight = np.where(ok[np.ix_(rows[use], cols)],
                          np.clip(block, 0, None), 0.0).sum(axis=1)
        if weight.sum() <= 0:
            return x0, y0
        new = (weight * rows[use]).sum() / weight.sum()
        done = abs(new - c_along) < 0.01
        c_along = new
        if done:
            break
    if abs(c_along - start) > half:  # ran off: keep the plateau's estimate
        c_along = start
    if along_columns:
        return c_across, c_along
    return c_along, c_across
