"""
Centre-heatmap targets from an external catalogue (AstrID-style): the
positions of a star catalogue (e.g. Gaia) projected through the image
WCS. Numpy/astropy only.
"""

import numpy as np
from astropy.coordinates import SkyCoord

from cnnfind.training.data import _draw_targets

__all__ = ['heatmap_from_catalog']


def heatmap_from_catalog(shape, positions, *, wcs=None, ignore=None):
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
    weight = np.where(ignored, 0.0, 1.0 + 20.0 * target).astype(np.float32)
    return target, weight
