"""
Training and evaluation sets from survey images and star catalogues
(AstrID-style).

Each field becomes one FITS file with four HDUs:

``IMAGE`` (primary)
    The image and its celestial WCS header.
``CATALOG``
    The catalogue stars (binary table): ``ra``, ``dec``, ``x``, ``y``
    (0-based pixels through the image WCS), ``mag``, ``in_image``,
    ``sigma`` (the target spot width) and ``role`` (``target``,
    ``ignored`` or ``outside``).
``TARGET``
    The centre heatmap: 1 at each star's pixel and a Gaussian spot whose
    width grows with the star's brightness (`spot_sigma`).
``WEIGHT``
    The per-pixel loss weight: 0 where the loss must ignore the image
    (invalid pixels, saturated or too bright stars, stars fainter than
    the faint limit, stars just outside the image), else
    ``1 + 20 * TARGET`` as in the star-finder training.

The builder works offline on an image and a catalogue the user already
has (`build_field`, `build_from_files`) and online with ``astroquery``
(an optional dependency): images from SkyView and catalogues (Gaia DR3,
2MASS) from VizieR, for given or random positions (`build_survey_set`).
Numpy/astropy only; nothing here imports torch.
"""

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import QTable, Table
from astropy.wcs import WCS, FITSFixedWarning

from cnnfind.exceptions import CNNFindWarning
from cnnfind.runtime.normalize import robust_sky_noise, valid_pixel_mask
from cnnfind.training.targets import _clipped_box, heatmap_from_catalog

__all__ = ['CATALOGS', 'FetchError', 'spot_sigma', 'build_field',
           'read_field', 'build_from_files', 'random_positions',
           'skyview_image', 'vizier_catalog', 'build_survey_set']

#: VizieR catalogues known to the online builder: table, RA/Dec and
#: magnitude columns.
CATALOGS = {
    'gaia': {'vizier': 'I/355/gaiadr3', 'ra': 'RA_ICRS', 'dec': 'DE_ICRS',
             'mag': 'Gmag'},
    '2mass': {'vizier': 'II/246/out', 'ra': 'RAJ2000', 'dec': 'DEJ2000',
              'mag': 'Jmag'},
}

#: Header keywords read as the saturation level by ``saturation='auto'``.
_SATURATION_KEYS = ('SATURATE', 'SATURATA', 'SATURATB', 'SATLEVEL')

#: Spot width of a star at the faint limit (the star-finder training's).
BASE_SIGMA = 0.8
#: Largest spot width.
MAX_SIGMA = 4.0


def spot_sigma(mag, faint_limit, fwhm, *, base=BASE_SIGMA, maximum=MAX_SIGMA):
    """
    Width (pixels) of each star's target spot, from its magnitude.

    The rule: a star ``dm = faint_limit - mag`` magnitudes brighter than
    the field's faint limit has a flux ``10**(0.4 dm)`` times larger, so
    a Gaussian PSF of the given FWHM (``sigma_psf = fwhm / 2.3548``)
    stays above the faint-limit star's peak out to the radius
    ``r = sigma_psf * sqrt(0.8 ln(10) dm)``. The spot's Gaussian width
    is half that radius, at least ``base`` (the width used for all stars
    in the star-finder training) and at most ``maximum``.

    Parameters
    ----------
    mag : array-like
        Magnitudes.
    faint_limit : float
        Magnitude of the faintest stars that count as targets.
    fwhm : float
        PSF FWHM in pixels.
    base, maximum : float, optional
        Smallest and largest spot width.

    Returns
    -------
    sigma : `~numpy.ndarray`

    Examples
    --------
    >>> from cnnfind.training.survey import spot_sigma
    >>> spot_sigma([20.0, 15.0, 5.0], 20.0, 4.0).round(2).tolist()
    [0.8, 2.58, 4.0]
    """
    dm = np.clip(float(faint_limit) - np.asarray(mag, dtype=float), 0, None)
    r = float(fwhm) / 2.3548 * np.sqrt(0.8 * np.log(10.0) * dm)
    return np.clip(0.5 * r, base, maximum)


