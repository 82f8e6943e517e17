# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Evaluation of denoisers: PSNR and SSIM against a noiseless truth,
aperture-flux preservation per SNR bin, checkerboard (Nyquist) power,
residual statistics at source positions, and seeded simulated fields
with their noiseless truth (stars, galaxies, nebulosity).
"""

import numpy as np
from astropy.table import QTable
from scipy import ndimage

__all__ = ['psnr', 'ssim', 'aperture_fluxes', 'flux_ratio_per_bin',
           'nyquist_power_ratio', 'residual_at_sources',
           'simulate_denoise_field']


def _pair(estimate, truth, mask):
    est = np.asarray(estimate, float)
    tru = np.asarray(truth, float)
    if est.shape != tru.shape:
        msg = f'shapes differ: {est.shape} and {tru.shape}'
        raise ValueError(msg)
    good = np.isfinite(est) & np.isfinite(tru)
    if mask is not None:
        good &= ~np.asarray(mask, bool)
    if not good.any():
        msg = 'no pixel is finite and unmasked in both images'
        raise ValueError(msg)
    return est, tru, good


def _data_range(tru, good, data_range):
    if data_range is None:
        data_range = float(np.max(tru[good]) - np.min(tru[good]))
    if not data_range > 0:
        msg = 'data_range must be positive (is the truth constant?)'
        raise ValueError(msg)
    return float(data_range)


def psnr(estimate, truth, data_range=None, *, mask=None):
    r"""
    Peak signal-to-noise ratio :math:`10\log_{10}(R^2/\mathrm{MSE})` in dB.

    Parameters
    ----------
    estimate, truth : 2D array_like
        The image to score and the noiseless truth.
    data_range : float, optional
        :math:`R`; default the truth's max minus min. Differences of
        PSNR between methods (gains) do not depend on it.
    mask : 2D bool array_like, optional
        `True` for pixels to leave out (non-finite pixels always are).

    Returns
    -------
    psnr : float

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation.denoise import psnr
    >>> truth = np.zeros((8, 8)); truth[4, 4] = 10.0
    >>> print(round(psnr(truth + 0.1, truth), 1))
    40.0
    """
    est, tru, good = _pair(estimate, truth, mask)
    rng = _data_range(tru, good, data_range)
    mse = float(np.mean((est[good] - tru[good]) ** 2))
    return np.inf if mse == 0 else 10.0 * np.log10(rng**2 / mse)


def ssim(estimate, truth, data_range=None, *, sigma=1.5, mask=None):
    """
    Structural similarity index (Wang et al. 2004), Gaussian-weighted.

    Local means, variances and covariance use a Gaussian window of
    standard deviation ``sigma`` pixels; the constants are
    ``(0.01 R)**2`` and ``(0.03 R)**2`` with ``R = data_range``.
    Pixels that are non-finite or masked in either image are left out
    of the mean (they are replaced by the truth for the filtering).

    Parameters
    ----------
    estimate, truth : 2D array_like
    data_range : float, optional
        Default the truth's max minus min; for astronomical images,
        whose peaks dwarf the sky noise, a robust range (e.g. a high
        percentile minus the minimum) makes SSIM sensitive to the sky.
    sigma : float
        Window width in pixels.
    mask : 2D bool array_like, optional

    Returns
    -------
    ssim : float
        1 for identical images.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation.denoise import ssim
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.normal(size=(32, 32))
    >>> ssim(truth, truth)
    1.0
    >>> bool(ssim(truth + rng.normal(size=truth.shape), truth) < 0.8)
    True
    """
    est, tru, good = _pair(estimate, truth, mask)
    rng = _data_range(tru, good, data_range)
    est = np.where(good, est, tru)
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2

    def f(a):
        return ndimage.gaussian_filter(a, sigma, mode='reflect',
                                       truncate=3.5)

    mx, my = f(est), f(tru)
    vx = f(est * est) - mx * mx
    vy = f(tru * tru) - my * my
    cxy = f(est * tru) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / (
        (mx * mx + my * my + c1) * (vx + vy + c2))
    return round(float(np.mean(s[good])), 12)


def aperture_fluxes(image, x, y, radius, sky=0.0):
    """
    Circular-aperture fluxes (exact pixel overlap) above a sky level.

    Parameters
    ----------
    image : 2D array_like
    x, y : array_like
        Source positions (0-based pixels).
    radius : float
        Aperture radius in pixels.
    sky : float or 2D array_like
        Subtracted before summing.

    Returns
    -------
    flux : 1D `~numpy.ndarray`
        NaN where the aperture touches a non-finite pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation.denoise import aperture_fluxes
    >>> img = np.ones((20, 20))
    >>> f = aperture_fluxes(img, [10.0], [10.0], 3.0)
    >>> bool(abs(f[0] - np.pi * 9) < 1e-6)
    True
    """
    from photutils.aperture import CircularAperture, aperture_photometry
    img = np.asarray(image, float) - sky
    x = np.atleast_1d(np.asarray(x, float))
    if len(x) == 0:
        return np.zeros(0)
    ap = CircularAperture(np.column_stack([x, np.asarray(y, float)]),
                          r=radius)
    bad = ~np.isfinite(img)
    tab = aperture_photometry(np.where(bad, 0.0, img), ap, mask=None)
    flux = np.asarray(tab['aperture_sum'], float)
    if bad.any():
        nbad = np.asarray(aperture_photometry(bad.astype(float), ap)
                          ['aperture_sum'], float)
        flux[nbad > 0] = np.nan
    return flux


def flux_ratio_per_bin(flux, reference, snr, bins=(3, 10, 30, 100, 1e9), *,
                       n_boot=200, seed=0):
    """
    Median flux ratio and its spread per SNR bin.

    Parameters
    ----------
    flux, reference : array_like
        Measured and reference (e.g. true) aperture fluxes.
    snr : array_like
        SNR of each source, used for binning.
    bins : sequence of float
        Bin edges.
    n_boot : int
        Bootstrap resamples for the uncertainty of the median.
    seed : int
        Bootstrap seed.

    Returns
    -------
    table : `~astropy.table.QTable`
        ``snr_min``, ``snr_max``, ``n``, ``median_ratio``,
        ``median_ratio_err`` (bootstrap standard error) and ``scatter``
        (1.4826 MAD of the ratio).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation.denoise import flux_ratio_per_bin
    >>> t = flux_ratio_per_bin([99.0, 101, 100], [100.0, 100, 100],
    ...                        [20, 20, 20], bins=(10, 30))
    >>> float(t['median_ratio'][0])
    1.0
    """
    flux = np.asarray(flux, float)
    ref = np.asarray(reference, float)
    snr = np.asarray(snr, float)
    with np.errstate(invalid='ignore', divide='ignore'):
        ratio = flux / ref
    ok = np.isfinite(ratio) & (ref > 0)
    rng = np.random.default_rng(seed)
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        r = ratio[ok & (snr >= lo) & (snr < hi)]
        if len(r) == 0:
            rows.append((lo, hi, 0, np.nan, np.nan, np.nan))
            continue
        med = float(np.median(r))
        boot = np.median(rng.choice(r, (n_boot, len(r))), axis=1)
        rows.append((lo, hi, len(r), med, float(np.std(boot)),
                     float(1.4826 * np.median(np.abs(r - med)))))
    return QTable(rows=rows, names=('snr_min', 'snr_max', 'n',
                                    'median_ratio', 'median_ratio_err',
                                    'scatter'))


def nyquist_power_ratio(image, *, mask=None):
    """
    Power at the Nyquist frequencies relative to its neighbourhood.

    A checkerboard (period-2) artefact puts power at the frequencies
    (1/2, 1/2), (1/2, 0) and (0, 1/2) cycles per pixel. This returns the
    mean power in the rows and columns of the spectrum at 1/2 cycle per
    pixel divided by the mean power of the band between 0.35 and 0.45
    cycles per pixel (off those rows and columns). White noise gives
    about 1; a smooth image less; a checkerboard much more.

    Parameters
    ----------
    image : 2D array_like
        Usually a residual (raw minus denoised) or an error image
        (denoised minus truth).
    mask : 2D bool array_like, optional
        Pixels set to the mean before the transform.

    Returns
    -------
    ratio : float

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation.denoise import nyquist_power_ratio
    >>> rng = np.random.default_rng(0)
    >>> noise = rng.normal(size=(128, 128))
    >>> bool(0.7 < nyquist_power_ratio(noise) < 1.3)
    True
    >>> checker = noise + 0.5 * (-1.0) ** np.add.outer(range(128), range(128))
    >>> bool(nyquist_power_ratio(checker) > 10)
    True
    """
    img = np.asarray(image, float)
    good = np.isfinite(img)
    if mask is not None:
        good &= ~np.asarray(mask, bool)
    if not good.any():
        msg = 'no finite, unmasked pixels'
        raise ValueError(msg)
    img = np.where(good, img - img[good].mean(), 0.0)
    ny, nx = img.shape
    ny, nx = ny - ny % 2, nx - nx % 2
    power = np.abs(np.fft.fft2(img[:ny, :nx])) ** 2
    fy = np.abs(np.fft.fftfreq(ny))[:, None]
    fx = np.abs(np.fft.fftfreq(nx))[None, :]
    nyq = (fy == 0.5) | (fx == 0.5)
    band = (np.maximum(fy, fx) >= 0.35) & (np.maximum(fy, fx) <= 0.45) & ~nyq
    return float(power[nyq].mean() / power[band].mean())


def residual_at_sources(residual, x, y, radius, noise):
    """
    Aperture sums of a residual at source positions, in noise units.

    For a residual that is pure noise of per-pixel standard deviation
    ``noise`` (white), the values have mean 0 and standard deviation
    about 1; source structure left in the residual (flux taken from
    or added to the sources) shows as a mean offset.

    Parameters
    ----------
    residual : 2D array_like
        Raw minus denoised.
    x, y : array_like
        Source positions.
    radius : float
        Aperture radius.
    noise : float
        Per-pixel noise of the raw image.

    Returns
    -------
    z : 1D `~numpy.ndarray`
        ``sum(residual) / (noise * sqrt(area))`` per source.
    """
    flux = aperture_fluxes(residual, x, y, radius)
    return flux / (noise * np.sqrt(np.pi * radius**2))


def simulate_denoise_field(shape=(256, 256), kind='stars', seed=None, *,
                           fwhm=3.0, density=3000.0, sky=400.0, gain=1.5,
                           read_noise=5.0, snr_range=(2.0, 3000.0),
                           galaxy_log_snr=(1.0, 2.7)):
    """
    A seeded noisy field with its noiseless truth.

    Parameters
    ----------
    shape : tuple of int
    kind : {'stars', 'galaxies', 'nebula'}
        Stars only; stars and Sersic galaxies; or stars on bright
        diffuse nebulosity with filaments.
    seed : int or `None`
    fwhm : float
        Moffat (beta = 3) PSF FWHM in pixels.
    density : float
        Stars per million pixels.
    sky, gain, read_noise : float
        Sky (electrons), gain (electrons per ADU) and read noise
        (electrons); the noise is Poisson plus Gaussian read noise.
    snr_range : tuple of float
        Range of matched-filter SNRs (power law, index 1.6).
    galaxy_log_snr : tuple of float
        Range of ``log10`` of the galaxies' SNR (uniform), see
        ``galaxies`` below; the default gives SNRs of 10-500.

    Returns
    -------
    field : dict
        ``image`` and ``truth`` (float32, ADU, sky included), ``sky``
        (ADU), ``noise`` (sky noise, ADU), ``fwhm``, ``stars`` (dict
        of arrays ``x``, ``y``, ``flux`` (ADU), ``snr``) and
        ``galaxies`` (dict of arrays, empty unless ``kind='galaxies'``:
        centre ``x``, ``y``; total ``flux`` (ADU); ``snr``, the flux
        over the sky noise in a circular aperture of radius
        ``2 * sqrt(re**2 + (fwhm / 2.35)**2)``, log-uniform (in 10-500
        by default);
        Sersic half-light semi-major axis ``re`` (pixels), index ``n``,
        axis ratio ``q`` and position angle ``theta`` (radians); ``sb``,
        the mean surface brightness inside the half-light ellipse
        before the PSF, in units of the sky noise per pixel).

    Examples
    --------
    >>> from cnnfind.evaluation.denoise import simulate_denoise_field
    >>> f = simulate_denoise_field((64, 64), 'nebula', seed=1)
    >>> f['image'].shape == f['truth'].shape == (64, 64)
    True
    >>> g = simulate_denoise_field((128, 128), 'galaxies', seed=1)
    >>> len(g['galaxies']['x']) > 0
    True
    """
    from cnnfind.simulation.fields import _powerlaw, _sersic, _smooth_field
    from cnnfind.simulation.psf import psf_sum_squares, render_profiles
    if kind not in ('stars', 'galaxies', 'nebula'):
        msg = f"kind must be 'stars', 'galaxies' or 'nebula', not {kind!r}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    ny, nx = shape
    noise_e = np.sqrt(sky + read_noise**2)
    n = rng.poisson(density * ny * nx / 1e6)
    x = rng.uniform(-2, nx + 1, n)
    y = rng.uniform(-2, ny + 1, n)
    snr = _powerlaw(rng, snr_range[0], snr_range[1], 1.6, n)
    flux_e = snr * noise_e / np.sqrt(psf_sum_squares(fwhm))
    src = np.zeros(shape)
    render_profiles(src, x, y, flux_e, fwhm)
    gal = {k: [] for k in ('x', 'y', 'flux', 'snr', 're', 'n', 'q',
                           'theta')}
    if kind == 'galaxies':
        for _ in range(rng.poisson(400 * ny * nx / 1e6) + 1):
            # The draws are in the order of the original one-expression
            # call, so that the pixels do not depend on this bookkeeping.
            re = fwhm * rng.uniform(1.0, 4.0) + 1.0
            gsnr = 10 ** rng.uniform(*galaxy_log_snr)
            gflux = gsnr * noise_e * np.sqrt(
                4 * np.pi * (re**2 + (fwhm / 2.35)**2))
            gx, gy = rng.uniform(0, nx), rng.uniform(0, ny)
            sn, q, theta = (rng.uniform(0.5, 4.0), rng.uniform(0.3, 1.0),
                            rng.uniform(0, np.pi))
            src += _sersic(shape, gx, gy, gflux, re, sn, q, theta, fwhm)
            for k, v in zip(gal, (gx, gy, gflux, gsnr, re, sn, q, theta),
                            strict=True):
                gal[k].append(v)
    elif kind == 'nebula':
        neb = _smooth_field(rng, shape, rng.uniform(0.15, 0.4) * max(shape))
        fil = _smooth_field(rng, shape, 0.05 * max(shape))
        src += noise_e * (60.0 * neb + 15.0 * fil)
    expected = src + sky
    img = rng.poisson(expected).astype(float) + rng.normal(0, read_noise,
                                                           shape)
    return {'image': (img / gain).astype(np.float32),
            'truth': (expected / gain).astype(np.float32),
            'sky': sky / gain, 'noise': noise_e / gain, 'fwhm': fwhm,
            'stars': {'x': x, 'y': y, 'flux': flux_e / gain, 'snr': snr},
            'galaxies': _galaxy_truth(gal, gain, noise_e)}


def _galaxy_truth(gal, gain, noise_e):
    """The galaxies' parameters as arrays; flux in ADU, ``sb`` the mean
    surface brightness inside the half-light ellipse (before the PSF)
    in units of the sky noise per pixel."""
    out = {k: np.asarray(v, float) for k, v in gal.items()}
    out['sb'] = (0.5 * out['flux'] / (np.pi * out['re']**2 * out['q'])
                 / noise_e)
    out['flux'] = out['flux'] / gain
    return out


def card_metrics(onnx_path, card, *, n_fields=3, size=256, seed=12345,
                 log=print):
    """
    Headline metrics of a denoising model on seeded simulated fields
    (written in the model card by the training script).
    """
    from cnnfind.denoise.denoiser import N2VDenoiser
    den = N2VDenoiser(onnx_path, device='cpu')
    out = {}
    for kind in ('stars', 'galaxies', 'nebula'):
        gains, ratios, snrs, flux_true = [], [], [], []
        for i in range(n_fields):
            f = simulate_denoise_field((size, size), kind, seed + i)
            d = den(f['image'])
            gains.append(psnr(d, f['truth']) - psnr(f['image'], f['truth']))
            st = f['stars']
            r = 2.0 * f['fwhm']
            inside = ((st['x'] > r + 1) & (st['x'] < size - r - 2)
                      & (st['y'] > r + 1) & (st['y'] < size - r - 2))
            xs, ys = st['x'][inside], st['y'][inside]
            ratios.append(aperture_fluxes(d, xs, ys, r, f['sky']))
            flux_true.append(aperture_fluxes(f['truth'], xs, ys, r,
                                             f['sky']))
            snrs.append(st['snr'][inside])
        tab = flux_ratio_per_bin(np.concatenate(ratios),
                                 np.concatenate(flux_true),
                                 np.concatenate(snrs), bins=(10, 1e9))
        out[kind] = {'psnr_gain_db': round(float(np.mean(gains)), 2),
                     'flux_ratio_snr_ge_10': round(float(
                         tab['median_ratio'][0]), 4),
                     'n_sources_snr_ge_10': int(tab['n'][0])}
        log(f'card metrics {kind}: {out[kind]}')
    out['fields'] = (f'{n_fields} seeded {size}x{size} fields per kind from '
                     'cnnfind.evaluation.denoise.simulate_denoise_field '
                     f'(seeds {seed}..{seed + n_fields - 1}); flux in '
                     'apertures of radius 2 FWHM against the truth, sky '
                     'known')
    return out
