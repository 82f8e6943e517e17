# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Evaluation of PSF-star selection: seeded fields with a known, constant
PSF and per-star truth of what makes a star clean (isolated,
unsaturated, uncontaminated point source), selection purity and
completeness, and the residual of an effective PSF against the true
PSF.

Numpy, scipy, astropy and photutils only.
"""

import numpy as np

from cnnfind.evaluation.matching import match_sources
from cnnfind.simulation.fields import _bleed, _cosmic_rays, _powerlaw, _sersic
from cnnfind.simulation.psf import psf_sum_squares, render_profiles

__all__ = ['PSF_SCENARIO', 'simulate_psf_field', 'true_psf_stamp',
           'selection_quality', 'build_epsf', 'epsf_residual',
           'psfex_selection']

#: The benchmark recipe: a constant, slightly elliptical Moffat PSF with
#: crowding, binaries, galaxies, saturated stars, cosmic rays and hot
#: pixels (see `simulate_psf_field`).
PSF_SCENARIO = dict(fwhm=3.5, beta=2.8, ratio=0.9, theta=0.5, kind='moffat',
                    density=1000.0, binary_fraction=0.15,
                    galaxies_per_mpix=150.0, cosmics_per_mpix=300.0,
                    hot_per_mpix=75.0, saturation=20000.0,
                    snr_range=(5.0, 20000.0))

#: Half-size (pixels) of the box in which contamination is measured.
CLEAN_BOX = 12
#: Largest profile-weighted |contamination| within 3 FWHM, as a
#: fraction of the star's own light, for a clean star.
CLEAN_MAX_SUM = 0.03
#: Largest |contamination| pixel in the box, as a fraction of the star's
#: own peak, for a clean star.
CLEAN_MAX_PEAK = 0.1


def simulate_psf_field(shape=(512, 512), seed=None, *, fwhm=3.5, beta=2.8,
                       ratio=0.9, theta=0.5, kind='moffat', density=2500.0,
                       binary_fraction=0.15, binary_sep=(0.3, 3.0),
                       galaxies_per_mpix=300.0, cosmics_per_mpix=600.0,
                       hot_per_mpix=150.0, saturation=40000.0,
                       snr_range=(5.0, 5000.0), snr_slope=1.6, sky=400.0,
                       read_noise=5.0, gain=1.5, bias=1000.0,
                       background=None, exclusion=None):
    """
    Simulate a field with a constant PSF and per-star cleanliness truth.

    A star is *clean* when it is unsaturated, its ``2 * CLEAN_BOX + 1``
    box lies inside the image (and off ``exclusion``) without saturated
    pixels, and the noise-free light of everything else (other stars,
    binary companions, galaxies, cosmic rays, hot pixels), less its
    median over the box's 2-pixel border (a local background, which
    removes smooth light such as a distant galaxy's wing), is at most
    ``CLEAN_MAX_SUM`` of the star's own light where the star's light is
    (the absolute contamination weighted by the star's own profile
    within 3 FWHM, over the same weighting of the star itself), with no
    pixel of the box above ``CLEAN_MAX_PEAK`` of its own peak.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    seed : int, `~numpy.random.Generator` or `None`
        Random seed.
    fwhm, beta, ratio, theta, kind
        The PSF (see `~cnnfind.simulation.render_profiles`; ``theta``
        in radians).
    density : float
        Stars per million pixels (binary companions come on top).
    binary_fraction : float
        Fraction of stars given a companion at ``binary_sep`` (in FWHM)
        with a flux ratio of 0.05-1.
    galaxies_per_mpix, cosmics_per_mpix, hot_per_mpix : float
        Numbers of Sersic galaxies, cosmic-ray hits and hot pixels per
        million pixels.
    saturation : float or `None`
        Saturation level in ADU (bleed trails run along columns).
    snr_range, snr_slope : float
        Power-law distribution of the stars' matched-filter SNR.
    sky, read_noise, gain, bias : float
        Detector model (electrons, electrons, e-/ADU, ADU).
    background : 2D `~numpy.ndarray`, optional
        A real frame (ADU) to add the sources to instead of a simulated
        sky.
    exclusion : 2D bool `~numpy.ndarray`, optional
        Pixels of real sources in ``background``: stars whose box
        touches them are not clean.

    Returns
    -------
    sim : dict
        ``image`` (float32 ADU), ``noise`` (ADU), ``sky`` (ADU level of
        the empty sky), ``psf`` (dict of the PSF parameters),
        ``saturation`` and ``stars``: a dict of arrays ``x, y, flux,
        peak, snr, saturated, binary, contamination, clean`` (fluxes in
        ADU above the sky).

    Examples
    --------
    >>> from cnnfind.evaluation.psf import simulate_psf_field
    >>> sim = simulate_psf_field((128, 128), seed=1)
    >>> sim['image'].shape, bool(sim['stars']['clean'].any())
    ((128, 128), True)
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    mpix = ny * nx / 1e6
    if background is None:
        noise_e = np.sqrt(sky + read_noise**2)
    else:
        from cnnfind.runtime.normalize import robust_sky_noise
        _, noise_adu = robust_sky_noise(background)
        noise_e = noise_adu * gain
    ss = psf_sum_squares(fwhm, kind=kind, beta=beta, ratio=ratio, theta=theta)
    n = rng.poisson(density * mpix)
    x = rng.uniform(-3, nx + 2, n)
    y = rng.uniform(-3, ny + 2, n)
    snr = _powerlaw(rng, snr_range[0], snr_range[1], snr_slope, n)
    binary = rng.random(n) < binary_fraction
    nb = int(binary.sum())
    sep = fwhm * rng.uniform(*binary_sep, nb)
    ang = rng.uniform(0, 2 * np.pi, nb)
    comp_snr = snr[binary] * rng.uniform(0.05, 1.0, nb)
    x = np.concatenate([x, x[binary] + sep * np.cos(ang)])
    y = np.concatenate([y, y[binary] + sep * np.sin(ang)])
    snr = np.concatenate([snr, comp_snr])
    binary = np.concatenate([binary, np.ones(nb, bool)])
    flux_e = snr * noise_e / np.sqrt(ss)

    stars = np.zeros(shape)
    render_profiles(stars, x, y, flux_e, fwhm, kind=kind, beta=beta,
                    ratio=ratio, theta=theta)
    gals = np.zeros(shape)
    ng = rng.poisson(galaxies_per_mpix * mpix)
    gx, gy = rng.uniform(0, nx, ng), rng.uniform(0, ny, ng)
    for xg, yg in zip(gx, gy, strict=True):
        re = fwhm * rng.uniform(0.3, 3.0) + 0.5
        gsnr = 10 ** rng.uniform(1.0, 3.0)
        gflux = gsnr * noise_e * np.sqrt(4 * np.pi * (re**2 + (fwhm / 2.35)**2))
        gals += _sersic(shape, xg, yg, gflux, re, rng.uniform(0.5, 4.0),
                        rng.uniform(0.3, 1.0), rng.uniform(0, np.pi), fwhm)
    src = stars + gals
    if background is None:
        img_e = rng.poisson(np.clip(src + sky, 0, None)).astype(float)
        img_e += rng.normal(0, read_noise, shape)
        img = img_e / gain + bias - sky / gain
        sky_adu = bias
    else:
        pois = rng.normal(0, 1, shape) * np.sqrt(np.clip(src, 0, None))
        img = np.asarray(background, float) + (src + pois) / gain
        from cnnfind.runtime.normalize import robust_sky_noise
        sky_adu, _ = robust_sky_noise(np.asarray(background, float))
    noise_adu = noise_e / gain
    cosmic = _cosmic_rays(rng, shape, rng.poisson(cosmics_per_mpix * mpix),
                          noise_adu)
    nh = rng.poisson(hot_per_mpix * mpix)
    cosmic[rng.integers(0, ny, nh), rng.integers(0, nx, nh)] += (
        noise_adu * 10 ** rng.uniform(0.7, 2.5, nh))
    img += cosmic
    satmap = np.zeros(shape, bool)
    if saturation is not None:
        img = _bleed(img, saturation)
        satmap = img >= saturation

    # Truth: each star's own light against everything else's.
    total = src / gain + cosmic
    flux = flux_e / gain
    peak = np.zeros(len(x))
    contam = np.full(len(x), np.inf)
    c_sum = np.full(len(x), np.inf)
    c_peak = np.full(len(x), np.inf)
    c_where = np.full(len(x), np.inf)
    inside = np.zeros(len(x), bool)
    sat_star = np.zeros(len(x), bool)
    b = CLEAN_BOX
    yy, xx = np.mgrid[-b:b + 1, -b:b + 1]
    frame = np.ones(yy.shape, bool)
    frame[2:-2, 2:-2] = False
    for i in range(len(x)):
        ix, iy = int(np.round(x[i])), int(np.round(y[i]))
        own = np.zeros((2 * b + 1, 2 * b + 1))
        render_profiles(own, b + x[i] - ix, b + y[i] - iy, flux[i], fwhm,
                        kind=kind, beta=beta, ratio=ratio, theta=theta)
        peak[i] = own.max()
        if saturation is not None:
            base = bias if background is None else sky_adu
            sat_star[i] = base + peak[i] >= 0.8 * saturation
        if not (b <= ix < nx - b and b <= iy < ny - b):
            continue
        win = (slice(iy - b, iy + b + 1), slice(ix - b, ix + b + 1))
        inside[i] = not satmap[win].any() and (
            exclusion is None or not exclusion[win].any())
        other = total[win] - own
        # Smooth light that a local background removes is not counted.
        other = np.abs(other - np.median(other[frame]))
        core = (xx + ix - x[i])**2 + (yy + iy - y[i])**2 <= (3 * fwhm)**2
        # Other light where the star's light is (weighted by its own
        # profile), as a fraction of the star's own light.
        c_sum[i] = ((other[core] * own[core]).sum()
                    / ((own[core]**2).sum() * CLEAN_MAX_SUM))
        c_peak[i] = other.max() / (peak[i] * CLEAN_MAX_PEAK)
        j = np.unravel_index(other.argmax(), other.shape)
        c_where[i] = np.hypot(xx[j] + ix - x[i], yy[j] + iy - y[i])
        contam[i] = max(c_sum[i], c_peak[i])
    clean = inside & ~sat_star & (contam <= 1.0)
    if saturation is not None:
        sat_star |= satmap[np.clip(np.round(y).astype(int), 0, ny - 1),
                           np.clip(np.round(x).astype(int), 0, nx - 1)]
    return {'image': img.astype(np.float32), 'noise': float(noise_adu),
            'sky': float(sky_adu), 'saturation': saturation,
            'psf': dict(fwhm=fwhm, beta=beta, ratio=ratio, theta=theta,
                        kind=kind),
            'stars': {'x': x, 'y': y, 'flux': flux, 'peak': peak,
                      'snr': snr, 'saturated': sat_star, 'binary': binary,
                      'contamination': contam, 'contamination_sum': c_sum,
                      'contamination_peak': c_peak,
                      'contamination_peak_r': c_where, 'clean': clean},
            'galaxies': {'x': gx, 'y': gy}}