def _saturation_level(header, saturation):
    """The saturation level: a number, `None`, or read from ``header``."""
    if saturation != 'auto':
        return None if saturation is None else float(saturation)
    if header is None:
        return None
    levels = [float(header[k]) for k in _SATURATION_KEYS if k in header]
    return min(levels) if levels else None


def _estimate_fwhm(data, valid, sky, noise, x, y, mag, saturation):
    """
    Median core FWHM (pixels) of up to 30 bright unsaturated catalogue
    stars inside the image, or `None` when fewer than three can be fit.
    """
    from cnnfind.psfstars._features import _core_fwhm
    ny, nx = data.shape
    inside = (x > 6) & (x < nx - 7) & (y > 6) & (y < ny - 7)
    idx = np.flatnonzero(inside)
    if len(idx) == 0:
        return None
    ix, iy = np.round(x[idx]).astype(int), np.round(y[idx]).astype(int)
    peak = data[iy, ix] - sky
    ok = valid[iy, ix] & (peak > 10 * noise)
    if saturation is not None:
        ok &= data[iy, ix] < 0.8 * saturation
    idx = idx[ok][np.argsort(mag[idx][ok])][:30]
    if len(idx) < 3:
        return None
    fw = _core_fwhm(data, valid, sky, x[idx], y[idx], 5.0)
    fw = fw[np.isfinite(fw) & (fw > 0.8) & (fw < 20)]
    return float(np.median(fw)) if len(fw) >= 3 else None


def _unlisted_peaks(data, valid, sky, noise, fwhm, cx, cy, snr):
    """
    Local maxima of the matched-filter SNR map (the star finder's, see
    `cnnfind.detection._input`) above ``snr`` that lie more than 1.5 FWHM
    from every catalogue position ``(cx, cy)``.
    """
    from scipy import ndimage
    from scipy.spatial import cKDTree

    from cnnfind.detection._input import _matched_filter_snr
    resid = np.where(valid, (data - sky) / noise, 0.0).astype(np.float32)
    sm = _matched_filter_snr(resid, fwhm)
    peak = (sm == ndimage.maximum_filter(sm, size=3)) & (sm >= snr) & valid
    py, px = np.nonzero(peak)
    if len(px) and len(cx):
        d, _ = cKDTree(np.column_stack([cx, cy])).query(
            np.column_stack([px, py]))
        far = d > 1.5 * fwhm
        px, py = px[far], py[far]
    return px.astype(float), py.astype(float)


def _discs(shape, x, y, radius):
    """Boolean map of the union of discs."""
    out = np.zeros(shape, bool)
    for xi, yi, ri in zip(x, y, radius, strict=True):
        r = int(np.ceil(ri))
        box = _clipped_box(int(np.round(xi)), int(np.round(yi)), r, shape)
        if box is None:
            continue
        y0, y1, x0, x1 = box
        yy, xx = np.ogrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] |= (xx - xi)**2 + (yy - yi)**2 <= ri**2
    return out


def _table_columns(catalog, ra, dec, mag):
    """RA, Dec (deg) and magnitudes from a table or a SkyCoord."""
    if isinstance(catalog, SkyCoord):
        if mag is None or isinstance(mag, str):
            msg = 'with a SkyCoord catalogue, mag must be an array'
            raise ValueError(msg)
        return (catalog.icrs.ra.deg, catalog.icrs.dec.deg,
                np.asarray(mag, dtype=float))
    missing = [c for c in (ra, dec, mag) if c not in catalog.colnames]
    if missing:
        msg = (f'catalogue has no column(s) {missing}; it has '
               f'{catalog.colnames}: pass ra=, dec=, mag=')
        raise ValueError(msg)

    def deg(col):
        col = catalog[col]
        if hasattr(col, 'unit') and col.unit is not None:
            return u.Quantity(col).to_value(u.deg)
        return np.asarray(col, dtype=float)

    magv = catalog[mag]
    magv = np.ma.filled(np.ma.asarray(getattr(magv, 'value', magv), float),
                        np.nan)
    return deg(ra), deg(dec), np.asarray(magv, float)


