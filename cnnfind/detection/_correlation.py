"""
Pixel-to-pixel noise correlation and what it does to the threshold.

The star finder's threshold compares a PSF-weighted amplitude with its
standard error, ``noise / sqrt(sum(g**2))`` for white noise. Resampled,
co-added or drizzled images and scanned photographic plates have noise
that is correlated between neighbouring pixels: its power is moved from
high to low spatial frequencies, where the PSF filter collects it, so
the amplitude's true error is a factor ``F > 1`` larger (about 2 for a
half-pixel bilinear shift at FWHM 3 px) and ``threshold=5 * std`` would
keep noise blobs of 2.5 true sigma.

``F`` is measured from the data. The spread of second differences of
adjacent pixels, which noise correlation lowers but which sources of a
well-sampled PSF, gradients and nebulosity hardly change, is compared
with the pixel noise (differences three pixels apart, as
`~cnnfind.runtime.robust_sky_noise`), in boxes, and the median ratio
``q`` (1 for white noise) is matched to noise correlated by a Gaussian
kernel, for which ``F`` follows exactly from the PSF kernel. ``q`` from
white-noise images with many sources or fine nebulosity scatters a
little below 1 (down to about 0.9 on our fields), so ``F`` is applied in
full only below ``q = 0.75`` and faded in from ``q = 0.9``.
"""

import functools

import numpy as np
from scipy import signal

__all__ = []

#: ``q`` at and above which the noise is taken as white, and below which
#: the Gaussian model's factor is applied in full.
Q_WHITE, Q_FULL = 0.9, 0.75

#: Box side for the measurement, and the most boxes used.
_BOX, _MAX_BOXES = 64, 64

#: Fewest differences per box for it to count.
_MIN_PAIRS = 200

#: Grid of correlation-kernel widths (Gaussian sigma, pixels).
_WIDTHS = np.linspace(0.25, 3.0, 56)


def _mad_std(values):
    med = np.median(values)
    return 1.4826 * np.median(np.abs(values - med))


def _box_ratio(b, v):
    """``q`` of one box: second-difference over pixel noise."""
    d2 = np.concatenate([
        (b[:, 2:] - 2 * b[:, 1:-1] + b[:, :-2])[v[:, 2:] & v[:, 1:-1]
                                                 & v[:, :-2]],
        (b[2:] - 2 * b[1:-1] + b[:-2])[v[2:] & v[1:-1] & v[:-2]]])
    d3 = np.concatenate([(b[:, 3:] - b[:, :-3])[v[:, 3:] & v[:, :-3]],
                         (b[3:] - b[:-3])[v[3:] & v[:-3]]])
    if d2.size < _MIN_PAIRS or d3.size < _MIN_PAIRS:
        return np.nan
    pixel = _mad_std(d3) / np.sqrt(2.0)
    if not pixel > 0:
        return np.nan
    return _mad_std(d2) / np.sqrt(6.0) / pixel


def roughness(data, valid):
    """
    The median over boxes of the spread of second differences of
    adjacent pixels over ``sqrt(6)`` times the pixel noise: 1 for white
    noise, lower for noise correlated between pixels; 1 where the image
    is too small or too masked to tell.
    """
    ny, nx = data.shape
    by, bx = min(_BOX, ny), min(_BOX, nx)
    ys = np.unique(np.linspace(0, ny - by, max(1, ny // by)).astype(int))
    xs = np.unique(np.linspace(0, nx - bx, max(1, nx // bx)).astype(int))
    corners = [(y, x) for y in ys for x in xs]
    if len(corners) > _MAX_BOXES:
        pick = np.linspace(0, len(corners) - 1, _MAX_BOXES).astype(int)
        corners = [corners[i] for i in pick]
    ratios = [_box_ratio(np.asarray(data[y:y + by, x:x + bx], np.float64),
                         valid[y:y + by, x:x + bx]) for y, x in corners]
    ratios = np.asarray(ratios)
    ratios = ratios[np.isfinite(ratios)]
    return float(np.median(ratios)) if ratios.size else 1.0


def _acf_1d(s, half):
    """Autocorrelation at lags ``0..half`` of white noise smoothed by a
    sampled Gaussian of sigma ``s``, normalised to 1 at lag 0."""
    r = int(np.ceil(4 * s))
    h = np.exp(-0.5 * (np.arange(-r, r + 1) / s)**2)
    a = np.correlate(h, h, mode='full')[2 * r:]
    a = a / a[0]
    out = np.zeros(half + 1)
    out[:min(half + 1, a.size)] = a[:half + 1]
    return out


@functools.lru_cache(maxsize=16)
def _model(abc, radius):
    """``(q, F)`` over `_WIDTHS` for the PSF kernel ``abc`` on a stamp of
    half-size ``radius``. The Gaussian correlation kernel is separable,
    so its 2D autocorrelation is the product of two 1D ones."""
    a, b, c = abc
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(a * x**2 + 2 * b * x * y + c * y**2))
    gg = signal.correlate(g, g, mode='full')
    half = 2 * radius
    qs, fs = [], []
    for s in _WIDTHS:
        rho = _acf_1d(s, max(half, 3))
        q = (np.sqrt(max(6 - 8 * rho[1] + 2 * rho[2], 1e-12) / 6)
             / np.sqrt(max(1 - rho[3], 1e-12)))
        r2 = np.outer(rho[half:0:-1].tolist() + rho[:half + 1].tolist(),
                      rho[half:0:-1].tolist() + rho[:half + 1].tolist())
        fs.append(np.sqrt(max((gg * r2).sum() / gg[half, half], 1.0)))
        qs.append(q)
    # q falls as the correlation widens; np.interp wants it increasing.
    return np.asarray(qs[::-1]), np.asarray(fs[::-1])


def correlation_factor(q, abc, radius):
    """
    How much noise correlation of roughness ``q`` (see `roughness`)
    raises the error of a PSF amplitude fitted with the Gaussian
    ``abc`` on a stamp of half-size ``radius``, over the white-noise
    error: 1 for ``q >= Q_WHITE``.
    """
    if not q < Q_WHITE:
        return 1.0
    qs, fs = _model(tuple(float(v) for v in abc), int(radius))
    full = float(np.interp(q, qs, fs))
    weight = min((Q_WHITE - q) / (Q_WHITE - Q_FULL), 1.0)
    return 1.0 + weight * (full - 1.0)
