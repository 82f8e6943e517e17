"""
Training patches for the star-finder network: stars injected into
simulated skies and into real backgrounds from ``../shared/data/real``,
with the negatives that defeat classical finders, and their centre
heatmap targets and loss weights. Numpy only.
"""

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from cnnfind.detection._background import _LocalBackground
from cnnfind.detection._input import _network_input
from cnnfind.runtime.normalize import robust_sky_noise, valid_pixel_mask
from cnnfind.simulation.fields import FieldConfig, simulate_field

__all__ = ['REAL_BACKGROUNDS', 'default_data_dir', 'load_backgrounds',
           'make_patch', 'ASINH_SCALE', 'FWHM_REF']

#: Input contract of the star-finder network (written in its card):
#: normalised image and validity channels (the shipped model); 3 adds the
#: matched-filter SNR channel (``--input-channels 3``, an experiment).
ASINH_SCALE = 3.0
FWHM_REF = 3.0
N_CHANNELS = 2

#: Real frames used as backgrounds, with the SExtractor catalogue whose
#: sources are excluded from the loss. The M67 plate and the SEP frame
#: are deliberately absent: they are kept for evaluation.
REAL_BACKGROUNDS = {
    'astropy-data/tutorials_FITS-images_HorseHead.fits':
        'astropy-data_HorseHead_dss.cat',
    'astropy-data/visualization_reprojected_sdss_r.fits.bz2':
        'astropy-data_sdss_r.cat',
    'debian-eso-midas-testdata/ISAAC.2006-04-13T06_32_38.944.fits':
        'eso-midas_ISAAC.cat',
    'pypi-package-testdata/ccdproc_a8280271_saao1m_raw.fits':
        'ccdproc_saao_raw.cat',
    'pypi-package-testdata/astroquery_ukidss_wfcam_K_taurus.fits':
        'astroquery_ukidss_K.cat',
    'photutils-datasets/isophote_M51.fits':
        'photutils-datasets_M51_iraf_devpix.cat',
    'astropy-data/photometry_spitzer_example_image.fits':
        'astropy-data_spitzer_glimpse_irac2.cat',
    'debian-eso-midas-testdata/dss_test1.fits': 'eso-midas_dss_test1.cat',
}


def default_data_dir():
    """The shared data folder beside the project root, or `None`."""
    env = os.environ.get('CNNFIND_DATA')
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[3] / 'shared' / 'data'
    return here if here.is_dir() else None


def _read_sextractor(path):
    """X, Y (0-based) and exclusion radius of each catalogue source."""
    names, rows = [], []
    for line in Path(path).read_text().splitlines():
        if line.startswith('#'):
            names.append(line.split()[2])
        elif line.strip():
            rows.append([float(v) for v in line.split()[:len(names)]])
    arr = np.array(rows).reshape(-1, len(names))
    col = {n: arr[:, i] for i, n in enumerate(names)}
    radius = np.clip(np.maximum(1.5 * col['FWHM_IMAGE'],
                                np.sqrt(col['ISOAREA_IMAGE'] / np.pi) + 2),
                     3, 25)
    return col['X_IMAGE'] - 1, col['Y_IMAGE'] - 1, radius


def _unlisted_exclusion(img, cat_x, cat_y, snr, fwhm=2.5, box=32):
    """
    Discs (radius 1.5 ``fwhm``) around the significant peaks of a real
    frame that its catalogue does not list.

    A peak counts when the matched filter (FWHM ``fwhm``) of the frame
    minus a ``box``-pixel mesh background exceeds ``snr`` times the
    filtered map's own clipped standard deviation, which makes the cut
    the same for white and for correlated (plate, resampled) noise.
    Such peaks are mostly faint real sources the catalogue is too
    shallow to hold: labelling them negatives would teach the network
    that faint stars are not stars.
    """
    from astropy.stats import sigma_clipped_stats
    from photutils.background import Background2D

    from cnnfind.detection._input import _matched_filter_snr
    from cnnfind.training.survey import _discs, _unlisted_peaks
    valid = np.isfinite(img)
    work = np.where(valid, img, np.median(img[valid])).astype(np.float32)
    resid = work - Background2D(work, box, filter_size=(3, 3)).background
    _, noise = robust_sky_noise(img, valid)
    _, _, spread = sigma_clipped_stats(
        _matched_filter_snr((resid / noise).astype(np.float32), fwhm))
    px, py = _unlisted_peaks(resid, valid, 0.0, noise * spread, fwhm,
                             cat_x, cat_y, snr)
    return _discs(img.shape, px, py, np.full(len(px), 1.5 * fwhm))