def build_field(image, wcs, catalog, *, ra='ra', dec='dec',
                mag='phot_g_mean_mag', fwhm=None, faint_limit=None,
                bright_limit=None, saturation='auto', unlisted='ignore',
                unlisted_snr=5.0, header=None, meta=None):
    """
    One field's training file (image, catalogue, target and weight).

    Parameters
    ----------
    image : 2D array-like
        The image (NaN for bad pixels).
    wcs : `~astropy.wcs.WCS`
        Its celestial WCS.
    catalog : `~astropy.table.Table` or `~astropy.coordinates.SkyCoord`
        The stars: a table with RA/Dec (degrees) and magnitude columns,
        or sky coordinates (then ``mag`` is an array of magnitudes).
    ra, dec, mag : str
        Column names (``mag`` may be an array with a `SkyCoord`).
    fwhm : float, optional
        PSF FWHM in pixels. When `None`: the median core FWHM of the
        bright catalogue stars, else the header's ``SEEING`` (arcsec)
        over the pixel scale, else 3 pixels (with a warning).
    faint_limit : float, optional
        Stars fainter than this are not targets; the loss ignores a
        small disc around them. Default: the faintest catalogue star in
        the image (every listed star is a target).
    bright_limit : float, optional
        Stars brighter than this are ignored by the loss (a disc twice
        their spot radius plus the FWHM).
    saturation : float, 'auto' or `None`
        Stars with a pixel at or above this level within their spot are
        ignored like too bright stars. 'auto' reads ``SATURATE`` (or
        ``SATURATA``/``SATURATB``/``SATLEVEL``) from ``header``.
    unlisted : {'ignore', 'negative'}, optional
        What the loss does with sources of the image that are not in
        the catalogue (galaxies, or stars fainter than its limit when
        the image is deeper, as DECam images are than Gaia): 'ignore'
        (default) sets the weight to 0 around every peak of the
        matched-filtered image above ``unlisted_snr`` that lies more
        than 1.5 FWHM from a catalogue star; 'negative' keeps them as
        negatives (right only when the catalogue lists everything the
        image shows as a star).
    unlisted_snr : float, optional
        Detection threshold (matched-filter SNR) of the unlisted peaks.
    header : `~astropy.io.fits.Header`, optional
        The image header, kept in the output (and read for saturation).
    meta : dict, optional
        Extra header keywords for the primary HDU (e.g. provenance).

    Returns
    -------
    hdul : `~astropy.io.fits.HDUList`
        ``IMAGE``, ``CATALOG``, ``TARGET`` and ``WEIGHT``.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.table import Table
    >>> from astropy.wcs import WCS, FITSFixedWarning
    >>> from cnnfind.training.survey import build_field
    >>> wcs = WCS(naxis=2)
    >>> wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    >>> wcs.wcs.crval = [150.0, 2.0]
    >>> wcs.wcs.crpix = [32.5, 32.5]
    >>> wcs.wcs.cdelt = [-1e-4, 1e-4]
    >>> image = np.random.default_rng(0).normal(100.0, 5.0, (64, 64))
    >>> cat = Table({'ra': [150.0, 150.001], 'dec': [2.0, 2.001],
    ...              'mag': [15.0, 18.0]})
    >>> hdul = build_field(image, wcs, cat, mag='mag', fwhm=3.0)
    >>> [h.name for h in hdul]
    ['IMAGE', 'CATALOG', 'TARGET', 'WEIGHT']
    >>> hdul['CATALOG'].data['role'].tolist()
    ['target', 'target']
    """
    if unlisted not in ('ignore', 'negative'):
        msg = f"unlisted must be 'ignore' or 'negative', not {unlisted!r}"
        raise ValueError(msg)
    data = np.asarray(image, dtype=np.float32)
    if data.ndim != 2:
        msg = f'image must be 2-D, not {data.ndim}-D'
        raise ValueError(msg)
    if not wcs.has_celestial:
        msg = 'the image WCS has no celestial axes'
        raise ValueError(msg)
    wcs = wcs.celestial
    valid = valid_pixel_mask(data)
    if not valid.any():
        msg = 'the image has no valid pixels'
        raise ValueError(msg)
    sky, noise = robust_sky_noise(data, valid)
    ra_deg, dec_deg, magv = _table_columns(catalog, ra, dec, mag)
    ny, nx = data.shape
    coords = SkyCoord(ra_deg, dec_deg, unit='deg')
    x, y = (np.asarray(a, float) for a in wcs.world_to_pixel(coords))
    good = np.isfinite(x) & np.isfinite(y) & np.isfinite(magv)
    inside = good & (x > -0.5) & (x < nx - 0.5) & (y > -0.5) & (y < ny - 0.5)
    sat_level = _saturation_level(header, saturation)
    fwhm_source = 'given'
    if fwhm is None:
        fwhm = _estimate_fwhm(data, valid, sky, noise, np.where(good, x, -99),
                              np.where(good, y, -99), magv, sat_level)
        fwhm_source = 'estimated'
        if fwhm is None and header is not None and 'SEEING' in header:
            # Seeing (arcsec) over the pixel scale.
            scale = u.Quantity(wcs.proj_plane_pixel_scales()).to_value(
                u.arcsec).mean()
            seeing = float(header['SEEING']) / float(scale)
            if 0.5 < seeing < 30:
                fwhm, fwhm_source = seeing, 'header SEEING'
        if fwhm is None:
            warnings.warn('could not estimate the FWHM from the catalogue '
                          'stars; using 3 pixels (pass fwhm=)',
                          CNNFindWarning, stacklevel=2)
            fwhm, fwhm_source = 3.0, 'default'
    fwhm = float(fwhm)
    if faint_limit is None:
        faint_limit = (float(np.max(magv[inside])) if inside.any()
                       else float(np.nanmax(magv)) if good.any() else 0.0)
    sigma = spot_sigma(np.where(good, magv, faint_limit), faint_limit, fwhm)
    reach = np.maximum(3.0 * sigma, fwhm) + 1.0

    near = good & ~inside & (x > -0.5 - reach) & (x < nx - 0.5 + reach) & (
        y > -0.5 - reach) & (y < ny - 0.5 + reach)
    too_faint = inside & (magv > faint_limit)
    too_bright = np.zeros(len(x), bool)
    if bright_limit is not None:
        too_bright |= good & (magv < float(bright_limit))
    if sat_level is not None:
        hot = np.where(valid, data, -np.inf) >= sat_level
        if hot.any():
            for i in np.flatnonzero(good & (inside | near)):
                r = int(np.ceil(reach[i]))
                ix, iy = int(np.round(x[i])), int(np.round(y[i]))
                sub = hot[max(iy - r, 0):iy + r + 1, max(ix - r, 0):ix + r + 1]
                too_bright[i] |= bool(sub.any())
    target_ok = inside & ~too_faint & ~too_bright
    xy = np.column_stack([x, y])
    target, weight = heatmap_from_catalog(data.shape, xy[target_ok],
                                          sigma=sigma[target_ok])
    ignore = _discs(data.shape, x[too_faint], y[too_faint],
                    np.full(too_faint.sum(), max(2.0, fwhm)))
    big = too_bright & (inside | near)
    ignore |= _discs(data.shape, x[big], y[big], 2.0 * reach[big] + fwhm)
    edge = near & ~too_bright
    ignore |= _discs(data.shape, x[edge], y[edge], reach[edge])
    n_unlisted = 0
    if unlisted == 'ignore':
        ux, uy = _unlisted_peaks(data, valid, sky, noise, fwhm,
                                 x[good], y[good], unlisted_snr)
        n_unlisted = len(ux)
        ignore |= _discs(data.shape, ux, uy,
                         np.full(n_unlisted, max(2.0, 1.5 * fwhm)))
    weight[ignore | ~valid] = 0.0
    target[~valid] = 0.0

    role = np.where(target_ok, 'target',
                    np.where(inside | near, 'ignored', 'outside'))
    cat = Table()
    cat['ra'] = ra_deg * u.deg
    cat['dec'] = dec_deg * u.deg
    cat['x'] = x
    cat['y'] = y
    cat['mag'] = magv
    cat['in_image'] = inside
    cat['sigma'] = np.where(target_ok, sigma, np.nan)
    cat['role'] = role.astype('U7')

    head = fits.Header() if header is None else header.copy()
    for key in ('NAXIS1', 'NAXIS2', 'BITPIX', 'BZERO', 'BSCALE', 'EXTNAME',
                'XTENSION', 'PCOUNT', 'GCOUNT', 'INHERIT'):
        head.remove(key, ignore_missing=True, remove_all=True)
    head.update(wcs.to_header(relax=True))
    head['EXTNAME'] = 'IMAGE'
    head['FWHM'] = (fwhm, 'PSF FWHM [pix] used for the target spots')
    head['FWHMSRC'] = (fwhm_source, 'FWHM given, estimated or default')
    head['FAINTLIM'] = (faint_limit, 'faintest target magnitude')
    if bright_limit is not None:
        head['BRIGHTLM'] = (float(bright_limit), 'brighter stars ignored')
    if sat_level is not None:
        head['SATLEVEL'] = (sat_level, 'saturation level used')
    head['SPOTRULE'] = ('0.5*FWHM/2.3548*sqrt(0.8*ln10*(FAINTLIM-mag))',
                        'spot sigma, clipped')
    head['SPOTMIN'] = (BASE_SIGMA, 'smallest spot sigma [pix]')
    head['SPOTMAX'] = (MAX_SIGMA, 'largest spot sigma [pix]')
    head['NTARGET'] = (int(target_ok.sum()), 'catalogue stars used as targets')
    head['UNLISTED'] = (unlisted, 'sources not in the catalogue')
    head['NUNLIST'] = (n_unlisted, 'unlisted peaks ignored by the loss')
    for key, value in (meta or {}).items():
        head[key[:8].upper()] = value
    whead = wcs.to_header(relax=True)
    return fits.HDUList([
        fits.PrimaryHDU(data, header=head),
        fits.BinTableHDU(cat, name='CATALOG'),
        fits.ImageHDU(target, header=whead, name='TARGET'),
        fits.ImageHDU(weight.astype(np.float32), header=whead,
                      name='WEIGHT')])


