"""
Stamps around sources of a field image, framed like Galaxy Zoo
cutouts.

Galaxy Zoo cutouts are scaled to each galaxy's Petrosian radius, so a
field stamp is framed the same way: its side is a fixed multiple of
the source's Petrosian 90 % radius, measured on the display-scaled
image (the same look the network was trained on).
"""

import numpy as np

__all__ = []

#: Petrosian ratio that defines the Petrosian radius (as in SDSS).
_ETA = 0.2
#: Smallest stamp side (pixels) of a field source.
MIN_SIDE = 16.0


def display_grey(display):
    """The sky-subtracted grey image of a display ``(H, W, C)`` image."""
    grey = display.mean(axis=-1)
    return grey - np.nanmedian(grey)


def framed_side(grey, x, y, scale, factor=1.0):
    """
    Stamp side that frames the source at ``(x, y)`` like a Galaxy Zoo
    cutout: ``scale`` (times ``factor``) Petrosian 90 % radii of
    ``grey`` (from `display_grey`), at least ``MIN_SIDE`` pixels.
    """
    return max(scale * petrosian_r90(grey, x, y) * factor, MIN_SIDE)


def _profile(grey, x, y, rmax):
    """Annulus sums and valid-pixel counts at integer radii."""
    ny, nx = grey.shape
    y0, y1 = max(int(y) - rmax, 0), min(int(y) + rmax + 2, ny)
    x0, x1 = max(int(x) - rmax, 0), min(int(x) + rmax + 2, nx)
    box = grey[y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    r = np.hypot(xx - x, yy - y)
    ok = np.isfinite(box) & (r < rmax)
    idx = r[ok].astype(int)
    sums = np.bincount(idx, weights=box[ok], minlength=rmax)
    counts = np.bincount(idx, minlength=rmax)
    return sums, counts


def petrosian_r90(grey, x, y, *, rmax_limit=256, default=2.0):
    """
    Petrosian 90 % radius of the source at ``(x, y)``.

    Parameters
    ----------
    grey : 2D `~numpy.ndarray`
        Sky-subtracted image (NaN where invalid).
    x, y : float
        Source position.
    rmax_limit : int
        Largest radius considered.
    default : float
        Radius returned when no source profile is found (empty sky).

    Returns
    -------
    r90 : float
    """
    rmax = 16
    while True:
        sums, counts = _profile(grey, x, y, rmax)
        area = np.maximum(counts, 1)
        mu = sums / area
        cum = np.cumsum(sums)
        cum_mean = cum / np.maximum(np.cumsum(counts), 1)
        with np.errstate(divide='ignore', invalid='ignore'):
            eta = np.where(cum_mean > 0, mu / cum_mean, 0.0)
        below = np.nonzero((eta < _ETA) & (np.arange(rmax) >= 1))[0]
        if below.size and 2 * below[0] + 2 < rmax:
            rp = below[0] + 0.5
            break
        if rmax >= rmax_limit:
            rp = (below[0] + 0.5) if below.size else rmax / 2.0
            break
        rmax = min(2 * rmax, rmax_limit)
    total_r = min(int(np.ceil(2 * rp)), rmax)
    flux = cum[:total_r]
    if flux.size == 0 or flux[-1] <= 0:
        return float(default)
    k = int(np.searchsorted(flux, 0.9 * flux[-1]))
    if k == 0:
        return 1.0
    # Interpolate between the outer edges of annuli k-1 and k.
    f0, f1 = flux[k - 1], flux[k]
    frac = (0.9 * flux[-1] - f0) / (f1 - f0) if f1 > f0 else 0.0
    return float(max(k + frac, 1.0))


def cut_stamp(image, x, y, side):
    """
    A ``side`` x ``side`` stamp of ``(H, W, C)`` centred on ``(x, y)``;
    pixels beyond the image edge are NaN.
    """
    side = max(int(round(side)), 8)
    ny, nx = image.shape[:2]
    x0 = int(np.floor(x + 0.5)) - side // 2
    y0 = int(np.floor(y + 0.5)) - side // 2
    out = np.full((side, side, image.shape[-1]), np.nan, np.float32)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + side, ny), min(x0 + side, nx)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out