def load_backgrounds(data_dir=None, unlisted_snr=None):
    """
    Load the real background frames and their source exclusion lists.

    The exclusion map covers the catalogue's sources and, with
    ``unlisted_snr``, also the peaks above that significance that the
    catalogue does not list (see `_unlisted_exclusion`). Returns an empty
    list if the shared data are absent.
    """
    from astropy.io import fits
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    if data_dir is None:
        return []
    out = []
    for rel, cat in REAL_BACKGROUNDS.items():
        img_path = data_dir / 'real' / rel
        cat_path = data_dir / 'real' / 'sextractor-reference' / cat
        if not img_path.exists() or not cat_path.exists():
            continue
        with fits.open(img_path) as hdul:
            hdu = next(h for h in hdul if h.data is not None
                       and h.data.ndim == 2)
            img = hdu.data.astype(np.float32)
        x, y, r = _read_sextractor(cat_path)
        excl = np.zeros(img.shape, bool)
        yy, xx = np.ogrid[:img.shape[0], :img.shape[1]]
        for xi, yi, ri in zip(x, y, r, strict=True):
            y0, y1 = int(max(yi - ri, 0)), int(min(yi + ri + 1, img.shape[0]))
            x0, x1 = int(max(xi - ri, 0)), int(min(xi + ri + 1, img.shape[1]))
            sub = ((xx[:, x0:x1] - xi)**2 + (yy[y0:y1] - yi)**2) <= ri**2
            excl[y0:y1, x0:x1] |= sub
        if unlisted_snr is not None:
            excl |= _unlisted_exclusion(img, x, y, unlisted_snr)
        out.append((rel, img, excl))
    return out


def _random_config(rng, size):
    """A random field recipe spanning the conditions cnnfind must handle."""
    fwhm = float(np.exp(rng.uniform(np.log(1.3), np.log(9.0))))
    mpix = size * size / 1e6
    sky = float(np.exp(rng.uniform(np.log(5.0), np.log(5000.0))))
    cfg = FieldConfig(
        density=float(np.exp(rng.uniform(np.log(30.0), np.log(8000.0))))
        / max(fwhm / 3.0, 1.0) ** 2,
        fwhm=fwhm,
        psf_kind='moffat' if rng.random() < 0.7 else 'gaussian',
        beta=float(rng.uniform(2.0, 5.0)),
        ratio=float(rng.uniform(0.7, 1.0)) if rng.random() < 0.6 else 1.0,
        theta=float(rng.uniform(0, np.pi)),
        snr_min=1.0,
        snr_max=float(10 ** rng.uniform(1.5, 4.0)),
        snr_slope=float(rng.uniform(1.2, 2.0)),
        sky=sky, read_noise=float(rng.uniform(2.0, 10.0)),
        gain=float(rng.uniform(0.8, 3.0)),
        bias=float(rng.uniform(0, 1000)),
        n_cosmic=int(rng.poisson(rng.uniform(0, 3000) * mpix))
        if rng.random() < 0.6 else 0,
        n_hot=int(rng.poisson(rng.uniform(0, 1000) * mpix))
        if rng.random() < 0.4 else 0,
        n_galaxies=int(rng.poisson(rng.uniform(0, 600) * mpix))
        if rng.random() < 0.5 else 0,
        gradient=float(rng.uniform(0, 60)) if rng.random() < 0.4 else 0.0,
        nebula=float(rng.uniform(0, 100)) if rng.random() < 0.3 else 0.0,
        n_bad_columns=int(rng.integers(1, 3)) if rng.random() < 0.15 else 0)
    if rng.random() < 0.3:
        cfg.saturation = float(cfg.bias + rng.uniform(20, 400)
                               * np.sqrt(sky + 25) / cfg.gain)
    return cfg