def read_field(path):
    """
    Read a training file written by the builders.

    Returns
    -------
    field : dict
        ``image``, ``target``, ``weight`` (float32 arrays), ``catalog``
        (`~astropy.table.Table`), ``wcs`` and ``header`` (of the image).
    """
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
        missing = [n for n in ('CATALOG', 'TARGET', 'WEIGHT') if n not in names]
        if missing:
            msg = f'{path} is not a cnnfind training field: no {missing} HDU'
            raise ValueError(msg)
        header = hdul[0].header
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', category=FITSFixedWarning)
            wcs = WCS(header).celestial
        return {'image': hdul[0].data.astype(np.float32),
                'target': hdul['TARGET'].data.astype(np.float32),
                'weight': hdul['WEIGHT'].data.astype(np.float32),
                'catalog': Table(hdul['CATALOG'].data),
                'wcs': wcs, 'header': header.copy()}


def _image_hdu(hdul, hdu=None):
    """The requested HDU, or the first 2-D image HDU."""
    if hdu is not None:
        return hdul[hdu]
    for h in hdul:
        if h.data is not None and getattr(h.data, 'ndim', 0) == 2 and (
                h.is_image):
            return h
    msg = 'no 2-D image HDU found'
    raise ValueError(msg)


def build_from_files(image_path, catalog_paths, out_path, *, hdu=None,
                     ra='ra', dec='dec', mag='phot_g_mean_mag', **kwargs):
    """
    Offline builder: an image file and catalogue file(s) the user has.

    Parameters
    ----------
    image_path : path
        FITS image with a celestial WCS.
    catalog_paths : path or list of paths
        Catalogue table(s) readable by `~astropy.table.Table.read`
        (stacked when several, e.g. Gaia chunks).
    out_path : path
        The training file to write.
    hdu : int or str, optional
        The image HDU (default: the first 2-D image).
    ra, dec, mag : str
        Catalogue column names.
    **kwargs
        Passed to `build_field`.

    Returns
    -------
    out_path : `~pathlib.Path`
    """
    from astropy.table import vstack
    if isinstance(catalog_paths, (str, Path)):
        catalog_paths = [catalog_paths]
    tables = [Table.read(p) for p in catalog_paths]
    catalog = vstack(tables) if len(tables) > 1 else tables[0]
    with fits.open(image_path) as hdul, warnings.catch_warnings():
        warnings.simplefilter('ignore', category=fits.verify.VerifyWarning)
        h = _image_hdu(hdul, hdu)
        data = h.data.astype(np.float32)
        header = h.header.copy()
        if h is not hdul[0]:
            # Inherit the primary header's keywords (e.g. SATURATE).
            for card in hdul[0].header.cards:
                if card.keyword not in header and card.keyword not in (
                        '', 'COMMENT', 'HISTORY', 'SIMPLE', 'EXTEND',
                        'NAXIS', 'BITPIX'):
                    header[card.keyword] = (card.value, card.comment)
    meta = {'SRCIMAGE': Path(image_path).name[:68],
            'SRCCAT': Path(catalog_paths[0]).name[:68]}
    meta.update(kwargs.pop('meta', None) or {})
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=fits.verify.VerifyWarning)
        warnings.simplefilter('ignore', category=FITSFixedWarning)
        hdul = build_field(data, WCS(header), catalog, ra=ra, dec=dec,
                           mag=mag, header=header, meta=meta, **kwargs)
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        hdul.writeto(out_path, overwrite=True)
    return out_path


