"""
The input contract of the Noise2Void network, shared by inference and
training (numpy only): the variance-compressing transform, the
blind-spot grid and its median fill, and saturated plateaus.
"""

import numpy as np
from scipy import ndimage

__all__ = []

#: Softening scale of the asinh transform, in units of the sky noise.
ASINH_SCALE = 10.0

#: Blind-spot grid step: one pixel in ``GRID**2`` is hidden per pass.
GRID = 4

#: Footprint of the median that fills a hidden pixel (5x5, centre out).
_RING = np.ones((5, 5), bool)
_RING[2, 2] = False


def to_net_space(x, scale=ASINH_SCALE):
    r"""
    :math:`z = a\,\mathrm{asinh}(x / a)` of the noise-normalised image
    :math:`x`: the identity within a few noise levels of the sky (where
    the noise is Gaussian with unit variance) and logarithmic for bright
    sources, so that the network sees a bounded range.
    """
    return (scale * np.arcsinh(np.asarray(x, np.float32) / scale)).astype(
        np.float32)


def from_net_space(z, scale=ASINH_SCALE):
    """Exact inverse of `to_net_space`."""
    return (scale * np.sinh(np.asarray(z, np.float32) / scale)).astype(
        np.float32)


def noise_var_net_space(z, scale=ASINH_SCALE, s0=1.0, alpha=0.0):
    r"""
    Noise variance carried into the net space at level ``z`` (delta
    method, :math:`(dz/dx)^2 = 1 / (1 + (x/a)^2)`), for a variance
    :math:`s_0 (1 + \alpha \max(x, 0))` in the noise-normalised space
    (see `noise_model`).
    """
    u = np.sinh(np.asarray(z, np.float32) / scale)
    var_x = s0 * (1.0 + alpha * np.maximum(scale * u, 0.0))
    return (var_x / (1.0 + u * u)).astype(np.float32)


def median_fill(z):
    """Median of each pixel's 5x5 neighbourhood without the pixel itself."""
    return ndimage.median_filter(np.asarray(z, np.float32), footprint=_RING,
                                 mode='mirror')


def grid_mask(shape, oy, ox, step=GRID):
    """`True` on the blind-spot grid with offset ``(oy, ox)``."""
    m = np.zeros(shape, bool)
    m[oy % step::step, ox % step::step] = True
    return m


def saturated_mask(data, valid, sky, noise, level=None, *, min_pixels=4,
                   min_sigma=20.0):
    """
    Saturated pixels: at or above ``level`` if it is given; otherwise the
    connected plateaus (at least ``min_pixels``) of valid pixels within
    half the noise (or 2 % of the peak) of the image maximum, when that
    maximum is at least ``min_sigma`` noise above the sky.
    """
    data = np.asarray(data)
    if level is not None:
        with np.errstate(invalid='ignore'):
            return valid & (data >= level)
    out = np.zeros(data.shape, bool)
    top = float(np.max(data, where=valid, initial=-np.inf))
    if not np.isfinite(top) or top - sky < min_sigma * noise:
        return out
    with np.errstate(invalid='ignore'):
        plateau = valid & (data >= top - max(0.5 * noise,
                                             0.02 * (top - sky)))
    if plateau.sum() < min_pixels:
        return out
    labels, n = ndimage.label(plateau, structure=np.ones((3, 3)))
    sizes = ndimage.sum(plateau, labels, np.arange(1, n + 1))
    keep = np.flatnonzero(sizes >= min_pixels) + 1
    return np.isin(labels, keep)



def noise_model(x, valid, *, min_level=2.0, n_bins=8, min_count=200,
                max_curvature=0.1):
    r"""
    Per-pixel noise variance of a noise-normalised image ``x`` as a
    function of the signal: :math:`s_0\,(1 + \alpha\,\max(x, 0))`.

    Both terms come from the robust spread of the second difference
    along rows, which cancels smooth structure, at smooth places only
    (low curvature of the smoothed image, so that stars and galaxy
    cores do not pass for noise): :math:`s_0` in the sky (``|x| <
    0.5``; at most 1, the lag-3 estimate used for the normalisation,
    which nebulosity can inflate), :math:`\alpha` from a fit through
    the origin of the excess variance binned by the local mean level
    above ``min_level`` (``alpha = 1 / (gain * noise)`` for a Poisson
    detector with ``gain`` electrons per data unit).

    Returns
    -------
    s0, alpha : float
        ``(1, 0)`` when the image has too few smooth pixels to tell.
    """
    x = np.where(valid, x, 0.0).astype(np.float32)
    ok = valid[:, 1:-1] & valid[:, :-2] & valid[:, 2:]
    sm = ndimage.gaussian_filter(x, 2.0)
    k = np.array([-1.0, 2.0, -1.0], np.float32)
    curv = (np.abs(ndimage.convolve1d(sm, k, axis=0))
            + np.abs(ndimage.convolve1d(sm, k, axis=1)))
    ok &= curv[:, 1:-1] < max_curvature
    d2 = (2 * x[:, 1:-1] - x[:, :-2] - x[:, 2:])[ok]
    level = ndimage.uniform_filter(x, 5)[:, 1:-1][ok]

    def spread(a):
        return 1.4826 * np.median(np.abs(a - np.median(a)))

    sky = np.abs(level) < 0.5
    if sky.sum() < min_count:
        return 1.0, 0.0
    var0 = spread(d2[sky]) ** 2
    if not var0 > 0:
        return 1.0, 0.0
    s0 = float(min(var0 / 6.0, 1.0))
    bright = level > min_level
    if bright.sum() < min_count:
        return s0, 0.0
    edges = np.unique(np.quantile(level[bright],
                                  np.linspace(0, 1, n_bins + 1)))
    num = den = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = bright & (level >= lo) & (level < hi)
        if sel.sum() < min_count:
            continue
        m = float(np.median(level[sel]))
        num += m * (spread(d2[sel]) ** 2 / var0 - 1.0)
        den += m * m
    return s0, (float(max(num / den, 0.0)) if den > 0 else 0.0)