def _draw_targets(shape, x, y, positive, ignore_xy, sigma=0.8):
    """Centre heatmap (1 at each star's pixel) and an ignore map."""
    target = np.zeros(shape, np.float32)
    ignore = np.zeros(shape, bool)
    ny, nx = shape
    r = 2
    for xi, yi in zip(x[positive], y[positive], strict=True):
        ix, iy = int(np.round(xi)), int(np.round(yi))
        for jy in range(max(iy - r, 0), min(iy + r + 1, ny)):
            for jx in range(max(ix - r, 0), min(ix + r + 1, nx)):
                d2 = (jx - xi)**2 + (jy - yi)**2
                v = 1.0 if (jx == ix and jy == iy) else np.exp(-0.5 * d2 / sigma**2)
                if v > target[jy, jx]:
                    target[jy, jx] = v
    for xi, yi in ignore_xy:
        ix, iy = int(np.round(xi)), int(np.round(yi))
        ignore[max(iy - r, 0):iy + r + 1, max(ix - r, 0):ix + r + 1] = True
    return target, ignore


def make_patch(rng, size=128, backgrounds=(), p_real=0.3, snr_pos=3.0,
               snr_ignore=2.0, max_tries=10, n_channels=N_CHANNELS, *,
               sky_jitter=0.3, noise_jitter=0.15, sharp_artefacts=True,
               mesh_sky=False):
    """
    One training example.

    Returns
    -------
    x : float32 array (n_channels, size, size)
        Normalised image and validity channels (and, with
        ``n_channels=3``, the matched-filter SNR).
    fwhm_in : float32
        The FWHM input, ``log(fwhm_hint / FWHM_REF)``, with the hint
        jittered around the true FWHM as users' guesses are.
    target, weight : float32 arrays (size, size)
        Centre heatmap and per-pixel loss weight (0 = ignored).

    Notes
    -----
    The sky level given to the network is off by a normal deviate of
    ``sky_jitter`` times the noise, and the noise by a log-normal factor
    of width ``noise_jitter``, so that the network learns not to trust
    them blindly. ``sharp_artefacts=False`` leaves out cosmic rays and hot
    pixels (an experiment: what they cost the faint stars).
    ``mesh_sky=True`` subtracts the background mesh that
    `~cnnfind.CNNStarFinder` subtracts (with the same jitter added)
    instead of the patch's global sky.
    """
    recipe = {'sky_jitter': sky_jitter, 'noise_jitter': noise_jitter,
              'sharp_artefacts': sharp_artefacts, 'mesh_sky': mesh_sky}
    for _ in range(max_tries - 1):
        try:
            return _make_patch_once(rng, size, backgrounds, p_real, snr_pos,
                                    snr_ignore, n_channels, **recipe)
        except ValueError:
            # A patch that cannot be normalised (e.g. a real crop that is
            # saturated or masked throughout): draw another one.
            continue
    return _make_patch_once(rng, size, backgrounds, p_real, snr_pos,
                            snr_ignore, n_channels, **recipe)


def real_background_crop(rng, backgrounds, size):
    """
    A random ``size`` x ``size`` crop of one of the real ``backgrounds``
    (from `load_backgrounds`) and of its source-exclusion map, or
    ``(None, None)`` when the frame is too small or the crop is not
    usable (non-finite or constant).
    """
    _, img, excl = backgrounds[rng.integers(len(backgrounds))]
    if img.shape[0] > size and img.shape[1] > size:
        y0 = rng.integers(0, img.shape[0] - size)
        x0 = rng.integers(0, img.shape[1] - size)
        background = img[y0:y0 + size, x0:x0 + size]
        if np.isfinite(background).all() and np.ptp(background) > 0:
            return background, excl[y0:y0 + size, x0:x0 + size]
    return None, None