# -- the star-finder network's input ---------------------------------------
# -- online ----------------------------------------------------------------
def random_positions(n, *, min_abs_b=20.0, seed=None):
    """
    Random sky positions, uniform on the sphere, away from the Galactic
    plane.

    Parameters
    ----------
    n : int
        Number of positions.
    min_abs_b : float, optional
        Smallest absolute Galactic latitude (degrees); 0 allows the
        plane.
    seed : int or `~numpy.random.Generator`, optional

    Returns
    -------
    positions : `~astropy.coordinates.SkyCoord` (ICRS)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.training.survey import random_positions
    >>> pos = random_positions(50, min_abs_b=30, seed=1)
    >>> bool(np.all(np.abs(pos.galactic.b.deg) >= 30))
    True
    """
    if not 0 <= min_abs_b < 90:
        msg = 'min_abs_b must be in [0, 90) degrees'
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    sin_min = math.sin(math.radians(min_abs_b))
    # Uniform in sin(b) over |sin b| >= sin_min: no rejection needed.
    s = rng.uniform(sin_min, 1.0, n) * rng.choice([-1.0, 1.0], n)
    b = np.degrees(np.arcsin(s))
    lon = rng.uniform(0.0, 360.0, n)
    return SkyCoord(l=lon * u.deg, b=b * u.deg, frame='galactic').icrs


