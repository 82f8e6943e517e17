# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Uniform, fair wrappers around the classical source finders.

Every wrapper takes the raw image (sky included), the PSF FWHM in
pixels and a detection threshold ``threshold`` in units of the sky
noise, and returns a `PeerResult` ``(x, y, score, seconds)``: 0-based
positions (pixel centres at integers, ``image[j, i]`` centred on
``x=i, y=j``), a score to sweep (larger is more significant) and the
wall-clock time of the whole run, background and noise estimation
included. The score is chosen so that cutting at ``score >= k``
reproduces a run at ``threshold=k`` exactly (DAOStarFinder), up to
segmentation and deblending differences (SEP, SourceFinder: the
filtered peak in units of the RMS), or approximately (IRAFStarFinder,
SExtractor): run at a low threshold and sweep the score to give each
finder its best threshold. For the segmentation-based finders a lower
run threshold also merges more neighbours, so a benchmark should try a
few run thresholds too.

The choices follow the measurements in the project notes
(``peers.md``):

* DAOStarFinder / IRAFStarFinder run on data minus a global robust sky;
  bad pixels are set to the sky and passed as ``mask`` (a NaN would
  spread through the convolution and remove nearby stars). The DAO
  threshold is ``k * std`` (so roughly a k-sigma cut on the fitted
  amplitude, ``scale_threshold=True``); IRAF's threshold is not scaled.
* SourceFinder runs on ``Background2D``-subtracted data convolved with
  a Gaussian kernel of the FWHM, threshold ``k`` times the background
  RMS map (the SExtractor convention: the unfiltered RMS applied to the
  filtered image), ``n_pixels=5``; windowed centroids.
* SEP: ``sep.Background``, ``sep.extract`` with the same Gaussian
  kernel, ``filter_type='conv'`` and the RMS map as ``err``, then
  ``sep.winpos`` with ``sigma = 2 / 2.35 * half-light radius``.
* SExtractor: the same kernel as a ``CONV NORM`` filter, ``XWIN_IMAGE
  - 1``/``YWIN_IMAGE - 1`` (SExtractor is 1-based), a weight map with 0
  at bad pixels (NaNs are not bad pixels to SExtractor), ``MASK_TYPE
  CORRECT``, ``SATUR_LEVEL 1e10``, one thread.
