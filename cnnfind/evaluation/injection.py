# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Injection of artificial stars into images and injection–recovery
tests of finders.
"""

import warnings

import numpy as np
from astropy.table import QTable, vstack
from scipy.spatial import cKDTree

from cnnfind.evaluation._tables import _as_float_arrays, _table_xy
from cnnfind.evaluation.matching import match_sources
from cnnfind.runtime.normalize import robust_sky_noise, valid_pixel_mask
from cnnfind.simulation.psf import psf_sum_squares, render_profiles

__all__ = ['inject_stars', 'injection_recovery']


def _avoid_xy(avoid):
    """Positions to keep away from, from None, a table or an (x, y) pair."""
    if avoid is None:
        return np.zeros(0), np.zeros(0)
    if hasattr(avoid, 'colnames'):
        return _table_xy(avoid)
    x, y = _as_float_arrays(avoid[0], avoid[1])
    return x, y


def _place(rng, shape, n, margin, min_sep, avoid_x, avoid_y, valid,
           max_rounds=50):
    """Random positions away from each other, ``avoid`` and bad pixels."""
    ny, nx = shape
    lo_x, hi_x = margin, nx - 1 - margin
    lo_y, hi_y = margin, ny - 1 - margin
    if hi_x <= lo_x or hi_y <= lo_y:
        msg = f'the image {shape} is too small for a margin of {margin} px'
        raise ValueError(msg)
    ok_a = np.isfinite(avoid_x) & np.isfinite(avoid_y)
    tree_a = (cKDTree(np.column_stack([avoid_x[ok_a], avoid_y[ok_a]]))
              if ok_a.any() else None)
    xs, ys = [], []
    for _ in range(max_rounds):
        m = 4 * (n - len(xs)) + 16
        cx = rng.uniform(lo_x, hi_x, m)
        cy = rng.uniform(lo_y, hi_y, m)
        good = valid[np.round(cy).astype(int), np.round(cx).astype(int)]
        if tree_a is not None and min_sep > 0:
            d, _ = tree_a.query(np.column_stack([cx, cy]))
            good &= d >= min_sep
        for px, py in zip(cx[good], cy[good], strict=True):
            if xs and min_sep > 0:
                d2 = (np.asarray(xs) - px)**2 + (np.asarray(ys) - py)**2
                if d2.min() < min_sep**2:
                    continue
            xs.append(px)
            ys.append(py)
            if len(xs) == n:
                return np.array(xs), np.array(ys)
    warnings.warn(f'only {len(xs)} of {n} stars could be placed with '
                  f'min_separation={min_sep:g}', RuntimeWarning)
    return np.array(xs), np.array(ys)


def _psf_stamp(fwhm, psf, beta):
    """Unit-flux PSF on a stamp."""
    radius = int(np.ceil(3 * fwhm)) + 1
    stamp = np.zeros((2 * radius + 1, 2 * radius + 1))
    render_profiles(stamp, radius, radius, 1.0, fwhm, kind=psf, beta=beta,
                    radius=radius)
    return stamp


def _filtered_noise(image, valid, stamp, max_side=1024):
    """
    Noise of the PSF-filtered image, robust to sky gradients: the
    sigma-clipped spread of differences of filtered pixels one stamp
    width apart, over sqrt(2).
    """
    from astropy.stats import sigma_clipped_stats
    from scipy.signal import fftconvolve

    ny, nx = image.shape
    y0 = max(0, (ny - max_side) // 2)
    x0 = max(0, (nx - max_side) // 2)
    crop = np.asarray(image[y0:y0 + max_side, x0:x0 + max_side], float)
    ok = valid[y0:y0 + max_side, x0:x0 + max_side]
    fill = np.median(crop[ok]) if ok.any() else 0.0
    filt = fftconvolve(np.where(ok, crop, fill), stamp[::-1, ::-1],
                       mode='same')
    # Pixels whose filter footprint touches a bad pixel are not used.
    bad = fftconvolve((~ok).astype(float), np.ones_like(stamp),
                      mode='same') > 0.5
    lag = 2 * stamp.shape[1]  # beyond the filtered noise correlation
    h = stamp.shape[0] // 2
    inner = np.zeros(filt.shape, bool)
    inner[h:-h or None, h:-h or None] = True
    use = inner & ~bad
    diff = filt[:, lag:] - filt[:, :-lag]
    both = use[:, lag:] & use[:, :-lag]
    values = diff[both]
    if values.size < 16:
        msg = 'too few valid pixels to measure the filtered noise'
        raise ValueError(msg)
    _, _, std = sigma_clipped_stats(values, sigma=3.0, maxiters=5)
    return float(std / np.sqrt(2.0))


def inject_stars(image, n, fwhm, snr_range=(5.0, 50.0), seed=None,
                 noise=None, psf='moffat', avoid=None, *, beta=3.0,
                 min_separation=None, margin=None, mask=None, gain=None,
                 noise_estimate='pixel'):
    """
    Add artificial stars of known signal-to-noise ratio to an image.

    Positions are uniform in the image (away from the borders, from
    bad pixels, from each other and from the ``avoid`` positions); the
    SNRs are log-uniform in ``snr_range``. The total flux of a star of
    matched-filter SNR ``s`` is ``s * noise / sqrt(sum(p**2))`` with
    ``p`` the unit-flux PSF (`~cnnfind.simulation.psf_sum_squares`), so
    the SNR is that of a background-limited star in white noise.

    If the noise is correlated between pixels (scanned photographic
    plates, resampled or co-added images), the pixel noise
    underestimates the noise of a matched filter, and such SNRs are
    optimistic. ``noise_estimate='filtered'`` measures the noise
    ``sigma_f`` of the image filtered with the PSF instead and uses
    ``flux = s * sigma_f / sum(p**2)``, which is the same for white
    noise and the true matched-filter SNR otherwise.

    Parameters
    ----------
    image : 2D array_like
        The image (not modified).
    n : int
        Number of stars.
    fwhm : float
        PSF FWHM in pixels.
    snr_range : tuple of float
        Smallest and largest matched-filter SNR.
    seed : int, `~numpy.random.Generator` or `None`
        Random seed.
    noise : float, optional
        Sky noise of the image (data units); default from
        `~cnnfind.runtime.robust_sky_noise`.
    psf : {'moffat', 'gaussian'}
        PSF profile (see `~cnnfind.simulation.render_profiles`).
    avoid : `~astropy.table.Table` or tuple of array_like, optional
        Positions to keep clear of, e.g. the sources already found in
        the image: a table with ``x_centroid``/``y_centroid`` (or
        ``xcentroid``/``ycentroid``, ``x``/``y``) columns or an ``(x,
        y)`` pair.
    beta : float
        Moffat index.
    min_separation : float, optional
        Smallest distance between an injected star and another
        injected star or an ``avoid`` position; default ``2.5 * fwhm``.
    margin : float, optional
        Smallest distance to the image border; default ``2 * fwhm``.
    mask : 2D bool array_like, optional
        `True` for bad pixels (no star is centred on one, nor on a
        non-finite pixel).
    gain : float, optional
        If given (electrons per data unit), the stars' own Poisson
        noise is added (Gaussian approximation); otherwise the stars
        are noiseless, which is exact for background-limited stars.
    noise_estimate : {'pixel', 'filtered'}
        How the SNR is turned into a flux (see above). With
        ``'filtered'``, ``noise`` is ignored.

    Returns
    -------
    injected : 2D `~numpy.ndarray`
        A float copy of ``image`` (float32 stays float32) with the stars
        added.
    truth : `~astropy.table.QTable`
        Columns ``x``, ``y`` (0-based pixels), ``flux`` (total, data
        units) and ``snr``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation import inject_stars
    >>> rng = np.random.default_rng(1)
    >>> image = rng.normal(100.0, 5.0, (128, 128))
    >>> new, truth = inject_stars(image, 5, fwhm=3.0, snr_range=(20, 40),
    ...                           seed=2)
    >>> len(truth), bool(np.all((truth['snr'] >= 20) & (truth['snr'] <= 40)))
    (5, True)
    >>> bool(abs((new - image).sum() - truth['flux'].sum())
    ...      < 0.01 * truth['flux'].sum())
    True
    """
    image = np.asarray(image)
    if image.ndim != 2:
        msg = f'image must be 2D, got {image.ndim} dimensions'
        raise ValueError(msg)
    if n < 0:
        msg = f'n must be >= 0, got {n}'
        raise ValueError(msg)
    lo, hi = (float(v) for v in snr_range)
    if not 0 < lo <= hi:
        msg = f'snr_range must satisfy 0 < low <= high, got {snr_range}'
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    dtype = np.float32 if image.dtype == np.float32 else np.float64
    injected = np.array(image, dtype=dtype)
    valid = valid_pixel_mask(image, mask)
    if noise_estimate not in ('pixel', 'filtered'):
        msg = ("noise_estimate must be 'pixel' or 'filtered', got "
               f'{noise_estimate!r}')
        raise ValueError(msg)
    if noise is None and noise_estimate == 'pixel':
        _, noise = robust_sky_noise(image, valid)
    min_sep = 2.5 * fwhm if min_separation is None else float(min_separation)
    margin = 2.0 * fwhm if margin is None else float(margin)
    ax, ay = _avoid_xy(avoid)
    x, y = _place(rng, image.shape, int(n), margin, min_sep, ax, ay, valid)
    snr = np.exp(rng.uniform(np.log(lo), np.log(hi), x.size))
    ss = psf_sum_squares(fwhm, kind=psf, beta=beta)
    if noise_estimate == 'filtered':
        sigma_f = _filtered_noise(image, valid, _psf_stamp(fwhm, psf, beta))
        flux = snr * sigma_f / ss
    else:
        flux = snr * noise / np.sqrt(ss)
    model = np.zeros(image.shape)
    render_profiles(model, x, y, flux, fwhm, kind=psf, beta=beta)
    if gain is not None:
        model += rng.normal(size=model.shape) * np.sqrt(
            np.clip(model, 0, None) / gain)
    injected += model.astype(dtype)
    truth = QTable({'x': x, 'y': y, 'flux': flux, 'snr': snr})
    return injected, truth


def _finder_xy(finder, data, mask):
    """Run a finder and return its positions, whatever it returns."""
    from photutils.utils.exceptions import NoDetectionsWarning

    with warnings.catch_warnings():
        # Finding nothing (e.g. in the image before injection) is fine.
        warnings.simplefilter('ignore', NoDetectionsWarning)
        result = finder(data) if mask is None else finder(data, mask=mask)
    if result is None or hasattr(result, 'colnames'):
        return _table_xy(result)
    # A tuple such as the (x, y, score, seconds) of the peer wrappers.
    x, y = _as_float_arrays(result[0], result[1])
    return x, y


def injection_recovery(finder, image, n=100, fwhm=3.0, *,
                       snr_range=(5.0, 50.0),
                       bins=(5.0, 10.0, 20.0, 50.0, np.inf), radius=3.0,
                       seed=None, n_iter=1, mask=None, psf='moffat',
                       beta=3.0, noise=None, min_separation=None,
                       margin=None, noise_estimate='pixel'):
    """
    Completeness of a finder for stars injected into a real image.

    The finder is run on the original image first; its detections are
    the pre-existing sources. Stars are then injected away from them
    (`inject_stars`) and the finder is run on the injected image.
    Detections that match a pre-existing source (within ``radius``, one
    to one) are removed, and the rest are matched one to one to the
    injected stars within ``radius``.

    Parameters
    ----------
    finder : callable
        ``finder(data)`` (or ``finder(data, mask=mask)`` when ``mask`` is
        given) returning a table with ``x_centroid``/``y_centroid``
        (``xcentroid``/``ycentroid`` or ``x``/``y``) columns, `None`,
        or a tuple whose first two items are the x and y arrays.
    image : 2D array_like
        The image.
    n : int
        Stars injected per iteration.
    fwhm : float
        PSF FWHM of the injected stars in pixels.
    snr_range : tuple of float
        SNR range of the injected stars (log-uniform).
    bins : array_like
        SNR bin edges of the result.
    radius : float
        Matching radius in pixels.
    seed : int or `None`
        Random seed; iteration ``i`` uses ``seed + i``.
    n_iter : int
        Number of independent injections (each into the original
        image), to build up statistics without crowding the image.
    mask : 2D bool array_like, optional
        Bad pixels; passed to the finder and kept free of stars.
    psf, beta, noise, min_separation, margin, noise_estimate
        As in `inject_stars`.

    Returns
    -------
    table : `~astropy.table.QTable`
        Per SNR bin: ``lo``, ``hi``, ``n_true``, ``n_found`` and
        ``completeness``.
    injected : `~astropy.table.QTable`
        Every injected star: ``x``, ``y``, ``flux``, ``snr``,
        ``iteration``, ``found`` and the matched ``x_det``, ``y_det``
        (NaN if not found).

    Examples
    --------
    >>> import numpy as np
    >>> from photutils.detection import DAOStarFinder
    >>> from cnnfind.evaluation import injection_recovery
    >>> image = np.random.default_rng(0).normal(0.0, 1.0, (128, 128))
    >>> finder = DAOStarFinder(threshold=5.0, fwhm=3.0)
    >>> table, stars = injection_recovery(finder, image, n=20, fwhm=3.0,
    ...                                   snr_range=(30, 60), bins=[30, 60],
    ...                                   seed=1)
    >>> float(table['completeness'][0])
    1.0
    """
    image = np.asarray(image)
    x0, y0 = _finder_xy(finder, image, mask)
    base = 0 if seed is None else int(seed)
    parts = []
    for i in range(int(n_iter)):
        new, truth = inject_stars(
            image, n, fwhm, snr_range,
            seed=None if seed is None else base + i, noise=noise, psf=psf,
            avoid=(x0, y0), beta=beta, min_separation=min_separation,
            margin=margin, mask=mask, noise_estimate=noise_estimate)
        xd, yd = _finder_xy(finder, new, mask)
        _, old, _ = match_sources(x0, y0, xd, yd, radius)
        keep = np.ones(xd.size, dtype=bool)
        keep[old] = False
        xd, yd = xd[keep], yd[keep]
        it, id_, _ = match_sources(truth['x'], truth['y'], xd, yd, radius)
        truth['iteration'] = np.full(len(truth), i)
        truth['found'] = np.zeros(len(truth), dtype=bool)
        truth['found'][it] = True
        truth['x_det'] = np.full(len(truth), np.nan)
        truth['y_det'] = np.full(len(truth), np.nan)
        truth['x_det'][it] = xd[id_]
        truth['y_det'][it] = yd[id_]
        parts.append(truth)
    injected = vstack(parts) if parts else QTable()
    bins = np.asarray(bins, dtype=float)
    snr = np.asarray(injected['snr']) if len(injected) else np.zeros(0)
    found = np.asarray(injected['found']) if len(injected) else np.zeros(0)
    lo, hi = bins[:-1], bins[1:]
    inbin = (snr[None, :] >= lo[:, None]) & (snr[None, :] < hi[:, None])
    n_true = inbin.sum(axis=1)
    n_found = (inbin & found[None, :].astype(bool)).sum(axis=1)
    table = QTable({'lo': lo, 'hi': hi, 'n_true': n_true,
                    'n_found': n_found})
    with np.errstate(invalid='ignore', divide='ignore'):
        table['completeness'] = np.where(n_true > 0,
                                         n_found / np.maximum(n_true, 1),
                                         np.nan)
    return table, injected