class FetchError(RuntimeError):
    """A query failed after all its retries."""


def _retry(func, *, retries, backoff, sleep, log, what):
    """
    Call ``func()`` up to ``retries + 1`` times, sleeping ``backoff``,
    ``2 backoff``, ``4 backoff``... between failures.

    Returns ``(result, attempts)``; raises `FetchError` (with every
    error message) when all attempts fail.
    """
    errors = []
    for attempt in range(retries + 1):
        try:
            return func(), attempt + 1
        except Exception as exc:  # noqa: BLE001 - network errors vary
            errors.append(f'{type(exc).__name__}: {exc}')
            if attempt < retries:
                wait = backoff * 2**attempt
                log(f'{what} failed ({errors[-1]}); retry in {wait:g} s')
                sleep(wait)
    msg = f'{what} failed after {retries + 1} attempts: ' + ' | '.join(errors)
    raise FetchError(msg)


def skyview_image(position, *, survey='DSS2 Red', pixels=512,
                  size=0.25 * u.deg):
    """
    A SkyView image (astroquery) centred on ``position``.

    Returns ``(data, header)``.
    """
    from astroquery.skyview import SkyView
    images = SkyView.get_images(position=position, survey=[survey],
                                pixels=int(pixels), width=size, height=size)
    if not images:
        msg = f'SkyView returned no {survey!r} image'
        raise RuntimeError(msg)
    h = images[0][0]
    return h.data.astype(np.float32), h.header


def vizier_catalog(position, *, catalog='gaia', size=0.25 * u.deg,
                   mag_limit=None):
    """
    Stars of a VizieR catalogue (astroquery) in a box around
    ``position``: a table with ``ra``, ``dec`` (deg) and ``mag``.
    """
    from astroquery.vizier import Vizier
    spec = CATALOGS[catalog]
    filters = {} if mag_limit is None else {spec['mag']: f'<{mag_limit}'}
    viz = Vizier(columns=[spec['ra'], spec['dec'], spec['mag']],
                 column_filters=filters, row_limit=-1)
    result = viz.query_region(position, width=size, height=size,
                              catalog=spec['vizier'])
    if len(result) == 0:
        return Table({'ra': np.zeros(0), 'dec': np.zeros(0),
                      'mag': np.zeros(0)})
    t = result[0]
    return Table({'ra': np.asarray(t[spec['ra']], float),
                  'dec': np.asarray(t[spec['dec']], float),
                  'mag': np.ma.filled(np.ma.asarray(t[spec['mag']], float),
                                      np.nan)})


