"""
Seeded simulated star fields with truth, including the artefacts that
defeat classical detectors (cosmic rays, hot pixels, galaxies,
saturation with bleed trails, gradients, nebulosity, bad columns).

Everything here is plain numpy: it is used both to train the networks
(`cnnfind.training`) and to evaluate them (`cnnfind.evaluation`).
"""

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from cnnfind.simulation.psf import psf_sum_squares, render_profiles

__all__ = ['FieldConfig', 'simulate_field']


@dataclass
class FieldConfig:
    """
    Recipe for one simulated field.

    Attributes
    ----------
    density : float
        Stars per million pixels (above ``snr_min``).
    fwhm : float
        PSF major-axis FWHM in pixels.
    psf_kind : {'moffat', 'gaussian'}
        PSF profile.
    beta : float
        Moffat index.
    ratio, theta : float
        PSF axis ratio and position angle (radians).
    snr_min, snr_max : float
        Range of matched-filter signal-to-noise ratios of the stars.
    snr_slope : float
        Power-law index of the SNR distribution, ``dN/dSNR ~ SNR**-slope``.
    sky : float
        Sky level in electrons.
    read_noise : float
        Read noise in electrons.
    gain : float
        Electrons per ADU.
    bias : float
        Constant offset in ADU.
    saturation : float or None
        Saturation level in ADU (after bias); ``None`` for no
        saturation.
    n_cosmic, n_hot, n_galaxies : int
        Numbers of cosmic-ray hits, hot pixels and galaxies.
    gradient : float
        Amplitude of a linear+quadratic sky gradient, in units of the
        sky noise, across the field.
    nebula : float
        Amplitude of smooth large-scale nebulosity in units of the sky
        noise.
    n_bad_columns : int
        Number of bad columns (flagged in the mask).
    """

    density: float = 300.0
    fwhm: float = 3.0
    psf_kind: str = 'moffat'
    beta: float = 3.0
    ratio: float = 1.0
    theta: float = 0.0
    snr_min: float = 3.0
    snr_max: float = 1000.0
    snr_slope: float = 1.6
    sky: float = 400.0
    read_noise: float = 5.0
    gain: float = 1.5
    bias: float = 1000.0
    saturation: float | None = None
    n_cosmic: int = 0
    n_hot: int = 0
    n_galaxies: int = 0
    gradient: float = 0.0
    nebula: float = 0.0
    n_bad_columns: int = 0
    extra: dict = field(default_factory=dict)


def _powerlaw(rng, lo, hi, slope, n):
    """Draw ``n`` values with ``dN/dx ~ x**-slope`` between lo and hi."""
    u = rng.random(n)
    if abs(slope - 1.0) < 1e-9:
        return lo * (hi / lo) ** u
    a = 1.0 - slope
    return (lo**a + u * (hi**a - lo**a)) ** (1.0 / a)


def _sersic(shape, x, y, flux, re, n, q, theta, fwhm):
    """A PSF-convolved Sersic galaxy rendered on a stamp."""
    img = np.zeros(shape)
    rad = int(min(max(6 * re, 4 * fwhm) + 3, max(shape)))
    ix, iy = int(round(x)), int(round(y))
    x0, x1 = max(ix - rad, 0), min(ix + rad + 1, shape[1])
    y0, y1 = max(iy - rad, 0), min(iy + rad + 1, shape[0])
    if x0 >= x1 or y0 >= y1:
        return img
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
    dx, dy = xx - x, yy - y
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    r = np.sqrt(u**2 + (v / q)**2)
    bn = 2.0 * n - 1.0 / 3.0
    prof = np.exp(-bn * ((r / re) ** (1.0 / n) - 1.0))
    prof = ndimage.gaussian_filter(prof, fwhm / 2.3548, mode='constant')
    total = prof.sum()
    if total > 0:
        img[y0:y1, x0:x1] = flux * prof / total
    return img


def _cosmic_rays(rng, shape, n, noise):
    """Sharp tracks and spots, not convolved with the PSF."""
    img = np.zeros(shape)
    for _ in range(n):
        length = rng.choice([1, 1, 2, 3, 5, 8, 12, 20])
        amp = noise * 10 ** rng.uniform(0.8, 2.7)
        x0, y0 = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        ang = rng.uniform(0, np.pi)
        t = np.linspace(0, length, 3 * length + 1)
        xs = np.round(x0 + t * np.cos(ang)).astype(int)
        ys = np.round(y0 + t * np.sin(ang)).astype(int)
        ok = (xs >= 0) & (xs < shape[1]) & (ys >= 0) & (ys < shape[0])
        pts = set(zip(ys[ok], xs[ok], strict=True))
        width = rng.random() < 0.3
        for yy, xx in pts:
            a = amp * rng.uniform(0.5, 1.0)
            img[yy, xx] += a
            if width and xx + 1 < shape[1]:
                img[yy, xx + 1] += 0.4 * a
    return img