def true_psf_stamp(psf, size=25, dx=0.0, dy=0.0):
    """
    The pixel-integrated true PSF (unit flux) on a ``size`` x ``size``
    stamp, centred ``(dx, dy)`` from the central pixel.

    Examples
    --------
    >>> from cnnfind.evaluation.psf import true_psf_stamp
    >>> stamp = true_psf_stamp(dict(fwhm=3.0, kind='gaussian'), 15)
    >>> round(float(stamp.sum()), 3)
    1.0
    """
    c = size // 2
    stamp = np.zeros((size, size))
    p = dict(psf)
    return render_profiles(stamp, c + dx, c + dy, 1.0, p.pop('fwhm'),
                           kind=p.get('kind', 'moffat'),
                           beta=p.get('beta', 3.0), ratio=p.get('ratio', 1.0),
                           theta=p.get('theta', 0.0), radius=c)


def selection_quality(x_sel, y_sel, stars, *, radius=1.0, snr_min=0.0):
    """
    Purity and completeness of a PSF-star selection against the truth.

    Parameters
    ----------
    x_sel, y_sel : array_like
        Positions of the selected stars.
    stars : dict
        ``sim['stars']`` from `simulate_psf_field`.
    radius : float
        Matching radius in pixels.
    snr_min : float
        Clean stars below this true SNR are left out of the completeness
        (a selector is not expected to pick stars it calls too faint);
        purity always counts every selected star.

    Returns
    -------
    result : dict
        ``n_selected``, ``n_clean_selected``, ``purity``, ``n_clean``
        (clean stars with SNR >= ``snr_min``) and ``completeness``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation.psf import selection_quality
    >>> stars = dict(x=np.array([10., 30.]), y=np.array([10., 30.]),
    ...              snr=np.array([50., 50.]), clean=np.array([True, False]))
    >>> selection_quality([10.2, 30.1], [9.9, 30.], stars)['purity']
    0.5
    """
    x_sel = np.asarray(x_sel, float)
    y_sel = np.asarray(y_sel, float)
    it, idet, _ = match_sources(stars['x'], stars['y'], x_sel, y_sel,
                                radius=radius)
    good = stars['clean'][it]
    n_sel = len(x_sel)
    want = stars['clean'] & (stars['snr'] >= snr_min)
    n_clean = int(want.sum())
    hit = np.zeros(len(stars['x']), bool)
    hit[it[good]] = True
    return {'n_selected': n_sel, 'n_clean_selected': int(good.sum()),
            'purity': float(good.sum() / n_sel) if n_sel else np.nan,
            'n_clean': n_clean,
            'completeness': float((hit & want).sum() / n_clean)
            if n_clean else np.nan}