def build_survey_set(outdir, positions=None, *, n_random=0, min_abs_b=20.0,
                     seed=None, survey='DSS2 Red', catalog='gaia',
                     pixels=512, size=0.25 * u.deg, mag_limit=None,
                     retries=3, backoff=5.0, fetch_image=None,
                     fetch_catalog=None, sleep=time.sleep, log=print,
                     **kwargs):
    """
    Fetch survey images and catalogues and write one training file per
    field; a failed field is recorded, never fatal.

    Parameters
    ----------
    outdir : path
        Folder for ``field_NNNN.fits`` and ``summary.ecsv``.
    positions : `~astropy.coordinates.SkyCoord`, optional
        Field centres.
    n_random : int, optional
        Number of random fields added (see `random_positions`).
    min_abs_b : float, optional
        Smallest absolute Galactic latitude of random fields (0: no
        restriction).
    seed : int, optional
        Seed of the random positions.
    survey : str
        SkyView survey name (e.g. ``'DSS2 Red'``, ``'SDSSr'``,
        ``'2MASS-J'``).
    catalog : {'gaia', '2mass'}
        VizieR catalogue (`CATALOGS`).
    pixels : int
        Image side in pixels.
    size : `~astropy.units.Quantity`
        Field side.
    mag_limit : float, optional
        Only fetch catalogue stars brighter than this.
    retries : int
        Retries of each failed query.
    backoff : float
        First wait (seconds) before a retry; doubled at each retry.
    fetch_image, fetch_catalog : callable, optional
        ``fetch_image(position) -> (data, header)`` and
        ``fetch_catalog(position) -> Table(ra, dec, mag)``; default
        SkyView and VizieR via astroquery.
    sleep, log : callable
        Wait and message functions (replaceable, e.g. in tests).
    **kwargs
        Passed to `build_field` (e.g. ``fwhm``, ``faint_limit``).

    Returns
    -------
    summary : `~astropy.table.QTable`
        One row per field: ``field``, ``ra``, ``dec``, ``status`` (``ok``
        or ``failed``), ``attempts``, ``n_targets``, ``path`` and
        ``error``; also written to ``outdir/summary.ecsv``.
    """
    if catalog not in CATALOGS:
        msg = f'catalog must be one of {sorted(CATALOGS)}, not {catalog!r}'
        raise ValueError(msg)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    coords = []
    if positions is not None:
        coords.extend(SkyCoord(positions).icrs.reshape(-1))
    if n_random:
        coords.extend(random_positions(n_random, min_abs_b=min_abs_b,
                                       seed=seed))
    if not coords:
        msg = 'give positions or n_random > 0'
        raise ValueError(msg)
    if fetch_image is None:
        def fetch_image(pos):
            return skyview_image(pos, survey=survey, pixels=pixels, size=size)
    if fetch_catalog is None:
        def fetch_catalog(pos):
            return vizier_catalog(pos, catalog=catalog, size=size,
                                  mag_limit=mag_limit)
    rows = []
    for k, pos in enumerate(coords):
        name = f'field_{k:04d}'
        row = {'field': name, 'ra': pos.ra.deg, 'dec': pos.dec.deg,
               'status': 'failed', 'attempts': 0, 'n_targets': 0,
               'path': '', 'error': ''}
        try:
            (data, header), n1 = _retry(lambda pos=pos: fetch_image(pos),
                                        retries=retries, backoff=backoff,
                                        sleep=sleep, log=log,
                                        what=f'{name} image')
            row['attempts'] += n1
            cat, n2 = _retry(lambda pos=pos: fetch_catalog(pos),
                             retries=retries, backoff=backoff, sleep=sleep,
                             log=log, what=f'{name} catalogue')
            row['attempts'] += n2
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', fits.verify.VerifyWarning)
                warnings.simplefilter('ignore', FITSFixedWarning)
                hdul = build_field(data, WCS(header), cat, ra='ra', dec='dec',
                                   mag='mag', header=header,
                                   meta={'SURVEY': survey, 'CATALOG': catalog},
                                   **kwargs)
                path = outdir / f'{name}.fits'
                hdul.writeto(path, overwrite=True)
            row.update(status='ok', path=path.name,
                       n_targets=int(hdul[0].header['NTARGET']))
        except Exception as exc:  # noqa: BLE001 - one field must not stop all
            row['error'] = str(exc)[:500]
            if isinstance(exc, FetchError):
                row['attempts'] += retries + 1
            log(f'{name}: FAILED ({row["error"]})')
        rows.append(row)
    summary = QTable(rows=rows, names=list(rows[0]))
    summary['ra'].unit = u.deg
    summary['dec'].unit = u.deg
    summary.meta['survey'] = survey
    summary.meta['catalog'] = catalog
    summary.write(outdir / 'summary.ecsv', overwrite=True)
    n_ok = int(np.sum(summary['status'] == 'ok'))
    log(f'{n_ok} of {len(summary)} fields written to {outdir}')
    return summary