def _bleed(img, level):
    """
    Saturate ``img`` at ``level``: the excess charge of each saturated
    region runs along its columns (bleed trails), then the image is
    clipped. ``img`` is modified in place where trails are drawn.
    """
    over = img >= level
    if not over.any():
        return img
    ny = img.shape[0]
    lab, nlab = ndimage.label(over)
    for sl, k in zip(ndimage.find_objects(lab), range(1, nlab + 1),
                     strict=True):
        region = lab[sl] == k
        excess = (img[sl][region] - level).sum()
        cols = np.flatnonzero(region.any(axis=0)) + sl[1].start
        extra_len = int(min(excess / (level * max(len(cols), 1)), ny / 4))
        for col in cols:
            rows = np.flatnonzero(over[:, col])
            lo = max(rows.min() - extra_len // 2, 0)
            hi = min(rows.max() + extra_len // 2 + 1, ny)
            img[lo:hi, col] = np.maximum(img[lo:hi, col], level)
    return np.minimum(img, level)


def _smooth_field(rng, shape, scale):
    """Zero-mean, unit-max smooth random field with a given scale."""
    small = (max(2, int(shape[0] / scale) + 2), max(2, int(shape[1] / scale) + 2))
    coarse = rng.normal(size=small)
    zoom = (shape[0] / (small[0] - 1), shape[1] / (small[1] - 1))
    field_ = ndimage.zoom(coarse, zoom, order=3)[:shape[0], :shape[1]]
    field_ = np.clip(field_, 0, None) ** 1.5
    mx = field_.max()
    return field_ / mx if mx > 0 else field_


def simulate_field(shape, config, seed=None, *, background=None):
    """
    Simulate an image of stars (and artefacts) with its truth.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    config : `FieldConfig`
        The recipe.
    seed : int, `~numpy.random.Generator` or `None`
        Random seed.
    background : 2D `~numpy.ndarray`, optional
        A real background (already in ADU, sky-subtracted or not) to add
        to instead of a flat simulated sky; its noise is then taken as
        the noise of the field and only the sources' Poisson noise is
        added.

    Returns
    -------
    result : dict
        ``image`` (float32, ADU), ``mask`` (bool, bad columns),
        ``noise`` (sky noise in ADU), ``stars`` (dict of arrays ``x, y,
        flux, snr, snr_sky, saturated``: ``snr`` is the matched-filter
        SNR against the local noise, ``snr_sky`` against the flat sky
        alone) and ``artefacts`` (dict with
        ``cosmic`` (image of cosmic rays and hot pixels, ADU),
        ``galaxies`` (arrays ``x, y``, and ``re``, ``n``, ``q``,
        ``snr``: half-light radius in pixels, Sersic index, axis ratio and
        nominal SNR)).

    Examples
    --------
    >>> from cnnfind.simulation import FieldConfig, simulate_field
    >>> sim = simulate_field((64, 64), FieldConfig(density=2000), seed=1)
    >>> sim['image'].shape, len(sim['stars']['x']) > 0
    ((64, 64), True)
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    c = config
    if background is None:
        noise_e = np.sqrt(c.sky + c.read_noise**2)
    else:
        from cnnfind.runtime.normalize import robust_sky_noise
        _, noise_adu = robust_sky_noise(background)
        noise_e = noise_adu * c.gain
    noise_adu = noise_e / c.gain

    n_stars = rng.poisson(c.density * ny * nx / 1e6)
    # Stars may sit slightly outside the frame so edges look natural.
    x = rng.uniform(-3, nx + 2, n_stars)
    y = rng.uniform(-3, ny + 2, n_stars)
    snr = _powerlaw(rng, c.snr_min, c.snr_max, c.snr_slope, n_stars)
    ss = psf_sum_squares(c.fwhm, kind=c.psf_kind, beta=c.beta, ratio=c.ratio,
                         theta=c.theta)
    flux_e = snr * noise_e / np.sqrt(ss)

    src = np.zeros(shape)
    render_profiles(src, x, y, flux_e, c.fwhm, kind=c.psf_kind, beta=c.beta,
                    ratio=c.ratio, theta=c.theta)
    gal_x = rng.uniform(0, nx, c.n_galaxies)
    gal_y = rng.uniform(0, ny, c.n_galaxies)
    gal = {'re': [], 'n': [], 'q': [], 'snr': []}
    for gx, gy in zip(gal_x, gal_y, strict=True):
        re = c.fwhm * rng.uniform(1.0, 4.0) + 1.0
        gsnr = 10 ** rng.uniform(1.0, 2.7)
        gflux = gsnr * noise_e * np.sqrt(4 * np.pi * (re**2 + (c.fwhm / 2.35)**2))
        n_sersic, q = rng.uniform(0.5, 4.0), rng.uniform(0.3, 1.0)
        src += _sersic(shape, gx, gy, gflux, re, n_sersic, q,
                       rng.uniform(0, np.pi), c.fwhm)
        for key, value in zip(gal, (re, n_sersic, q, gsnr), strict=True):
            gal[key].append(value)

    sky_model = np.zeros(shape)
    if c.gradient:
        yy, xx = np.mgrid[0:ny, 0:nx] / max(nx, ny)
        a, b, q = rng.normal(size=3)
        g = a * xx + b * yy + q * (xx - 0.5) * (yy - 0.5)
        g -= g.min()
        if g.max() > 0:
            sky_model += c.gradient * noise_e * g / g.max()
    if c.nebula:
        scale = rng.uniform(0.1, 0.5) * max(nx, ny)
        sky_model += c.nebula * noise_e * _smooth_field(rng, shape, scale)

    # True matched-filter SNR: the local sky (gradient, nebulosity) adds
    # photon noise, so stars there are fainter than their nominal SNR.
    if background is None and sky_model.any():
        ixs = np.clip(np.round(x).astype(int), 0, nx - 1)
        iys = np.clip(np.round(y).astype(int), 0, ny - 1)
        local = np.sqrt(noise_e**2 + np.clip(sky_model[iys, ixs], 0, None))
        snr_true = snr * noise_e / local
    else:
        snr_true = snr
    expected = src + sky_model
    if background is None:
        expected_total = expected + c.sky
        img_e = rng.poisson(np.clip(expected_total, 0, None)).astype(float)
        img_e += rng.normal(0, c.read_noise, shape)
        img = img_e / c.gain + c.bias - c.sky / c.gain
    else:
        pois = rng.normal(0, 1, shape) * np.sqrt(np.clip(expected, 0, None))
        img = np.asarray(background, float) + (expected + pois) / c.gain

    cosmic = _cosmic_rays(rng, shape, c.n_cosmic, noise_adu)
    if c.n_hot:
        hy = rng.integers(0, ny, c.n_hot)
        hx = rng.integers(0, nx, c.n_hot)
        cosmic[hy, hx] += noise_adu * 10 ** rng.uniform(0.7, 2.5, c.n_hot)
    img += cosmic

    saturated = np.zeros(n_stars, bool)
    if c.saturation is not None:
        level = c.saturation
        peak_adu = src / c.gain
        if (img >= level).any():
            img = _bleed(img, level)
            ixs = np.clip(np.round(x).astype(int), 0, nx - 1)
            iys = np.clip(np.round(y).astype(int), 0, ny - 1)
            saturated = (peak_adu[iys, ixs] + 0.0 >= level * 0.8) & \
                (img[iys, ixs] >= level)

    mask = np.zeros(shape, bool)
    for _ in range(c.n_bad_columns):
        col = rng.integers(0, nx)
        lo = rng.integers(0, ny)
        hi = rng.integers(lo + 1, ny + 1)
        mask[lo:hi, col] = True
        img[lo:hi, col] = rng.choice([0.0, c.bias, 65535.0])

    galaxies = {'x': gal_x, 'y': gal_y}
    galaxies.update({k: np.array(v, float) for k, v in gal.items()})
    return {'image': img.astype(np.float32), 'mask': mask,
            'noise': float(noise_adu), 'fwhm': c.fwhm,
            'stars': {'x': x, 'y': y, 'flux': flux_e / c.gain,
                      'snr': snr_true, 'snr_sky': snr,
                      'saturated': saturated},
            'artefacts': {'cosmic': cosmic.astype(np.float32),
                          'galaxies': galaxies}}