def _one_blas_thread():
    """
    Limit BLAS to one thread (if threadpoolctl is installed): the many
    small linear-algebra calls of EPSFBuilder run far slower when BLAS
    threads compete for busy cores.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1)


def build_epsf(data, x, y, *, size=25, oversampling=4, maxiters=10,
               local_sky=False):
    """
    Build an ePSF with `~photutils.psf.EPSFBuilder` from stars at
    ``(x, y)`` of a background-subtracted image.

    With ``local_sky=True`` each star's cutout also has its own sky
    subtracted (a plane fitted to its 2-pixel border), as
    `~cnnfind.PSFStarSelector.extract_stars` does.

    Returns the `~photutils.psf.ImagePSF` (or `None` with fewer than two
    usable stars).
    """
    import warnings

    from astropy.nddata import NDData
    from astropy.table import Table
    from photutils.psf import EPSFBuilder, extract_stars
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if len(x) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        stars = extract_stars(NDData(np.asarray(data, float)),
                              Table({'x': x, 'y': y}), size=size)
        if local_sky:
            from cnnfind.psfstars._features import _subtract_local_sky
            stars = _subtract_local_sky(stars)
        if len(stars) < 2:
            return None
        builder = EPSFBuilder(oversampling=oversampling, maxiters=maxiters,
                              progress_bar=False)
        with _one_blas_thread():
            result = builder(stars)
    return result[0] if isinstance(result, tuple) else getattr(
        result, 'epsf', result)


def epsf_residual(epsf, psf, *, size=25, n_phase=3):
    """
    RMS difference between an ePSF model and the true PSF.

    Both are sampled on a ``size`` x ``size`` pixel grid at
    ``n_phase`` x ``n_phase`` sub-pixel phases and normalised to unit
    sum; the ePSF's position is fitted (so a constant centring offset is
    not counted). The RMS is in units of the true PSF's peak pixel.

    Parameters
    ----------
    epsf : `~photutils.psf.ImagePSF` or `None`
        The model (`None` gives NaN).
    psf : dict
        The true PSF parameters (``sim['psf']``).

    Returns
    -------
    rms : float
    """
    from scipy.optimize import minimize
    if epsf is None:
        return np.nan
    c = size // 2
    yy, xx = np.mgrid[:size, :size].astype(float)
    phases = (np.arange(n_phase) + 0.5) / n_phase - 0.5
    truth = [(px, py, true_psf_stamp(psf, size, px, py))
             for py in phases for px in phases]
    peak = max(t[2].max() for t in truth)

    def model(px, py, sx, sy):
        m = epsf.evaluate(xx, yy, 1.0, c + px + sx, c + py + sy)
        s = m.sum()
        return m / s if s > 0 else m

    def cost(s):
        return sum(np.sum((model(px, py, *s) - t)**2) for px, py, t in truth)

    best = minimize(cost, [0.0, 0.0], method='Nelder-Mead',
                    options=dict(xatol=1e-3, fatol=1e-12, maxiter=200))
    return float(np.sqrt(best.fun / (len(truth) * size * size)) / peak)


_SEX_PARAMS = ('X_IMAGE', 'Y_IMAGE', 'XWIN_IMAGE', 'YWIN_IMAGE',
               'FLUX_APER(1)', 'FLUXERR_APER(1)', 'FLUX_RADIUS',
               'ELONGATION', 'FLAGS', 'SNR_WIN', 'FLUX_MAX')


def psfex_selection(image, *, saturation=None, gain=0.0, vignet=35,
                    psf_size=25, detect_thresh=5.0, conv=None, nnw=None,
                    workdir=None):
    """
    The stars PSFEx itself selects (``FLAGS_PSF == 0`` in its output
    catalogue), after a SExtractor FITS_LDAC run.

    Needs the ``source-extractor`` (or ``sex``) and ``psfex``
    executables. PSFEx runs with its default selection settings and a
    constant PSF (``PSFVAR_DEGREES 0``).

    Parameters
    ----------
    image : 2D `~numpy.ndarray`
        The image (SExtractor estimates and subtracts the background).
    saturation : float or `None`
        ``SATUR_LEVEL`` for SExtractor (saturated sources are flagged
        and PSFEx drops them); `None` uses SExtractor's default.
    gain : float
        ``GAIN`` for SExtractor (0: infinite).
    vignet, psf_size : int
        SExtractor ``VIGNET`` size and PSFEx ``PSF_SIZE``.
    detect_thresh : float
        SExtractor ``DETECT_THRESH``.
    conv, nnw : str or `None`
        SExtractor filter and star/galaxy network files (default: the
        ones in SExtractor's share folder, if found).
    workdir : path or `None`
        Folder for the intermediate files (default: a temporary one).

    Returns
    -------
    result : dict
        ``x, y`` (0-based) of the accepted stars, ``n_candidates`` (the
        SExtractor detections), ``flags`` (FLAGS_PSF of every
        detection), ``psf_file`` (the PSFEx model, if kept in
        ``workdir``), ``seconds`` (wall time of SExtractor + PSFEx).
    """
    import shutil
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    from astropy.io import fits
    sex = shutil.which('source-extractor') or shutil.which('sex')
    psfex = shutil.which('psfex')
    if sex is None or psfex is None:
        msg = 'psfex_selection needs the source-extractor and psfex programs'
        raise RuntimeError(msg)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory()
        workdir = tmp.name
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    share = Path('/usr/share/source-extractor')
    conv = conv or (share / 'gauss_2.0_5x5.conv')
    nnw = nnw or (share / 'default.nnw')
    fits.writeto(wd / 'image.fits', np.asarray(image, np.float32),
                 overwrite=True)
    (wd / 'psf.param').write_text(
        '\n'.join(_SEX_PARAMS + (f'VIGNET({vignet},{vignet})',)) + '\n')
    t0 = time.perf_counter()
    cmd = [sex, str(wd / 'image.fits'), '-CATALOG_NAME', str(wd / 'cat.ldac'),
           '-CATALOG_TYPE', 'FITS_LDAC', '-PARAMETERS_NAME',
           str(wd / 'psf.param'), '-FILTER_NAME', str(conv), '-STARNNW_NAME',
           str(nnw), '-PHOT_APERTURES', '10', '-DETECT_THRESH',
           str(detect_thresh), '-GAIN', str(gain), '-CHECKIMAGE_TYPE', 'NONE',
           '-VERBOSE_TYPE', 'QUIET']
    if saturation is not None:
        cmd += ['-SATUR_LEVEL', str(saturation)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=wd)
    cmd = [psfex, str(wd / 'cat.ldac'), '-OUTCAT_TYPE', 'FITS_LDAC',
           '-OUTCAT_NAME', str(wd / 'psfex_out.cat'), '-CHECKPLOT_TYPE',
           'NONE', '-CHECKIMAGE_TYPE', 'NONE', '-WRITE_XML', 'N',
           '-PSF_SIZE', f'{psf_size},{psf_size}', '-PSFVAR_DEGREES', '0',
           '-PSF_DIR', str(wd), '-VERBOSE_TYPE', 'QUIET']
    subprocess.run(cmd, check=True, capture_output=True, cwd=wd)
    seconds = time.perf_counter() - t0
    with fits.open(wd / 'psfex_out.cat') as hdul:
        t = hdul['LDAC_OBJECTS'].data
        flags = np.asarray(t['FLAGS_PSF'])
        x = np.asarray(t['X_IMAGE'], float) - 1.0
        y = np.asarray(t['Y_IMAGE'], float) - 1.0
    ok = flags == 0
    out = {'x': x[ok], 'y': y[ok], 'n_candidates': len(flags),
           'flags': flags, 'seconds': seconds,
           'psf_file': None if tmp else str(wd / 'cat.psf')}
    if tmp is not None:
        tmp.cleanup()
    return out