"""

import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections import namedtuple

import numpy as np

from cnnfind._compat import SOURCEFINDER_QUIET
from cnnfind.runtime.normalize import robust_sky_noise, valid_pixel_mask

__all__ = ['PeerResult', 'run_cnnfind', 'run_dao', 'run_iraf',
           'run_sourcefinder', 'run_sep', 'run_sextractor',
           'sextractor_path', 'read_sextractor_catalog']

#: What every wrapper returns.
PeerResult = namedtuple('PeerResult', ['x', 'y', 'score', 'seconds'])
PeerResult.__doc__ = """\
Result of a finder run: positions ``x``, ``y`` (0-based pixels), a
``score`` per detection (larger is more significant) and the elapsed
wall-clock ``seconds``."""

_EMPTY = (np.zeros(0), np.zeros(0), np.zeros(0))


def _prepare(data, mask):
    """Float data, valid-pixel map and global robust sky and noise."""
    data = np.asarray(data, dtype=float)
    valid = valid_pixel_mask(data, mask)
    sky, noise = robust_sky_noise(data, valid)
    return data, valid, sky, noise


def _gaussian_kernel(fwhm):
    """Normalised, pixel-sampled circular Gaussian of the given FWHM."""
    sigma = fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    half = max(1, int(np.ceil(1.5 * fwhm)))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    kernel = np.exp(-0.5 * (xx**2 + yy**2) / sigma**2)
    return kernel / kernel.sum()


def _column_values(table, name):
    col = table[name]
    return np.asarray(getattr(col, 'value', col), dtype=float)


def run_cnnfind(data, fwhm, threshold=2.0, *, mask=None, finder=None,
                **kwargs):
    """
    Run `cnnfind.CNNStarFinder`; the score is its ``probability``.

    Parameters
    ----------
    data : 2D array_like
        The image (sky included; a global robust sky is subtracted).
    fwhm : float
        PSF FWHM in pixels.
    threshold : float
        Threshold in units of the sky noise (``threshold * std`` is
        passed to the finder, as for DAOStarFinder). Keep it low and
        sweep ``probability``.
    mask : 2D bool array_like, optional
        `True` at bad pixels.
    finder : callable, optional
        A ready-made finder to call instead of building one (then
        ``threshold``, ``fwhm`` and ``kwargs`` are not used).
    **kwargs
        Passed to `cnnfind.CNNStarFinder`.

    Returns
    -------
    result : `PeerResult`
    """
    t0 = time.perf_counter()
    data, valid, sky, noise = _prepare(data, mask)
    if finder is None:
        from cnnfind import CNNStarFinder
        finder = CNNStarFinder(threshold * noise, fwhm, **kwargs)
    bad = ~valid
    table = finder(data - sky, mask=bad if bad.any() else None)
    seconds = time.perf_counter() - t0
    if table is None or len(table) == 0:
        return PeerResult(*_EMPTY, seconds)
    return PeerResult(_column_values(table, 'x_centroid'),
                      _column_values(table, 'y_centroid'),
                      _column_values(table, 'probability'), seconds)


def _run_starfinder(cls, data, fwhm, threshold, mask, kwargs):
    """Shared part of the DAO and IRAF wrappers."""
    t0 = time.perf_counter()
    data, valid, sky, noise = _prepare(data, mask)
    sub = data - sky
    bad = ~valid
    sub[bad] = 0.0
    finder = cls(threshold * noise, fwhm, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # NoDetectionsWarning
        table = finder(sub, mask=bad if bad.any() else None)
    return table, noise, t0


def run_dao(data, fwhm, threshold=2.0, *, mask=None, **kwargs):
    """
    Run `photutils.detection.DAOStarFinder`.

    The score is the DAOFIND statistic in units of the noise,
    ``threshold * 10**(-0.4 * daofind_mag)`` (the convolved peak over
    ``std * rel_err``): cutting at ``score >= k`` gives exactly the
    sources of a run at ``threshold=k``.

    Parameters
    ----------
    data : 2D array_like
        The image (sky included).
    fwhm : float
        PSF FWHM in pixels.
    threshold : float
        Threshold in units of the sky noise.
    mask : 2D bool array_like, optional
        `True` at bad pixels.
    **kwargs
        Passed to `~photutils.detection.DAOStarFinder` (e.g.
        ``sharpness_range=None``, ``sigma_radius=3``).

    Returns
    -------
    result : `PeerResult`

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation import run_dao
    >>> from cnnfind.simulation import make_scenario
    >>> sim = make_scenario('sparse', shape=(128, 128), seed=0)
    >>> res = run_dao(sim['image'], sim['fwhm'], threshold=5.0)
    >>> len(res.x) > 0, bool(np.all(res.score >= 5.0))
    (True, True)
    """
    from photutils.detection import DAOStarFinder
    table, _, t0 = _run_starfinder(DAOStarFinder, data, fwhm, threshold,
                                   mask, kwargs)
    seconds = time.perf_counter() - t0
    if table is None or len(table) == 0:
        return PeerResult(*_EMPTY, seconds)
    score = threshold * 10 ** (-0.4 * _column_values(table, 'daofind_mag'))
    return PeerResult(_column_values(table, 'x_centroid'),
                      _column_values(table, 'y_centroid'), score, seconds)


def run_iraf(data, fwhm, threshold=2.0, *, mask=None, score='peak',
             **kwargs):
    """
    Run `photutils.detection.IRAFStarFinder`.

    IRAFStarFinder's threshold applies to the convolved image without
    DAOStarFinder's ``rel_err`` scaling, and its table does not give
    the convolved peak, so the score is the ``peak`` (or ``flux``)
    column in units of the noise: an approximation of a threshold cut.

    Parameters
    ----------
    data : 2D array_like
        The image (sky included).
    fwhm : float
        PSF FWHM in pixels.
    threshold : float
        Threshold in units of the sky noise.
    mask : 2D bool array_like, optional
        `True` at bad pixels.
    score : {'peak', 'flux'}
        Column used as the score.
    **kwargs
        Passed to `~photutils.detection.IRAFStarFinder`.

    Returns
    -------
    result : `PeerResult`
    """
    from photutils.detection import IRAFStarFinder
    table, noise, t0 = _run_starfinder(IRAFStarFinder, data, fwhm,
                                       threshold, mask, kwargs)
    seconds = time.perf_counter() - t0
    if table is None or len(table) == 0:
        return PeerResult(*_EMPTY, seconds)
    return PeerResult(_column_values(table, 'x_centroid'),
                      _column_values(table, 'y_centroid'),
                      _column_values(table, score) / noise, seconds)


def _have_skimage():
    import importlib.util
    return importlib.util.find_spec('skimage') is not None


def _box_size(shape, box=64):
    """Background mesh size: ``box``, smaller for tiny images."""
    return int(max(8, min(box, min(shape) // 4)))


def run_sourcefinder(data, fwhm, threshold=1.0, *, mask=None, n_pixels=5,
                     box_size=64, centroid='win', **kwargs):
    """
    Run `photutils.segmentation.SourceFinder` the documented way.

    The data minus a `~photutils.background.Background2D` (``box_size``
    mesh, 3x3 filter) are convolved with a Gaussian kernel of the FWHM
    and segmented at ``threshold`` times the background RMS map. The
    score is the segment's maximum of the convolved image over the RMS
    map, so that ``score >= k`` keeps the sources a run at
    ``threshold=k`` would detect (deblending can differ).

    Parameters
    ----------
    data : 2D array_like
        The image (sky included).
    fwhm : float
        PSF FWHM in pixels.
    threshold : float
        Threshold in units of the (unfiltered) background RMS.
    mask : 2D bool array_like, optional
        `True` at bad pixels.
    n_pixels : int
        Minimum number of connected pixels.
    box_size : int
        Background mesh size (reduced for small images).
    centroid : {'win', 'isophotal'}
        ``x_centroid_win`` (windowed) or ``x_centroid`` positions.
    **kwargs
        Passed to `~photutils.segmentation.SourceFinder`. Without
        scikit-image (which photutils needs to deblend) ``deblend`` is
        set to `False` with a warning.

    Returns
    -------
    result : `PeerResult`
    """
    from astropy.convolution import convolve
    from photutils.background import Background2D
    from photutils.segmentation import SourceCatalog, SourceFinder, make_2dgaussian_kernel
    from scipy import ndimage

    t0 = time.perf_counter()
    data = np.asarray(data, dtype=float)
    valid = valid_pixel_mask(data, mask)
    bad = ~valid
    work = np.where(valid, data, np.nanmedian(data[valid]))
    bkg = Background2D(work, _box_size(data.shape, box_size),
                       filter_size=(3, 3),
                       mask=bad if bad.any() else None)
    sub = work - bkg.background
    sub[bad] = 0.0
    size = 2 * max(1, int(np.ceil(1.5 * fwhm))) + 1
    kernel = make_2dgaussian_kernel(fwhm, size=size)
    conv = convolve(sub, kernel)
    rms = np.asarray(bkg.background_rms)
    kwargs = {**SOURCEFINDER_QUIET, **kwargs}
    if kwargs.get('deblend', True) and not _have_skimage():
        # photutils deblends with scikit-image's watershed.
        warnings.warn('scikit-image is not installed: SourceFinder runs '
                      'without deblending', RuntimeWarning)
        kwargs['deblend'] = False
    finder = SourceFinder(n_pixels=n_pixels, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # NoDetectionsWarning
        segm = finder(conv, threshold * rms, mask=bad if bad.any() else None)
    if segm is None:
        return PeerResult(*_EMPTY, time.perf_counter() - t0)
    cat = SourceCatalog(sub, segm, convolved_data=conv,
                        mask=bad if bad.any() else None)
    if centroid == 'win':
        x, y = cat.x_centroid_win, cat.y_centroid_win
    else:
        x, y = cat.x_centroid, cat.y_centroid
    score = np.asarray(ndimage.maximum(conv / rms, labels=segm.data,
                                       index=segm.labels), dtype=float)
    seconds = time.perf_counter() - t0
    return PeerResult(np.asarray(x, float), np.asarray(y, float), score,
                      seconds)


def run_sep(data, fwhm, threshold=1.0, *, mask=None, minarea=5,
            box_size=64, deblend_nthresh=32, deblend_cont=0.005,
            windowed=True):
    """
    Run SEP (``sep.Background`` + ``sep.extract`` + ``sep.winpos``).

    The kernel is a Gaussian of the FWHM; ``filter_type='conv'`` with
    the background RMS map as ``err``, so the threshold is ``threshold``
    times the unfiltered RMS applied to the filtered image, as in
    SExtractor. The score is the filtered peak ``cpeak`` over the RMS at
    the source, so that ``score >= k`` keeps what a run at
    ``threshold=k`` detects (deblending can differ).

    Parameters
    ----------
    data : 2D array_like
        The image (sky included).
    fwhm : float
        PSF FWHM in pixels.
    threshold : float
        Threshold in units of the background RMS.
    mask : 2D bool array_like, optional
        `True` at bad pixels.
    minarea : int
        Minimum number of pixels above threshold.
    box_size : int
        Background mesh size (reduced for small images).
    deblend_nthresh, deblend_cont : int, float
        Deblending parameters (SExtractor defaults).
    windowed : bool
        Refine positions with ``sep.winpos``.

    Returns
    -------
    result : `PeerResult`
    """
    import sep

    t0 = time.perf_counter()
    data = np.asarray(data, dtype=np.float64)
    valid = valid_pixel_mask(data, mask)
    bad = ~valid
    work = np.ascontiguousarray(np.where(valid, data,
                                         np.nanmedian(data[valid])))
    box = _box_size(data.shape, box_size)
    smask = bad if bad.any() else None
    bkg = sep.Background(work, mask=smask, bw=box, bh=box, fw=3, fh=3)
    sub = work - bkg.back()
    sub[bad] = 0.0
    rms = bkg.rms()
    kernel = _gaussian_kernel(fwhm)
    pixstack = max(300_000, data.size // 2)
    sep.set_extract_pixstack(pixstack)
    sep.set_sub_object_limit(10_000)
    objects = sep.extract(sub, threshold, err=rms, mask=smask,
                          minarea=minarea, filter_kernel=kernel,
                          filter_type='conv',
                          deblend_nthresh=deblend_nthresh,
                          deblend_cont=deblend_cont)
    if len(objects) == 0:
        return PeerResult(*_EMPTY, time.perf_counter() - t0)
    x = np.asarray(objects['x'], dtype=float)
    y = np.asarray(objects['y'], dtype=float)
    if windowed:
        rmax = np.clip(6.0 * objects['a'], 2.0 * fwhm, None)
        r_half, _ = sep.flux_radius(sub, x, y, rmax, 0.5,
                                    normflux=objects['flux'], subpix=5)
        r_half = np.where(np.isfinite(r_half) & (r_half > 0), r_half,
                          fwhm / 2.0)
        xw, yw, flag = sep.winpos(sub, x, y, 2.0 / 2.35 * r_half)
        good = (flag == 0) & np.isfinite(xw) & np.isfinite(yw)
        x = np.where(good, xw, x)
        y = np.where(good, yw, y)
    ix = np.clip(np.round(objects['x']).astype(int), 0, data.shape[1] - 1)
    iy = np.clip(np.round(objects['y']).astype(int), 0, data.shape[0] - 1)
    score = np.asarray(objects['cpeak'], dtype=float) / rms[iy, ix]
    seconds = time.perf_counter() - t0
    return PeerResult(x, y, score, seconds)


def sextractor_path():
    """
    Path of the SExtractor executable, or `None` if it is not installed.

    Looks for ``source-extractor`` (the Debian name), then ``sex`` and
    ``sextractor`` on the ``PATH``, then ``/usr/bin/source-extractor``.

    Returns
    -------
    path : str or `None`
    """
    for name in ('source-extractor', 'sex', 'sextractor'):
        path = shutil.which(name)
        if path:
            return path
    path = '/usr/bin/source-extractor'
    return path if os.access(path, os.X_OK) else None


def read_sextractor_catalog(path):
    """
    Read a SExtractor ``ASCII_HEAD`` catalogue.

    Parameters
    ----------
    path : str or path-like
        The catalogue file.

    Returns
    -------
    table : `~astropy.table.Table`
        One column per header entry (vector parameters such as
        ``FLUX_APER(3)`` give ``FLUX_APER``, ``FLUX_APER_2``, ...). The
        positions keep SExtractor's 1-based convention.
    """
    from astropy.table import Table

    names = []
    with open(path) as f:
        lines = f.readlines()
    header = [ln for ln in lines if ln.startswith('#')]
    body = [ln for ln in lines if ln.strip() and not ln.startswith('#')]
    starts = []
    for ln in header:
        parts = ln[1:].split()
        starts.append((int(parts[0]), parts[1]))
    ncol = len(body[0].split()) if body else (starts[-1][0] if starts else 0)
    for k, (start, name) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else ncol + 1
        for j in range(end - start):
            names.append(name if j == 0 else f'{name}_{j + 1}')
    if not body:
        return Table(names=names, dtype=[float] * len(names))
    values = np.loadtxt(body, ndmin=2)
    return Table(values, names=names[:values.shape[1]])


_SEX_PARAMS = ('NUMBER', 'X_IMAGE', 'Y_IMAGE', 'XWIN_IMAGE', 'YWIN_IMAGE',
               'FLUX_AUTO', 'FLUX_MAX', 'SNR_WIN', 'BACKGROUND', 'FLAGS')


def run_sextractor(data, fwhm, threshold=1.0, *, mask=None, minarea=5,
                   box_size=64, score='SNR_WIN', executable=None,
                   extra_config=None):
    """
    Run SExtractor (``source-extractor``) on an image.

    The image (and a weight map with 0 at bad pixels, if there are any)
    is written to a temporary directory with a configuration, a
    parameter file and a Gaussian ``CONV NORM`` filter of the FWHM;
    SExtractor is run there with one thread and its ``ASCII_HEAD``
    catalogue read back. Positions are ``XWIN_IMAGE - 1``,
    ``YWIN_IMAGE - 1``. The time includes writing the files.

    Parameters
    ----------
    data : 2D array_like
        The image (sky included).
    fwhm : float
        PSF FWHM in pixels.
    threshold : float
        ``DETECT_THRESH`` = ``ANALYSIS_THRESH`` in units of the
        background RMS.
    mask : 2D bool array_like, optional
        `True` at bad pixels.
    minarea : int
        ``DETECT_MINAREA``.
    box_size : int
        ``BACK_SIZE`` (reduced for small images).
    score : str
        Catalogue column used as the score (``'SNR_WIN'``,
        ``'FLUX_AUTO'`` or ``'FLUX_MAX'``).
    executable : str, optional
        SExtractor executable; default `sextractor_path`.
    extra_config : dict, optional
        Further configuration keywords (they override the defaults).

    Returns
    -------
    result : `PeerResult`

    Raises
    ------
    FileNotFoundError
        If SExtractor is not installed.
    RuntimeError
        If SExtractor fails.
    """
    from astropy.io import fits

    exe = executable or sextractor_path()
    if exe is None:
        msg = ('SExtractor is not installed (no source-extractor, sex or '
               'sextractor on the PATH); install it, e.g. '
               '`apt-get install source-extractor`')
        raise FileNotFoundError(msg)
    if not os.access(exe, os.X_OK):
        exe_path = shutil.which(exe)
        if exe_path is None:
            msg = f'SExtractor executable {exe!r} not found'
            raise FileNotFoundError(msg)
        exe = exe_path
    t0 = time.perf_counter()
    data = np.asarray(data, dtype=np.float32)
    valid = valid_pixel_mask(data, mask)
    with tempfile.TemporaryDirectory(prefix='cnnfind-sex-') as tmp:
        img = os.path.join(tmp, 'image.fits')
        fits.writeto(img, np.where(valid, data, 0.0).astype(np.float32))
        config = {
            'CATALOG_NAME': 'cat.txt', 'CATALOG_TYPE': 'ASCII_HEAD',
            'PARAMETERS_NAME': 'sex.param', 'DETECT_TYPE': 'CCD',
            'DETECT_MINAREA': str(int(minarea)),
            'DETECT_THRESH': f'{threshold:g}',
            'ANALYSIS_THRESH': f'{threshold:g}',
            'THRESH_TYPE': 'RELATIVE', 'FILTER': 'Y',
            'FILTER_NAME': 'gauss.conv', 'DEBLEND_NTHRESH': '32',
            'DEBLEND_MINCONT': '0.005', 'CLEAN': 'Y', 'CLEAN_PARAM': '1.0',
            'MASK_TYPE': 'CORRECT', 'WEIGHT_TYPE': 'NONE',
            'SATUR_LEVEL': '1e10', 'GAIN': '0.0', 'PHOT_APERTURES': '5',
            'BACK_TYPE': 'AUTO',
            'BACK_SIZE': str(_box_size(data.shape, box_size)),
            'BACK_FILTERSIZE': '3', 'MEMORY_OBJSTACK': '30000',
            'MEMORY_PIXSTACK': str(max(300_000, data.size // 2)),
            'MEMORY_BUFSIZE': '1024', 'VERBOSE_TYPE': 'QUIET',
            'NTHREADS': '1', 'WRITE_XML': 'N', 'CHECKIMAGE_TYPE': 'NONE'}
        if not valid.all():
            fits.writeto(os.path.join(tmp, 'weight.fits'),
                         valid.astype(np.float32))
            config['WEIGHT_TYPE'] = 'MAP_WEIGHT'
            config['WEIGHT_IMAGE'] = 'weight.fits'
        if extra_config:
            config.update({k: str(v) for k, v in extra_config.items()})
        params = list(_SEX_PARAMS)
        if score not in params:
            params.append(score)
        with open(os.path.join(tmp, 'sex.param'), 'w') as f:
            f.write('\n'.join(params) + '\n')
        kernel = _gaussian_kernel(fwhm)
        with open(os.path.join(tmp, 'gauss.conv'), 'w') as f:
            f.write(f'CONV NORM\n# Gaussian FWHM {fwhm:g} px\n')
            for row in kernel:
                f.write(' '.join(f'{v:.6f}' for v in row) + '\n')
        with open(os.path.join(tmp, 'cnnfind.sex'), 'w') as f:
            f.writelines(f'{k:16s} {v}\n' for k, v in config.items())
        proc = subprocess.run([exe, 'image.fits', '-c', 'cnnfind.sex'],
                              cwd=tmp, capture_output=True, text=True,
                              check=False)
        cat_path = os.path.join(tmp, 'cat.txt')
        if proc.returncode != 0 or not os.path.exists(cat_path):
            msg = (f'SExtractor failed (exit code {proc.returncode}): '
                   f'{proc.stderr.strip()[-2000:]}')
            raise RuntimeError(msg)
        table = read_sextractor_catalog(cat_path)
    seconds = time.perf_counter() - t0
    if len(table) == 0:
        return PeerResult(*_EMPTY, seconds)
    x = np.asarray(table['XWIN_IMAGE'], float) - 1.0
    y = np.asarray(table['YWIN_IMAGE'], float) - 1.0
    return PeerResult(x, y, np.asarray(table[score], float), seconds)
