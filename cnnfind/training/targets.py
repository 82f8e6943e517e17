"""
Centre-heatmap targets from an external catalogue (AstrID-style): the
positions of a star catalogue (e.g. Gaia) projected through the image
WCS. Numpy/astropy only.
"""

import numpy as np
from astropy.coordinates import SkyCoord

from cnnfind.training.data import _draw_targets

__all__ = ['heatmap_from_catalog']


def heatmap_from_catalog(shape, positions, *, wcs=None, ignore=None,
                         sigma=None):
    """
    Training target and loss weight from catalogue positions.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    positions : `~astropy.coordinates.SkyCoord` or (N, 2) array
        Sky positions (needs ``wcs``) or 0-based pixel ``(x, y)``.
    wcs : `~astropy.wcs.WCS`, optional
        Celestial WCS of the image, for sky positions.
    ignore : `~astropy.coordinates.SkyCoord` or (M, 2) array, optional
        Sources to exclude from the loss (e.g. galaxies or objects too
        faint to count either way).
    sigma : float or array of float, optional
        Gaussian width (pixels) of each star's spot, one value for all
        or one per position (e.g. growing with brightness, see
        `cnnfind.training.survey.spot_sigma`). The spot reaches out to
        ``max(2, ceil(3 * sigma))`` pixels. `None` (default) draws the
        star-finder training spots (sigma 0.8 within 2 pixels).

    Returns
    -------
    target : 2D float32 array
        1 at each star's pixel, a Gaussian falloff around it.
    weight : 2D float32 array
        Loss weight: 0 around ``ignore`` positions, else as in training.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.training.targets import heatmap_from_catalog
    >>> t, w = heatmap_from_catalog((32, 32), np.array([[10.2, 20.7]]))
    >>> int(t.argmax() % 32), int(t.argmax() // 32)
    (10, 21)
    """
    def to_pixels(pos):
        if isinstance(pos, SkyCoord):
            if wcs is None:
                msg = 'sky positions need the image WCS'
                raise ValueError(msg)
            x, y = wcs.world_to_pixel(pos)
            return np.atleast_1d(x), np.atleast_1d(y)
        pos = np.atleast_2d(np.asarray(pos, dtype=float))
        if pos.size == 0:
            return np.zeros(0), np.zeros(0)
        if pos.shape[1] != 2:
            msg = 'pixel positions must be an (N, 2) array of (x, y)'
            raise ValueError(msg)
        return pos[:, 0], pos[:, 1]

    x, y = to_pixels(positions)
    inside = (x > -0.5) & (x < shape[1] - 0.5) & (y > -0.5) & (
        y < shape[0] - 0.5)
    ign = [] if ignore is None else list(zip(*to_pixels(ignore),
                                             strict=True))
    target, ignored = _draw_targets(shape, x, y, inside, ign)
    if sigma is not None:
        sig = np.broadcast_to(np.asarray(sigma, dtype=float), x.shape)
        target = _draw_sized(shape, x[inside], y[inside], sig[inside])
    weight = np.where(ignored, 0.0, 1.0 + 20.0 * target).astype(np.float32)
    return target, weight


def _clipped_box(ix, iy, r, shape):
    """``(y0, y1, x0, x1)`` of the box of half-width ``r`` around pixel
    ``(ix, iy)`` clipped to ``shape``, or `None` if nothing is left."""
    y0, y1 = max(iy - r, 0), min(iy + r + 1, shape[0])
    x0, x1 = max(ix - r, 0), min(ix + r + 1, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    return y0, y1, x0, x1


def _draw_sized(shape, x, y, sigma):
    """
    Centre heatmap with one Gaussian width per star: 1 at the star's
    pixel, ``exp(-d**2 / (2 sigma**2))`` around it out to
    ``max(2, ceil(3 sigma))`` pixels, the maximum where spots overlap.
    """
    target = np.zeros(shape, np.float32)
    for xi, yi, si in zip(x, y, sigma, strict=True):
        si = max(float(si), 1e-3)
        r = max(2, int(np.ceil(3.0 * si)))
        ix, iy = int(np.round(xi)), int(np.round(yi))
        box = _clipped_box(ix, iy, r, shape)
        if box is None:
            continue
        y0, y1, x0, x1 = box
        yy, xx = np.mgrid[y0:y1, x0:x1]
        v = np.exp(-0.5 * ((xx - xi)**2 + (yy - yi)**2) / si**2)
        v[(yy == iy) & (xx == ix)] = 1.0
        sub = target[y0:y1, x0:x1]
        np.maximum(sub, v.astype(np.float32), out=sub)
    return target