def draw_field(rng, size, backgrounds=(), p_real=0.3, *,
               sharp_artefacts=True):
    """
    One random-recipe training field: simulated stars and artefacts on a
    simulated sky or (with probability ``p_real``) on a crop of a real
    frame, and with probability 0.15 correlated noise (as in resampled
    images and photographic plates).

    Returns
    -------
    field : dict
        ``cfg`` (the recipe), ``sim`` (`simulate_field`'s result),
        ``image`` and ``mask`` (the image as observed), ``fwhm`` (the
        FWHM seen in it) and ``exclusion`` (the real sources of the real
        crop, or `None`).
    """
    cfg = _random_config(rng, size)
    if not sharp_artefacts:
        cfg.n_cosmic = cfg.n_hot = 0
    bg_excl = None
    background = None
    if backgrounds and rng.random() < p_real:
        background, bg_excl = real_background_crop(rng, backgrounds, size)
        if background is not None:
            cfg.n_bad_columns = 0
            cfg.saturation = None
            cfg.gradient = cfg.nebula = 0.0
            cfg.gain = 1.0
    try:
        sim = simulate_field((size, size), cfg, seed=rng,
                             background=background)
    except ValueError:
        background, bg_excl = None, None
        sim = simulate_field((size, size), cfg, seed=rng)
    img = sim['image'].copy()
    fwhm_seen = cfg.fwhm
    if rng.random() < 0.15:  # correlated noise (resampled images, plates)
        s = float(rng.uniform(0.4, 0.8))
        img = ndimage.gaussian_filter(img, s).astype(np.float32)
        fwhm_seen = float(np.hypot(cfg.fwhm, 2.3548 * s))
    return {'cfg': cfg, 'sim': sim, 'image': img,
            'mask': sim['mask'].copy(), 'fwhm': fwhm_seen,
            'exclusion': bg_excl}


def _make_patch_once(rng, size, backgrounds, p_real, snr_pos, snr_ignore,
                     n_channels, *, sky_jitter, noise_jitter,
                     sharp_artefacts, mesh_sky):
    """One attempt at `make_patch`; `ValueError` if it cannot be used."""
    field = draw_field(rng, size, backgrounds, p_real,
                       sharp_artefacts=sharp_artefacts)
    cfg, sim, img, mask = (field[k] for k in ('cfg', 'sim', 'image', 'mask'))
    fwhm_seen, bg_excl = field['fwhm'], field['exclusion']
    if rng.random() < 0.15:  # masked blobs (NaN) from bad regions
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, size, 2)
            h, w = rng.integers(1, 12, 2)
            img[cy:cy + h, cx:cx + w] = np.nan
    valid = valid_pixel_mask(img, mask)
    sky, noise = robust_sky_noise(img, valid)
    offset = rng.normal(0, sky_jitter) * noise
    true_noise = noise
    noise *= float(np.exp(rng.normal(0, noise_jitter)))
    hint = fwhm_seen * float(np.exp(rng.normal(0, 0.1)))
    if mesh_sky:
        # The finder's own background, with the user's FWHM (the hint).
        sky = _LocalBackground(img, valid, sky, true_noise, hint).image(
            (slice(0, size), slice(0, size)))
    sky = sky + offset
    x = _network_input(img, valid, sky, noise, ASINH_SCALE, hint, n_channels)

    st = sim['stars']
    # Labels use the true matched-filter SNR against the local noise.
    sx, sy, snr = st['x'], st['y'], st['snr']
    inside = (sx > -0.5) & (sx < size - 0.5) & (sy > -0.5) & (sy < size - 0.5)
    ix = np.clip(np.round(sx).astype(int), 0, size - 1)
    iy = np.clip(np.round(sy).astype(int), 0, size - 1)
    centre_valid = valid[iy, ix]
    positive = inside & (snr >= snr_pos) & centre_valid
    ambiguous = ((snr >= snr_ignore) & ~positive) | (
        ~inside & (snr >= snr_ignore))
    ignore_xy = list(zip(sx[ambiguous], sy[ambiguous], strict=True))
    target, ignore = _draw_targets((size, size), sx, sy, positive, ignore_xy)

    weight = np.ones((size, size), np.float32)
    cosmic = sim['artefacts']['cosmic'] > 3 * sim['noise']
    weight[cosmic] = 3.0
    g = sim['artefacts']['galaxies']
    for gx, gy in zip(g['x'], g['y'], strict=True):
        r = int(np.ceil(2 * cfg.fwhm)) + 2
        gx, gy = int(gx), int(gy)
        weight[max(gy - r, 0):gy + r + 1, max(gx - r, 0):gx + r + 1] = 3.0
    weight[ignore] = 0.0
    if bg_excl is not None:
        weight[bg_excl & (target < 0.5)] = 0.0
    weight *= 1.0 + 20.0 * target
    fwhm_in = np.float32(np.log(hint / FWHM_REF))
    return x, fwhm_in, target, weight