def _summary_json(summary):
    """Short machine-readable summary (for the command line)."""
    return json.dumps({'ok': int(np.sum(summary['status'] == 'ok')),
                       'failed': int(np.sum(summary['status'] != 'ok'))})


def main(argv=None):
    """
    Command line::

        python -m cnnfind.training.survey OUTDIR --random 20 [--survey ...]
        python -m cnnfind.training.survey OUTDIR --image IMG.fits --catalog-file CAT.fits
    """
    import argparse
    p = argparse.ArgumentParser(
        prog='python -m cnnfind.training.survey',
        description='Build star-finder training files from survey images '
                    'and star catalogues.')
    p.add_argument('outdir')
    p.add_argument('--image', help='offline: FITS image with a WCS')
    p.add_argument('--catalog-file', nargs='+',
                   help='offline: catalogue table file(s)')
    p.add_argument('--ra-col', default='ra')
    p.add_argument('--dec-col', default='dec')
    p.add_argument('--mag-col', default='phot_g_mean_mag')
    p.add_argument('--position', nargs=2, type=float, action='append',
                   metavar=('RA', 'DEC'), help='online: field centre (deg)')
    p.add_argument('--random', type=int, default=0,
                   help='online: number of random fields')
    p.add_argument('--min-abs-b', type=float, default=20.0)
    p.add_argument('--seed', type=int, default=None)
    p.add_argument('--survey', default='DSS2 Red')
    p.add_argument('--catalog', default='gaia', choices=sorted(CATALOGS))
    p.add_argument('--pixels', type=int, default=512)
    p.add_argument('--size-deg', type=float, default=0.25)
    p.add_argument('--fwhm', type=float, default=None)
    p.add_argument('--faint-limit', type=float, default=None)
    p.add_argument('--bright-limit', type=float, default=None)
    args = p.parse_args(argv)
    kw = {'fwhm': args.fwhm, 'faint_limit': args.faint_limit,
          'bright_limit': args.bright_limit}
    if args.image:
        if not args.catalog_file:
            p.error('--image needs --catalog-file')
        out = Path(args.outdir) / (Path(args.image).name.split('.')[0]
                                   + '_train.fits')
        build_from_files(args.image, args.catalog_file, out, ra=args.ra_col,
                         dec=args.dec_col, mag=args.mag_col, **kw)
        print(f'wrote {out}')
        return 0
    positions = (SkyCoord([q[0] for q in args.position],
                          [q[1] for q in args.position], unit='deg')
                 if args.position else None)
    summary = build_survey_set(args.outdir, positions, n_random=args.random,
                               min_abs_b=args.min_abs_b, seed=args.seed,
                               survey=args.survey, catalog=args.catalog,
                               pixels=args.pixels,
                               size=args.size_deg * u.deg, **kw)
    print(_summary_json(summary))
    return 0 if np.any(summary['status'] == 'ok') else 1


if __name__ == '__main__':
    import sys
    sys.exit(main(sys.argv[1:]))
