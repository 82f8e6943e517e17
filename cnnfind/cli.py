# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The ``cnnfind`` command-line interface.

Sub-commands
------------
``cnnfind demo [-o OUTDIR]``
    Run `~cnnfind.CNNStarFinder` on a real image shipped inside astropy (the
    SkyView M13 frame) and write ``m13.ecsv`` plus an ``m13.png`` overlay.

``cnnfind find IMAGE [IMAGE ...] -o OUTDIR [options]``
    Find stars in FITS images, one ECSV table per image (plus optional DS9
    region files and PNG overlays).

``cnnfind denoise IMAGE [IMAGE ...] -o OUT [options]``
    Denoise FITS images with `~cnnfind.denoise.N2VDenoiser` (Noise2Void).
    ``OUT`` is the output file for a single image (a name ending in
    ``.fits``, ``.fit`` or ``.fts``, optionally with ``.gz``) or else a
    directory that receives ``<stem>_denoised.fits`` per image.

``cnnfind psfstars IMAGE [IMAGE ...] -o OUTDIR [options]``
    Select PSF stars with `~cnnfind.psfstars.PSFStarSelector`: one ECSV
    table per image and, with ``--epsf``, the ePSF that
    `~photutils.psf.EPSFBuilder` builds from them.

``cnnfind morph INPUT [INPUT ...] -o OUT.ecsv [options]``
    Classify galaxies with `~cnnfind.morphology.GalaxyMorphClassifier`,
    either in FITS fields (sources found by segmentation or read from
    ``--positions``) or in cutouts (JPEG/PNG files, or folders of them);
    one ECSV table for all inputs.

``cnnfind train starfinder|n2v|psfstars|morphology [ARGS ...]``
    Train or reproduce a model (needs ``pip install cnnfind[train]``); the
    arguments are passed on to ``python -m cnnfind.training.<model>``.

``cnnfind view IMAGE [options]``
    A local, loopback-only web page with the image, the star finder's
    heatmap, its candidates and a live ``min_probability`` slider
    (`cnnfind.viewer`).

``cnnfind activations MODEL IMAGE -o FIGURE``
    Feature maps of every layer of a network for an input
    (`cnnfind.training.activations`; needs ``cnnfind[activations]``).

Batches
-------
``find``, ``denoise``, ``psfstars`` and ``morph`` share one batch runner
(`cnnfind._batch`): one bad file does not stop the others and the summary
names those that failed; ``--progress`` shows a bar over files; ``--jobs
N`` processes N files at once in worker processes; ``--scheduler ADDRESS``
sends the files to a Dask cluster (``pip install cnnfind[dask]``). Every
worker builds its tool, and so its onnxruntime session, once. Exit status:
0 when every file was processed, 1 when any failed, 2 for a usage error.

Adding a sub-command
--------------------
Write a function ``add_parser(subparsers)`` that calls
``subparsers.add_parser(...)``, adds its options (`add_fits_options` and
`add_batch_options` give the shared ones) and sets ``func`` with
``set_defaults(func=...)`` to a function of the parsed arguments that
returns the exit status; then list it (or its ``'module:function'`` name)
in `SUBCOMMANDS`.

Everything heavy (numpy, astropy, onnxruntime, matplotlib, torch, dask) is
imported inside the functions so that ``cnnfind --help`` stays fast.
"""

import argparse
import importlib
import os
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

from cnnfind._batch import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    FileResult,
    Task,
    check_batch_options,
    check_output_dir,
    check_output_file,
    run_batch,
    summarize,
    worker_threads,
)
from cnnfind._provenance import _denoised_history, _warn_if_denoised

__all__ = ['main']

#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

#: Where astropy keeps the SkyView M13 frame used by ``cnnfind demo``.
M13_PACKAGE = 'astropy.io.fits.hdu.compressed.tests'
M13_NAME = 'data/m13.fits'

#: Columns of a CNNStarFinder table (used to write an empty table when an
#: image has no detections).
TABLE_COLUMNS = ('id', 'x_centroid', 'y_centroid', 'sharpness', 'roundness1',
                 'roundness2', 'n_pixels', 'peak', 'flux', 'mag',
                 'daofind_mag', 'probability')

#: Columns of a PSFStarSelector table (for an image with no PSF star).
PSF_COLUMNS = ('id', 'x_centroid', 'y_centroid', 'flux', 'peak', 'psf_score',
               'snr', 'nearest_neighbour', 'roundness', 'sharpness')

_FITS_SUFFIXES = ('.fits', '.fit', '.fts')
_COMPRESSION_SUFFIXES = ('.gz', '.bz2', '.xz', '.fz')
#: Output files ``cnnfind denoise`` can write (astropy compresses
#: ``.gz``, ``.bz2`` and ``.xz`` on writing; ``.fz`` it cannot).
_DENOISE_OUTPUT_SUFFIXES = tuple(f + c for f in _FITS_SUFFIXES
                                 for c in ('', '.gz', '.bz2', '.xz'))
#: Cutout files that ``cnnfind morph`` reads with pillow.
_CUTOUT_SUFFIXES = ('.jpg', '.jpeg', '.png', '.tif', '.tiff')


def _split_fits_suffix(path):
    """
    ``(head, suffix)`` of a path whose name ends in a FITS suffix,
    optionally compressed (``'.fits'``, ``'.fit.gz'``, ...; the case is
    kept); ``suffix`` is ``''`` when there is none.
    """
    path = str(path)
    lower = path.lower()
    for fits_suffix in _FITS_SUFFIXES:
        for compression in ('',) + _COMPRESSION_SUFFIXES:
            suffix = fits_suffix + compression
            if lower.endswith(suffix):
                return path[:-len(suffix)], path[-len(suffix):]
    return path, ''


def _is_fits(path):
    return bool(_split_fits_suffix(path)[1])


# ---------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------

def find_m13():
    """
    Return the path of the M13 image bundled with astropy.

    Raises
    ------
    CLIError
        If this astropy installation does not ship the file.
    """
    candidates = []
    try:
        from astropy.utils.data import get_pkg_data_filename

        candidates.append(get_pkg_data_filename(M13_NAME, package=M13_PACKAGE))
    except Exception:  # the test data may be stripped from some installs
        pass
    try:
        import astropy

        candidates.append(os.path.join(os.path.dirname(astropy.__file__), 'io',
                                       'fits', 'hdu', 'compressed', 'tests',
                                       'data', 'm13.fits'))
    except ImportError:  # pragma: no cover - astropy is a hard dependency
        pass
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    raise CLIError(
        'the demo image (SkyView M13 frame, '
        'astropy/io/fits/hdu/compressed/tests/data/m13.fits) is not part of '
        'this astropy installation; run "cnnfind find IMAGE -o OUTDIR" on an '
        'image of your own instead')


def _parse_ext(value):
    """Turn an ``--ext`` string into an int, a name, or a (name, ver) tuple."""
    if value is None:
        return None
    text = str(value).strip()
    if text.lstrip('-').isdigit():
        return int(text)
    if ',' in text:
        name, _, ver = text.partition(',')
        if ver.strip().isdigit():
            return (name.strip(), int(ver))
    return text


def _describe_hdus(hdul):
    parts = []
    for i, hdu in enumerate(hdul):
        shape = getattr(hdu, 'shape', None) if hdu.is_image else None
        desc = f'{i}:{hdu.name or "?"}'
        if shape:
            desc += '(' + 'x'.join(str(n) for n in shape) + ')'
        parts.append(desc)
    return ', '.join(parts)


def _select_hdu(hdul, ext, path, what='image'):
    if ext is None:
        for hdu in hdul:
            if hdu.is_image and hdu.data is not None and hdu.data.ndim >= 2:
                return hdu
        raise CLIError(f'{path}: no HDU with 2-D image data '
                       f'(HDUs: {_describe_hdus(hdul)})')
    try:
        hdu = hdul[ext]
    except (KeyError, IndexError):
        raise CLIError(f'{path}: no extension {ext!r} for the {what} '
                       f'(HDUs: {_describe_hdus(hdul)})') from None
    if not hdu.is_image or hdu.data is None:
        raise CLIError(f'{path}: extension {ext!r} holds no image data '
                       f'(HDUs: {_describe_hdus(hdul)})')
    return hdu


def _as_2d(array, path, ext):
    import numpy as np

    array = np.asarray(array)
    if array.ndim > 2:
        squeezed = array.squeeze()
        if squeezed.ndim == 2:
            array = squeezed
        else:
            raise CLIError(f'{path}: extension {ext!r} is {array.ndim}-D with '
                           f'shape {array.shape}; a 2-D image is needed')
    if array.ndim != 2:
        raise CLIError(f'{path}: extension {ext!r} is {array.ndim}-D; a 2-D '
                       'image is needed')
    return array


def _open_fits(path, what='FITS file'):
    from astropy.io import fits

    if not os.path.exists(path):
        raise CLIError(f'{path}: no such file')
    if os.path.isdir(path):
        raise CLIError(f'{path}: is a directory, not a {what}')
    try:
        return fits.open(path, memmap=False)
    except Exception as exc:  # OSError, TypeError, ... from a non-FITS file
        raise CLIError(f'{path}: cannot be read as FITS ({exc})') from None


def _user_mask(hdul, mask_ext, source, path, shape):
    """The non-zero pixels of a mask HDU, checked against the image."""
    import numpy as np

    mhdu = _select_hdu(hdul, mask_ext, source, what='mask')
    user_mask = _as_2d(mhdu.data, source,
                       mask_ext if mask_ext is not None else mhdu.name)
    if user_mask.shape != shape:
        where = (f'mask extension {mask_ext!r}' if source == path
                 else f'mask {source}')
        raise CLIError(f'{path}: {where} has shape {user_mask.shape} but the '
                       f'image has shape {shape}')
    return np.asarray(user_mask) != 0


def read_image(path, ext=None, mask_ext=None, mask_file=None):
    """
    Read a 2-D image (and optionally a mask) from a FITS file.

    Parameters
    ----------
    path : str
        FITS file name.
    ext : int, str, tuple or `None`
        HDU holding the image; `None` takes the first HDU with 2-D data.
    mask_ext : int, str, tuple or `None`
        HDU holding a bad-pixel mask (non-zero pixels are masked): in
        ``path``, or in ``mask_file`` when that is given.
    mask_file : str or `None`
        FITS file holding the mask (its first HDU with 2-D data unless
        ``mask_ext`` names one).

    Returns
    -------
    data : `~numpy.ndarray`
        The image as float64.
    mask : `~numpy.ndarray` of bool or `None`
        The bad-pixel mask combined with the non-finite pixels of ``data``,
        or `None` when nothing is masked.
    header : `~astropy.io.fits.Header`
        The image HDU's header.
    hdu_label : str
        A short description of the HDU that was read.
    """
    import numpy as np

    hdul = _open_fits(path)
    try:
        try:
            hdu = _select_hdu(hdul, ext, path)
            data = _as_2d(hdu.data, path, ext if ext is not None else hdu.name)
        except CLIError:
            raise
        except Exception as exc:  # corrupt/truncated data
            raise CLIError(f'{path}: cannot read the image data ({exc})') from None
        data = np.array(data, dtype=float)
        header = hdu.header.copy()
        label = hdu.name or str(hdul.index_of(hdu))

        mask = ~np.isfinite(data)
        if mask_ext is not None and mask_file is None:
            mask |= _user_mask(hdul, mask_ext, path, path, data.shape)
    finally:
        hdul.close()
    if mask_file is not None:
        mhdul = _open_fits(mask_file, what='FITS mask')
        try:
            mask |= _user_mask(mhdul, mask_ext, mask_file, path, data.shape)
        finally:
            mhdul.close()

    if mask.all():
        raise CLIError(f'{path}: every pixel is masked or non-finite')
    return data, (mask if mask.any() else None), header, label


def _celestial_wcs(header):
    """Return the celestial WCS of ``header`` or `None`."""
    try:
        from astropy.wcs import WCS, FITSFixedWarning

        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FITSFixedWarning)
            wcs = WCS(header)
        if wcs.has_celestial:
            wcs = wcs.celestial
            # a celestial WCS that cannot transform is useless: check once
            wcs.pixel_to_world(0.0, 0.0)
            return wcs
    except Exception:
        pass
    return None


def _output_stem(path):
    name = Path(path).name
    lower = name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if lower.endswith(suffix):
            name, lower = name[:-len(suffix)], lower[:-len(suffix)]
            break
    for suffix in _FITS_SUFFIXES:
        if lower.endswith(suffix):
            name = name[:-len(suffix)]
            break
    return name or 'image'


def _unique_stems(paths):
    """Output stems for ``paths``, de-duplicated (``a``, ``a-2``, ...)."""
    seen = {}
    stems = []
    for path in paths:
        stem = _output_stem(path)
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        stems.append(stem if count == 1 else f'{stem}-{count}')
    return stems



# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------

def _get_finder_class():
    """Import `cnnfind.CNNStarFinder` (lazily; patched in the tests)."""
    from cnnfind import CNNStarFinder

    return CNNStarFinder


def _empty_table():
    from astropy.table import QTable

    return QTable(names=TABLE_COLUMNS,
                  dtype=[int] + [float] * 5 + [int] + [float] * 5)


def _package_version():
    try:
        from importlib.metadata import version

        return version('cnnfind')
    except Exception:
        return 'unknown'


def background_level(data, mask=None):
    """
    The background median and noise that ``cnnfind find`` (and the
    viewer) subtract and scale ``--threshold-sigma`` by.

    The median is 3-sigma-clipped; the noise is the pixel noise of
    `~cnnfind.runtime.robust_sky_noise` (clipped differences of pixels
    three columns apart), which nebulosity, galaxies and sky gradients
    do not inflate as they inflate the clipped standard deviation of the
    pixels. `ValueError` when the noise is zero or undefined.
    """
    import numpy as np

    from cnnfind.runtime import robust_sky_noise, valid_pixel_mask

    data = np.asarray(data)
    valid = valid_pixel_mask(data, mask)
    try:
        median, std = robust_sky_noise(data, valid)
    except ValueError:
        median, std = np.nan, np.nan
    if not np.isfinite(std) or std <= 0:
        msg = ('the background noise is zero or undefined; is the image '
               'constant?')
        raise ValueError(msg)
    return float(median), float(std)


def detect(data, mask=None, *, fwhm=3.0, threshold_sigma=5.0,
           min_probability=None, model=None, device='auto', progress=False,
           n_threads=None):
    """
    Estimate the background and run `~cnnfind.CNNStarFinder` on one image.

    Returns
    -------
    table : `~astropy.table.QTable`
        The detections (an empty table with the usual columns when there
        are none).
    info : dict
        Background ``median`` and ``std`` and the absolute ``threshold``.
    """
    from photutils.utils.exceptions import NoDetectionsWarning

    try:
        median, std = background_level(data, mask)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    threshold = threshold_sigma * std

    finder_cls = _get_finder_class()
    kwargs = {'device': device, 'progress': progress}
    if min_probability is not None:
        kwargs['min_probability'] = min_probability
    if model is not None:
        kwargs['model'] = model
    if n_threads is not None:
        kwargs['n_threads'] = n_threads
    finder = finder_cls(threshold, fwhm, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        table = finder(data - median, mask=mask)
    if table is None:
        table = _empty_table()
    info = {'median': float(median), 'std': float(std),
            'threshold': float(threshold)}
    return table, info


def add_sky_columns(table, wcs, skycoord=True):
    """
    Add ``sky_centroid`` (unless ``skycoord`` is false), ``ra`` and
    ``dec`` (deg) columns in place.
    """
    import astropy.units as u
    import numpy as np

    if len(table) == 0:
        table['ra'] = np.zeros(0) * u.deg
        table['dec'] = np.zeros(0) * u.deg
        return table
    x = np.asarray(getattr(table['x_centroid'], 'value', table['x_centroid']), float)
    y = np.asarray(getattr(table['y_centroid'], 'value', table['y_centroid']), float)
    sky = wcs.pixel_to_world(x, y)
    if skycoord:
        table['sky_centroid'] = sky
    icrs = sky.icrs if hasattr(sky, 'icrs') else sky
    table['ra'] = icrs.ra.to(u.deg)
    table['dec'] = icrs.dec.to(u.deg)
    return table


def write_ds9_regions(table, path, radius, color='green'):
    """
    Write a DS9 region file in image coordinates (1-based pixels).

    Parameters
    ----------
    table : `~astropy.table.Table`
        Detections with ``x_centroid``, ``y_centroid`` (0-based) and ``id``.
    path : str
        Output file.
    radius : float
        Circle radius in pixels.
    """
    import numpy as np

    lines = ['# Region file format: DS9 version 4.1',
             '# written by cnnfind',
             f'global color={color} dashlist=8 3 width=1 font="helvetica 10 '
             'normal roman" select=1 highlite=1 dash=0 fixed=0 edit=1 move=1 '
             'delete=1 include=1 source=1',
             'image']
    if len(table) > 0:
        x = np.asarray(getattr(table['x_centroid'], 'value', table['x_centroid']), float)
        y = np.asarray(getattr(table['y_centroid'], 'value', table['y_centroid']), float)
        ids = (table['id'] if 'id' in table.colnames
               else np.arange(1, len(table) + 1))
        for xi, yi, sid in zip(x, y, ids):
            if np.isfinite(xi) and np.isfinite(yi):
                lines.append(f'circle({xi + 1:.3f},{yi + 1:.3f},{radius:.2f}) '
                             f'# text={{{sid}}}')
    with open(path, 'w') as fh:
        fh.write('\n'.join(lines) + '\n')
    return path


def process_image(path, outdir, stem, *, ext=None, mask_ext=None,
                  mask_file=None, fwhm=3.0,
                  threshold_sigma=5.0, min_probability=None, model=None,
                  device='auto', progress=False, regions=False, png=False,
                  title=None, n_threads=None):
    """
    Read one FITS image, find stars and write the outputs.

    Returns
    -------
    n_sources : int
    written : list of str
        The files written.
    """
    data, mask, header, label = read_image(path, ext=ext, mask_ext=mask_ext,
                                           mask_file=mask_file)
    _warn_if_denoised(header, stacklevel=2)
    table, info = detect(data, mask, fwhm=fwhm, threshold_sigma=threshold_sigma,
                         min_probability=min_probability, model=model,
                         device=device, progress=progress,
                         n_threads=n_threads)

    wcs = _celestial_wcs(header)
    if wcs is not None:
        add_sky_columns(table, wcs)

    table.meta.update({
        'cnnfind_version': _package_version(),
        'image': os.path.abspath(path),
        'extension': label,
        'fwhm': fwhm,
        'threshold_sigma': threshold_sigma,
        'threshold': info['threshold'],
        'background_median': info['median'],
        'background_std': info['std'],
        'min_probability': min_probability,
        'model': str(model) if model is not None else 'default',
    })

    os.makedirs(outdir, exist_ok=True)
    written = []
    ecsv = os.path.join(outdir, f'{stem}.ecsv')
    table.write(ecsv, format='ascii.ecsv', overwrite=True)
    written.append(ecsv)
    if regions:
        reg = os.path.join(outdir, f'{stem}.reg')
        write_ds9_regions(table, reg, radius=1.5 * fwhm)
        written.append(reg)
    if png:
        from cnnfind._plotting import _save_overlay

        png_path = os.path.join(outdir, f'{stem}.png')
        _save_overlay(data, table, png_path, title=title or Path(path).name,
                      radius=1.5 * fwhm)
        written.append(png_path)
    return len(table), written



def _read_table(path, what):
    """Read a table (ECSV, FITS, CSV, ...) or raise a `CLIError`."""
    from astropy.table import QTable

    if not os.path.isfile(path):
        raise CLIError(f'{what} table {path}: no such file')
    try:
        return QTable.read(path)
    except Exception as exc:  # unknown format, corrupt file, ...
        raise CLIError(f'{what} table {path} cannot be read '
                       f'({type(exc).__name__}: {exc})') from None


def _table_for(source, stem, suffix='.ecsv'):
    """
    The file of one image: ``source`` itself when it is a file,
    ``source/<stem><suffix>`` when it is a directory (e.g. the output
    directory of ``cnnfind find``), or `None`.
    """
    if source is None:
        return None
    if os.path.isdir(source):
        return os.path.join(source, f'{stem}{suffix}')
    return source


def _mask_for(args, stem):
    """The ``--mask-file`` of one image (absolute for a Dask run)."""
    return _absolute(_table_for(args.mask_file, stem, '.fits'), args)


def _check_table_source(source, option):
    """Message for a ``--positions``/``--mask-file``... that cannot work."""
    if source is not None and not os.path.exists(source):
        return f'{option} {source}: no such file or directory'
    return None


# ---------------------------------------------------------------------------
# Running a batch from a sub-command
# ---------------------------------------------------------------------------

def _usage_error(command, message):
    print(f'cnnfind {command}: error: {message}', file=sys.stderr)
    return EXIT_USAGE


def run_files(args, command, task, items, labels, *, what='images',
              check_tool=True):
    """
    Run ``task`` over ``items`` with the batch options of ``args`` and
    return the exit status (after printing the summary).

    The tool is built once here first, so that a bad option of the tool
    (an unusable model file, an out-of-range value) is a usage error
    rather than one failure per file; a run in this process reuses it.

    Returns
    -------
    status : int
        The exit status.
    outcomes : list of `cnnfind._batch.Outcome`
        One per item (empty after a usage error).
    """
    jobs = getattr(args, 'jobs', 1) or 1
    scheduler = getattr(args, 'scheduler', None)
    msg = (_check_table_source(getattr(args, 'mask_file', None), '--mask-file')
           or check_batch_options(jobs, scheduler))
    if msg:
        return _usage_error(command, msg), []
    tool = None
    if check_tool:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                tool = task.setup(**task.setup_kwargs)
        except (ValueError, TypeError, OSError, RuntimeError, CLIError) as exc:
            return _usage_error(command, _exc_text(exc)), []
    try:
        outcomes = run_batch(task, items, labels, jobs=jobs,
                             scheduler=scheduler,
                             progress=getattr(args, 'progress', False),
                             tool=tool, command=f'cnnfind {command}')
    except CLIError as exc:  # the scheduler cannot be reached
        return _usage_error(command, str(exc)), []
    return summarize(task, outcomes, what=what), outcomes


def _exc_text(exc):
    return str(exc) if isinstance(exc, CLIError) else f'{exc}'


def _inner_progress(args, n_items):
    """Show a tool's own (tile) progress bar only for one file run here."""
    return bool(args.progress and n_items == 1 and (args.jobs or 1) == 1
                and args.scheduler is None)


def _absolute(path, args):
    """
    ``path`` made absolute for a Dask run (whose workers may have another
    working directory); as given otherwise, so that messages show it.
    """
    if path is None or getattr(args, 'scheduler', None) is None:
        return path
    return os.path.abspath(path)


# ---------------------------------------------------------------------------
# cnnfind demo
# ---------------------------------------------------------------------------

def _cmd_demo(args):
    try:
        path = find_m13()
    except CLIError as exc:
        print(f'cnnfind demo: error: {exc}', file=sys.stderr)
        return EXIT_FAILED
    print(f'Running CNNStarFinder on the SkyView M13 frame shipped with astropy:\n'
          f'  {path}')
    try:
        n, written = process_image(path, args.outdir, 'm13', fwhm=args.fwhm,
                                   threshold_sigma=args.threshold_sigma,
                                   device=args.device, png=True,
                                   title='M13 (SkyView) - CNNStarFinder')
    except ImportError as exc:
        print(f'cnnfind demo: error: {exc}', file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        print(f'cnnfind demo: error: {type(exc).__name__}: {exc}', file=sys.stderr)
        return EXIT_FAILED
    print(f'Found {n} stars.')
    for item in written:
        print(f'  wrote {item}')
    return EXIT_OK


# ---------------------------------------------------------------------------
# cnnfind find
# ---------------------------------------------------------------------------

def _find_setup(**options):
    """The ``find`` tool: the finder class (checked once) and the options."""
    finder_cls = _get_finder_class()
    kwargs = {'device': options['device']}
    for key in ('model', 'min_probability', 'n_threads'):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    # builds the finder once: loads and checks the model, validates options
    finder_cls(1.0, options['fwhm'], **kwargs)
    return SimpleNamespace(**options)


def _find_file(tool, item):
    path, outdir, stem, mask_file = item
    n, written = process_image(
        path, outdir, stem, ext=tool.ext, mask_ext=tool.mask_ext,
        mask_file=mask_file,
        fwhm=tool.fwhm, threshold_sigma=tool.threshold_sigma,
        min_probability=tool.min_probability, model=tool.model,
        device=tool.device, progress=tool.progress, regions=tool.regions,
        png=tool.png, n_threads=tool.n_threads)
    return FileResult(written=written, count=n)


def _cmd_find(args):
    if args.min_probability is not None and not 0 <= args.min_probability <= 1:
        return _usage_error('find', '--min-probability must be between 0 and 1')
    if args.model is not None and not os.path.isfile(args.model):
        return _usage_error('find', f'--model {args.model}: no such file')
    msg = check_output_dir(args.outdir)
    if msg:
        return _usage_error('find', msg)
    images = args.images
    outdir = _absolute(args.outdir, args)
    os.makedirs(outdir, exist_ok=True)
    task = Task(_find_setup, _find_file, noun='sources', setup_kwargs=dict(
        ext=_parse_ext(args.ext), mask_ext=_parse_ext(args.mask_ext),
        fwhm=args.fwhm, threshold_sigma=args.threshold_sigma,
        min_probability=args.min_probability,
        model=_absolute(args.model, args),
        device=args.device, progress=_inner_progress(args, len(images)),
        regions=args.regions, png=args.png,
        n_threads=worker_threads(args.jobs, args.scheduler, args.threads)))
    items = [(_absolute(p, args), outdir, stem, _mask_for(args, stem))
             for p, stem in zip(images, _unique_stems(images))]
    return run_files(args, 'find', task, items, images)[0]


# ---------------------------------------------------------------------------
# cnnfind denoise
# ---------------------------------------------------------------------------

def denoise_file(path, out_path, *, ext=None, mask_ext=None, mask_file=None,
                 model=None, device='auto', saturation='auto', fill=False,
                 progress=False, residual=False, denoiser=None,
                 restore_flux=None):
    """
    Denoise one FITS image and write it (header kept, with HISTORY).

    ``denoiser`` is an `~cnnfind.denoise.N2VDenoiser` to use (and reuse)
    instead of building one from ``model``, ``device``, ``saturation``
    and ``restore_flux``.

    Returns
    -------
    written : list of str
    """
    import numpy as np
    from astropy.io import fits

    data, mask, header, label = read_image(path, ext=ext, mask_ext=mask_ext,
                                           mask_file=mask_file)
    den = denoiser
    if den is None:
        from cnnfind.denoise import N2VDenoiser

        den = N2VDenoiser(model, device=device, saturation=saturation,
                          restore_flux=restore_flux)
    out = den(data, mask=mask, fill=fill, progress=progress)
    hdr = header.copy() if header is not None else fits.Header()
    for key in ('BZERO', 'BSCALE', 'BLANK'):
        hdr.remove(key, ignore_missing=True)
    hdr['HISTORY'] = _denoised_history(_package_version(), den.model.name,
                                       f'{Path(path).name}[{label}]')
    written = []
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fits.PrimaryHDU(out.astype(np.float32), header=hdr).writeto(
        out_path, overwrite=True)
    written.append(str(out_path))
    if residual:
        res_path = _residual_path(out_path)
        fits.PrimaryHDU((np.asarray(data, np.float32) - out), header=hdr
                        ).writeto(res_path, overwrite=True)
        written.append(res_path)
    return written


def _residual_path(out_path):
    """``<stem>_residual<suffix>`` next to the denoised ``out_path``."""
    head, suffix = _split_fits_suffix(out_path)
    return f'{head}_residual{suffix or ".fits"}'


def _saturation_arg(text):
    if text.lower() in ('auto', 'none'):
        return None if text.lower() == 'none' else 'auto'
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number, 'auto' or 'none': {text!r}") from None


def _denoise_setup(*, model, device, saturation, n_threads, restore_flux,
                   **options):
    from cnnfind.denoise import N2VDenoiser

    den = N2VDenoiser(model, device=device, saturation=saturation,
                      n_threads=n_threads, restore_flux=restore_flux)
    return SimpleNamespace(denoiser=den, **options)


def _denoise_file(tool, item):
    path, out_path, mask_file = item
    written = denoise_file(path, out_path, ext=tool.ext,
                           mask_ext=tool.mask_ext, mask_file=mask_file,
                           fill=tool.fill,
                           progress=tool.progress, residual=tool.residual,
                           denoiser=tool.denoiser)
    return FileResult(written=written)


def _cmd_denoise(args):
    if args.model is not None and not os.path.isfile(args.model):
        return _usage_error('denoise', f'--model {args.model}: no such file')
    images = args.images
    # An -o ending in a FITS suffix (compressed or not) is a file.
    single_file = _is_fits(args.output)
    if single_file and len(images) > 1:
        return _usage_error('denoise', 'with several images, -o must be a '
                                       'directory')
    msg = (check_output_file(args.output, _DENOISE_OUTPUT_SUFFIXES)
           if single_file else check_output_dir(args.output))
    if msg:
        return _usage_error('denoise', msg)
    output = _absolute(args.output, args)
    task = Task(_denoise_setup, _denoise_file, verb='denoised',
                setup_kwargs=dict(
                    model=_absolute(args.model, args), device=args.device,
                    saturation=args.saturation,
                    restore_flux=args.restore_flux,
                    n_threads=worker_threads(args.jobs, args.scheduler,
                                             args.threads),
                    ext=_parse_ext(args.ext),
                    mask_ext=_parse_ext(args.mask_ext), fill=args.fill,
                    progress=_inner_progress(args, len(images)),
                    residual=args.residual))
    items = [(_absolute(p, args), output if single_file else
              os.path.join(output, f'{stem}_denoised.fits'),
              _mask_for(args, stem))
             for p, stem in zip(images, _unique_stems(images))]
    return run_files(args, 'denoise', task, items, images)[0]


# ---------------------------------------------------------------------------
# cnnfind psfstars
# ---------------------------------------------------------------------------

def _psf_setup(*, selector, **options):
    from cnnfind.psfstars import PSFStarSelector

    return SimpleNamespace(selector=PSFStarSelector(**selector), **options)


def _empty_psf_table(keep_rejected):
    from astropy.table import QTable

    names = PSF_COLUMNS + (('selected', 'reason') if keep_rejected else ())
    dtypes = [int] + [float] * 9 + ([bool, str] if keep_rejected else [])
    return QTable(names=names, dtype=dtypes)


def write_epsf(data, mask, table, path, *, size, oversampling=4, maxiters=10):
    """
    Build an ePSF with `~photutils.psf.EPSFBuilder` from the selected
    stars of ``table`` and write it to a FITS file.

    Returns
    -------
    n_stars : int
        The number of stars the ePSF was built from.

    Raises
    ------
    CLIError
        With fewer than two selected stars, or when EPSFBuilder fails.
    """
    import numpy as np
    from astropy.io import fits

    from cnnfind.evaluation.psf import build_epsf
    from cnnfind.runtime.normalize import valid_pixel_mask

    if 'selected' in table.colnames:
        table = table[np.asarray(table['selected'], bool)]
    n = len(table)
    if n < 2:
        raise CLIError(f'{n} PSF star(s) selected; EPSFBuilder needs at least 2')
    valid = valid_pixel_mask(data, mask)
    # the selected stars' boxes hold no masked pixel, so the fill is unused
    image = np.where(valid, data - table.meta['sky'], 0.0)
    try:
        epsf = build_epsf(image, np.asarray(table['x_centroid'], float),
                          np.asarray(table['y_centroid'], float), size=size,
                          oversampling=oversampling, maxiters=maxiters,
                          local_sky=True)
    except ValueError as exc:  # EPSFBuilder's own failures
        raise CLIError(f'EPSFBuilder could not build an ePSF from the {n} '
                       f'selected stars: {exc}') from exc
    if epsf is None:
        raise CLIError('EPSFBuilder could not build an ePSF from the '
                       f'{n} selected stars')
    over = np.atleast_1d(epsf.oversampling)
    hdr = fits.Header()
    hdr['OVERSAMP'] = (int(over[0]), 'ePSF oversampling (pixels per pixel)')
    hdr['NSTARS'] = (n, 'stars the ePSF was built from')
    hdr['FWHM'] = (float(table.meta['fwhm']), 'PSF FWHM used (pixels)')
    hdr['HISTORY'] = (f'cnnfind {_package_version()} PSFStarSelector + '
                      'photutils EPSFBuilder')
    fits.PrimaryHDU(np.asarray(epsf.data, np.float32), header=hdr).writeto(
        path, overwrite=True)
    return n


def _psf_file(tool, item):
    path, outdir, stem, candidates, mask_file = item
    data, mask, header, label = read_image(path, ext=tool.ext,
                                           mask_ext=tool.mask_ext,
                                           mask_file=mask_file)
    cands = None if candidates is None else _read_table(candidates,
                                                       'candidates')
    sel = tool.selector
    try:
        table = sel.select(data, mask, candidates=cands,
                           keep_rejected=tool.keep_rejected)
    except ValueError as exc:  # no position columns, constant image, ...
        raise CLIError(f'{path}: {exc}') from None
    if table is None:
        table = _empty_psf_table(tool.keep_rejected)
    wcs = _celestial_wcs(header)
    if wcs is not None:
        add_sky_columns(table, wcs)
    n_sel = (int(sum(table['selected'])) if 'selected' in table.colnames
             else len(table))
    table.meta.update({
        'cnnfind_version': _package_version(),
        'image': os.path.abspath(path),
        'extension': label,
        'candidates': candidates or 'CNNStarFinder',
        # the selector's own record first: a Dask worker may share it
        'fwhm': table.meta.get('fwhm', sel.fwhm_used_),
        'n_selected': n_sel,
        'model': sel.model.name,
    })
    table.meta.setdefault('min_score', sel.min_score)
    os.makedirs(outdir, exist_ok=True)
    ecsv = os.path.join(outdir, f'{stem}.ecsv')
    table.write(ecsv, format='ascii.ecsv', overwrite=True)
    written = [ecsv]
    if tool.epsf:
        epsf_path = os.path.join(outdir, f'{stem}_epsf.fits')
        try:
            write_epsf(data, mask, table, epsf_path, size=tool.epsf_size,
                       oversampling=tool.oversampling,
                       maxiters=tool.epsf_maxiters)
        except CLIError as exc:
            raise CLIError(f'{exc} (the table {ecsv} was written, no ePSF)') \
                from None
        written.append(epsf_path)
    return FileResult(written=written, count=n_sel)


def _cmd_psfstars(args):
    if args.model is not None and not os.path.isfile(args.model):
        return _usage_error('psfstars', f'--model {args.model}: no such file')
    msg = (check_output_dir(args.outdir)
           or _check_table_source(args.candidates, '--candidates'))
    if msg:
        return _usage_error('psfstars', msg)
    if args.epsf_size is not None and (args.epsf_size % 2 == 0
                                       or args.epsf_size > args.size):
        return _usage_error('psfstars', '--epsf-size must be odd and at most '
                                        f'--size ({args.size})')
    images = args.images
    outdir = _absolute(args.outdir, args)
    os.makedirs(outdir, exist_ok=True)
    selector = dict(
        fwhm=args.fwhm, min_score=args.min_score, size=args.size,
        min_snr=args.min_snr, isolation=args.isolation,
        neighbour_flux_ratio=args.neighbour_flux_ratio,
        saturation=args.saturation, max_stars=args.max_stars,
        threshold=args.threshold_sigma, model=_absolute(args.model, args),
        device=args.device,
        n_threads=worker_threads(args.jobs, args.scheduler, args.threads),
        progress=_inner_progress(args, len(images)))
    task = Task(_psf_setup, _psf_file, noun='PSF stars', setup_kwargs=dict(
        selector=selector, ext=_parse_ext(args.ext),
        mask_ext=_parse_ext(args.mask_ext), keep_rejected=args.keep_rejected,
        epsf=args.epsf, epsf_size=args.epsf_size or args.size,
        oversampling=args.oversampling, epsf_maxiters=args.epsf_maxiters))
    stems = _unique_stems(images)
    items = [(_absolute(p, args), outdir, stem,
              _absolute(_table_for(args.candidates, stem), args),
              _mask_for(args, stem))
             for p, stem in zip(images, stems)]
    return run_files(args, 'psfstars', task, items, images)[0]


# ---------------------------------------------------------------------------
# cnnfind morph
# ---------------------------------------------------------------------------

def _expand_inputs(inputs):
    """Files from ``inputs``; a directory gives its cutout files, sorted."""
    files = []
    for entry in inputs:
        if os.path.isdir(entry):
            found = sorted(
                os.path.join(entry, name) for name in os.listdir(entry)
                if name.lower().endswith(_CUTOUT_SUFFIXES)
                and os.path.isfile(os.path.join(entry, name)))
            if not found:
                raise CLIError(f'{entry}: directory holds no cutout files ('
                               + ', '.join(_CUTOUT_SUFFIXES) + ')')
            files.extend(found)
        else:
            files.append(entry)
    return files


def read_cutout(path, ext=None):
    """
    Read one cutout: a JPEG/PNG/TIFF image (with pillow) as uint8/uint16
    ``(H, W)`` or ``(H, W, 3)``, or a 2-D FITS image.
    """
    import numpy as np

    if _is_fits(path):
        return read_image(path, ext=ext)[0]
    if not os.path.exists(path):
        raise CLIError(f'{path}: no such file')
    try:
        from PIL import Image
    except ImportError:
        raise CLIError('reading JPEG/PNG cutouts needs pillow '
                       '(pip install pillow)') from None
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ('L', 'I;16', 'I;16B', 'I;16L', 'I', 'F'):
                arr = np.asarray(img)
            elif img.mode == 'LA':
                arr = np.asarray(img.convert('L'))
            else:
                arr = np.asarray(img.convert('RGB'))
    except Exception as exc:  # UnidentifiedImageError, truncated file, ...
        raise CLIError(f'{path}: cannot be read as an image ({exc})') from None
    if arr.dtype.kind == 'i':  # 32-bit integer mode 'I'
        arr = arr.astype(np.float32)
    return arr


def _morph_setup(*, classifier, **options):
    from cnnfind.morphology import GalaxyMorphClassifier

    return SimpleNamespace(classifier=GalaxyMorphClassifier(**classifier),
                           **options)


def _morph_file(tool, item):
    kind, path, positions, mask_file = item
    clf = tool.classifier
    if kind == 'cutout':
        arr = read_cutout(path, ext=tool.ext)
        try:
            table = clf(arr[None])
        except (ValueError, TypeError) as exc:
            raise CLIError(f'{path}: {exc}') from None
        table['file'] = [Path(path).name]
        return FileResult(count=1, payload=table,
                          note=f'{table["label"][0]}')
    data, mask, header, _ = read_image(path, ext=tool.ext,
                                       mask_ext=tool.mask_ext,
                                       mask_file=mask_file)
    pos = None if positions is None else _read_table(positions, 'positions')
    try:
        table = clf(data, mask=mask, positions=pos)
    except (ValueError, TypeError) as exc:
        raise CLIError(f'{path}: {exc}') from None
    if table is None:
        return FileResult(count=0, payload=None)
    table['file'] = [Path(path).name] * len(table)
    wcs = _celestial_wcs(header)
    if wcs is not None:
        add_sky_columns(table, wcs, skycoord=False)
    counts = {}
    for label in table['label']:
        counts[str(label)] = counts.get(str(label), 0) + 1
    note = '(' + ', '.join(f'{v} {k}' for k, v in sorted(counts.items())) + ')'
    return FileResult(count=len(table), payload=table,
                      note=note if len(table) else '')


def _combine_morph(tables, classes, cutouts):
    """One table from the per-file tables, ``file`` as the first column."""
    import astropy.units as u
    import numpy as np
    from astropy.table import QTable, vstack

    tables = [t for t in tables if t is not None and len(t)]
    if not tables:
        names = (['file', 'id'] + ([] if cutouts else ['x_centroid',
                                                        'y_centroid'])
                 + [f'p_{c}' for c in classes] + ['label', 'masked_fraction'])
        dtypes = [str, int] + [float] * (len(names) - 4) + [str, float]
        return QTable(names=names, dtype=dtypes)
    if any('ra' in t.colnames for t in tables):
        for t in tables:
            if 'ra' not in t.colnames:
                t['ra'] = np.full(len(t), np.nan) * u.deg
                t['dec'] = np.full(len(t), np.nan) * u.deg
    out = vstack(tables, metadata_conflicts='silent')
    if cutouts:
        out['id'] = np.arange(1, len(out) + 1)
    order = ['file'] + [c for c in out.colnames if c != 'file']
    return out[order]


def _cmd_morph(args):
    if args.model is not None and not os.path.isfile(args.model):
        return _usage_error('morph', f'--model {args.model}: no such file')
    msg = (check_output_file(args.output, ('.ecsv',))
           or _check_table_source(args.positions, '--positions'))
    if msg:
        return _usage_error('morph', msg)
    if not 0 <= args.max_masked_fraction <= 1:
        return _usage_error('morph', '--max-masked-fraction must be between '
                                     '0 and 1')
    try:
        files = _expand_inputs(args.inputs)
    except CLIError as exc:
        return _usage_error('morph', str(exc))
    fits_mode = [(_is_fits(f) and not args.cutout) for f in files]
    if any(fits_mode) and not all(fits_mode):
        return _usage_error('morph', 'give either FITS fields or cutouts '
                                     '(JPEG/PNG/TIFF, or FITS with '
                                     '--cutout), not both')
    field_mode = all(fits_mode)
    if args.positions is not None and not field_mode:
        return _usage_error('morph', '--positions applies to FITS fields, '
                                     'not to cutouts')
    if (args.mask_ext is not None or args.mask_file is not None) \
            and not field_mode:
        return _usage_error('morph', '--mask-ext and --mask-file apply to '
                                     'FITS fields')
    classifier = dict(model=_absolute(args.model, args), device=args.device,
                      stretch=args.stretch,
                      max_masked_fraction=args.max_masked_fraction,
                      tta=args.tta, batch_size=args.batch_size,
                      n_threads=worker_threads(args.jobs, args.scheduler,
                                               args.threads),
                      progress=_inner_progress(args, len(files)))
    task = Task(_morph_setup, _morph_file,
                noun='sources' if field_mode else '',
                setup_kwargs=dict(classifier=classifier,
                                  ext=_parse_ext(args.ext),
                                  mask_ext=_parse_ext(args.mask_ext)))
    stems = _unique_stems(files)
    items = [('field' if field_mode else 'cutout', _absolute(f, args),
              _absolute(_table_for(args.positions, stem), args) if field_mode
              else None, _mask_for(args, stem) if field_mode else None)
             for f, stem in zip(files, stems)]
    status, outcomes = run_files(args, 'morph', task, items, files,
                                 what='fields' if field_mode else 'cutouts')
    if not outcomes or not any(o.ok for o in outcomes):
        return status
    tables = [o.result.payload for o in outcomes if o.ok]
    classes = None
    if not any(t is not None and len(t) for t in tables):
        from cnnfind.morphology import GalaxyMorphClassifier

        classes = GalaxyMorphClassifier(model=args.model).classes
    table = _combine_morph(tables, classes, cutouts=not field_mode)
    table.meta.update({
        'cnnfind_version': _package_version(),
        'mode': 'field' if field_mode else 'cutouts',
        'model': str(args.model) if args.model else 'default',
        'stretch': args.stretch, 'tta': args.tta,
        'failed': [o.label for o in outcomes if not o.ok],
    })
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    table.write(args.output, format='ascii.ecsv', overwrite=True)
    print(f'Wrote {len(table)} rows to {args.output}')
    return status



# ---------------------------------------------------------------------------
# cnnfind train
# ---------------------------------------------------------------------------

def _cmd_train(args):
    import importlib
    import importlib.util

    if importlib.util.find_spec('torch') is None:
        print('cnnfind train: error: training needs PyTorch; install it with '
              '\'pip install "cnnfind[train]"\' (torch==2.13.0)', file=sys.stderr)
        return EXIT_USAGE
    try:
        module = importlib.import_module(
            f'cnnfind.training.{args.model_kind}')
    except ImportError as exc:
        print(f'cnnfind train: error: cannot import the training code ({exc}); '
              'install it with \'pip install "cnnfind[train]"\'', file=sys.stderr)
        return EXIT_USAGE
    if args.model_kind == 'n2v':
        try:
            module.main(list(args.train_args))
        except ValueError as exc:  # no images, bad patch size, ...
            print(f'cnnfind train n2v: error: {exc}', file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK
    result = module.main(list(args.train_args))
    # The scripts return an exit status or the path of the written card.
    return int(result) if isinstance(result, int) else EXIT_OK



# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------

def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number: {text!r}') from None
    if not value > 0 or value == float('inf'):
        raise argparse.ArgumentTypeError(f'must be a positive number: {text!r}')
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number: {text!r}') from None
    if not value >= 0 or value == float('inf'):
        raise argparse.ArgumentTypeError(
            f'must be a non-negative number: {text!r}')
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not an integer: {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f'must be a positive integer: {text!r}')
    return value


def _probability(text):
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f'must be between 0 and 1: {text!r}')
    return value


def add_fits_options(p, mask=True):
    """``--ext`` and (with ``mask``) ``--mask-ext``."""
    p.add_argument('--ext', metavar='N|NAME',
                   help='HDU with the image: index, EXTNAME or "EXTNAME,VER" '
                        '(default: first HDU with 2-D data)')
    if mask:
        p.add_argument('--mask-ext', metavar='N|NAME',
                       help='HDU with a bad-pixel mask (non-zero = bad), in '
                            'the image file or in --mask-file; non-finite '
                            'image pixels are always masked')
        p.add_argument('--mask-file', metavar='FITS|DIR',
                       help='FITS file with a bad-pixel mask (its first 2-D '
                            'HDU unless --mask-ext), for every image; or a '
                            'directory with <stem>.fits per image')


def add_device_option(p):
    """``--device``."""
    p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto',
                   help='where the network runs (default: %(default)s)')


def add_batch_options(p):
    """``--progress``, ``--jobs``, ``--scheduler`` and ``--threads``."""
    g = p.add_argument_group('batch')
    g.add_argument('--progress', action='store_true',
                   help='show a progress bar over files (for a single file '
                        'run here, the tool\'s own progress bar)')
    g.add_argument('-j', '--jobs', type=_positive_int, default=1, metavar='N',
                   help='process N files at once in worker processes on '
                        'this machine (default: %(default)s)')
    g.add_argument('--scheduler', metavar='ADDRESS',
                   help='run the batch on a Dask cluster: scheduler address '
                        '(tcp://host:8786) or scheduler JSON file; needs '
                        'cnnfind[dask], and the files must be readable and '
                        'the output writable by the workers')
    g.add_argument('--threads', type=_positive_int, metavar='N',
                   help='onnxruntime threads per worker (default: 1 with '
                        '--jobs > 1 or --scheduler, else onnxruntime\'s '
                        'choice)')


def _add_demo(sub):
    demo = sub.add_parser(
        'demo', help='run CNNStarFinder on the M13 image shipped with astropy',
        description='Run CNNStarFinder on the SkyView M13 frame bundled with '
                    'astropy and write <OUTDIR>/m13.ecsv and <OUTDIR>/m13.png.')
    demo.add_argument('-o', '--outdir', default='cnnfind-demo',
                      help='output directory (default: %(default)s)')
    _add_detection_options(demo)
    demo.set_defaults(func=_cmd_demo)


def _add_detection_options(p):
    p.add_argument('--fwhm', type=_positive_float, default=3.0,
                   help='FWHM of the stars in pixels (default: %(default)s)')
    p.add_argument('--threshold-sigma', type=_positive_float, default=5.0,
                   metavar='K',
                   help='detection threshold in units of the background '
                        'pixel noise (default: %(default)s)')
    add_device_option(p)


_STATUS = ('Exit status: 0 all files processed, 1 some failed, 2 usage '
           'error.')


def _add_find(sub):
    find = sub.add_parser(
        'find', help='find stars in FITS images',
        description='Find stars in FITS images. Writes <OUTDIR>/<stem>.ecsv per '
                    'image (with sky_centroid/ra/dec when the header has a '
                    'celestial WCS), optionally a DS9 region file and a PNG '
                    'overlay. ' + _STATUS)
    find.add_argument('images', nargs='+', metavar='IMAGE', help='FITS file(s)')
    find.add_argument('-o', '--outdir', required=True, help='output directory')
    add_fits_options(find)
    _add_detection_options(find)
    find.add_argument('--min-probability', type=float, metavar='P',
                      help='minimum CNN star probability (default: the '
                           "model's own)")
    find.add_argument('--model', metavar='PATH',
                      help='ONNX model file (default: the bundled model)')
    find.add_argument('--regions', action='store_true',
                      help='also write a DS9 region file <stem>.reg')
    find.add_argument('--png', action='store_true',
                      help='also write a PNG overlay <stem>.png (needs matplotlib)')
    add_batch_options(find)
    find.set_defaults(func=_cmd_find)


def _add_denoise(sub):
    den = sub.add_parser(
        'denoise', help='denoise FITS images (Noise2Void)',
        description='Denoise FITS images with N2VDenoiser. -o is the output '
                    'FITS file for one image, or a directory that receives '
                    '<stem>_denoised.fits per image. Masked and non-finite '
                    'pixels stay NaN unless --fill. ' + _STATUS)
    den.add_argument('images', nargs='+', metavar='IMAGE', help='FITS file(s)')
    den.add_argument('-o', '--output', required=True, metavar='OUT',
                     help='output .fits file (one image) or directory')
    add_fits_options(den)
    den.add_argument('--model', metavar='PATH',
                     help='ONNX model, e.g. from "cnnfind train n2v" '
                          '(default: the bundled generic model)')
    den.add_argument('--saturation', type=_saturation_arg, default='auto',
                     metavar='LEVEL|auto|none',
                     help='saturation level; saturated pixels are kept '
                          'unchanged (default: %(default)s)')
    den.add_argument('--fill', action='store_true',
                     help='fill masked pixels from their neighbourhood '
                          'instead of NaN')
    den.add_argument('--restore-flux', type=_positive_float, default=None,
                     metavar='FWHM',
                     help='PSF FWHM in pixels: add back the residual '
                          'smoothed at 2/3 of it, so that aperture fluxes '
                          'equal the data\'s (default: off)')
    den.add_argument('--residual', action='store_true',
                     help='also write <stem>_residual<suffix> beside the '
                          'output (raw - denoised)')
    add_device_option(den)
    add_batch_options(den)
    den.set_defaults(func=_cmd_denoise)


def _add_psfstars(sub):
    psf = sub.add_parser(
        'psfstars', help='select PSF stars (and build an ePSF)',
        description='Select the stars of FITS images that make the best PSF '
                    'model with PSFStarSelector. Writes <OUTDIR>/<stem>.ecsv '
                    'per image (brightest first; with sky_centroid/ra/dec '
                    'when the header has a celestial WCS) and, with --epsf, '
                    '<OUTDIR>/<stem>_epsf.fits: the ePSF photutils '
                    'EPSFBuilder builds from the selected stars. ' + _STATUS)
    psf.add_argument('images', nargs='+', metavar='IMAGE', help='FITS file(s)')
    psf.add_argument('-o', '--outdir', required=True, help='output directory')
    add_fits_options(psf)
    psf.add_argument('--fwhm', type=_positive_float, metavar='PIX',
                     help='PSF FWHM in pixels (default: estimated per image)')
    psf.add_argument('--min-score', type=_probability, metavar='S',
                     help="minimum psf_score (default: the model card's, "
                          'chosen on the validation fields)')
    psf.add_argument('--size', type=int, default=25, metavar='PIX',
                     help='box (odd) that must be inside the image and free of '
                          'masked pixels (default: %(default)s)')
    psf.add_argument('--min-snr', type=_non_negative_float, default=None,
                     help="minimum aperture signal-to-noise ratio (default: "
                          "the model card's, chosen with the score cut on "
                          'the validation fields)')
    psf.add_argument('--isolation', type=_non_negative_float, default=3.0,
                     metavar='FWHM',
                     help='reject stars with a neighbour brighter than '
                          '--neighbour-flux-ratio times their flux within '
                          'this many FWHM (default: %(default)s)')
    psf.add_argument('--neighbour-flux-ratio', type=_non_negative_float,
                     default=0.02, metavar='R',
                     help='see --isolation (default: %(default)s)')
    psf.add_argument('--saturation', type=float, metavar='LEVEL',
                     help='saturation level in data units (flat-topped cores '
                          'are always rejected)')
    psf.add_argument('--max-stars', type=_positive_int, metavar='N',
                     help='keep at most the N brightest stars')
    psf.add_argument('--threshold-sigma', type=_non_negative_float,
                     default=5.0, metavar='K',
                     help='detection threshold of the candidate stars, in '
                          'units of the image noise (default: %(default)s)')
    psf.add_argument('--candidates', metavar='TABLE|DIR',
                     help='candidate positions instead of CNNStarFinder: a '
                          'table (ECSV/FITS/CSV with x/y columns) for every '
                          'image, or a directory with <stem>.ecsv per image '
                          '(e.g. the output of "cnnfind find")')
    psf.add_argument('--keep-rejected', action='store_true',
                     help='list every candidate, with "selected" and '
                          '"reason" columns')
    psf.add_argument('--model', metavar='PATH',
                     help='ONNX model file (default: the bundled model)')
    add_device_option(psf)
    g = psf.add_argument_group('ePSF')
    g.add_argument('--epsf', action='store_true',
                   help='also build the ePSF with photutils EPSFBuilder and '
                        'write <stem>_epsf.fits (an image with fewer than 2 '
                        'selected stars then fails)')
    g.add_argument('--oversampling', type=_positive_int, default=4,
                   help='ePSF oversampling (default: %(default)s)')
    g.add_argument('--epsf-size', type=_positive_int, metavar='PIX',
                   help='cutout size of the stars (odd, default: --size)')
    g.add_argument('--epsf-maxiters', type=_positive_int, default=10,
                   metavar='N',
                   help='EPSFBuilder iterations (default: %(default)s)')
    add_batch_options(psf)
    psf.set_defaults(func=_cmd_psfstars)


def _add_morph(sub):
    morph = sub.add_parser(
        'morph', help='classify galaxies (elliptical / spiral / no galaxy)',
        description='Classify galaxies with GalaxyMorphClassifier and write '
                    'one ECSV table (a "file" column names the input). '
                    'INPUTs are either FITS fields, whose sources are found '
                    'by segmentation or read from --positions, or cutouts '
                    'centred on the objects: JPEG/PNG/TIFF files (read with '
                    'pillow), directories of them, or FITS stamps with '
                    '--cutout. ' + _STATUS)
    morph.add_argument('inputs', nargs='+', metavar='INPUT',
                       help='FITS fields, or cutout files / directories')
    morph.add_argument('-o', '--output', required=True, metavar='OUT.ecsv',
                       help='output ECSV table')
    add_fits_options(morph)
    morph.add_argument('--positions', metavar='TABLE|DIR',
                       help='source positions for FITS fields: a table with '
                            'x/y columns for every field, or a directory '
                            'with <stem>.ecsv per field (e.g. the output of '
                            '"cnnfind find")')
    morph.add_argument('--cutout', action='store_true',
                       help='treat FITS inputs as cutouts centred on one '
                            'object each')
    morph.add_argument('--stretch', choices=('auto', 'none', 'asinh'),
                       default='auto',
                       help="pixel values to display values: 'none' for "
                            "JPEG/PNG-like data, 'asinh' for linear (FITS) "
                            "data, 'auto' by data type (default)")
    morph.add_argument('--max-masked-fraction', type=float, default=0.5,
                       metavar='F',
                       help='sources with more of their stamp masked get '
                            'label "masked" (default: %(default)s)')
    morph.add_argument('--tta', action='store_true',
                       help='average over the 8 rotations/flips (8x slower)')
    morph.add_argument('--batch-size', type=_positive_int, default=256,
                       help='cutouts per network call (default: %(default)s)')
    morph.add_argument('--model', metavar='PATH',
                       help='ONNX model file (default: the bundled model)')
    add_device_option(morph)
    add_batch_options(morph)
    morph.set_defaults(func=_cmd_morph)


def _add_train(sub):
    train = sub.add_parser(
        'train', help='train a model (needs cnnfind[train])',
        description='Train a model. "cnnfind train starfinder ARGS" is the same '
                    'as "python -m cnnfind.training.starfinder ARGS"; '
                    '"cnnfind train n2v IMAGE... --out MODEL.onnx" trains a '
                    'Noise2Void denoiser on your own frames, the same as '
                    '"python -m cnnfind.training.n2v IMAGE... --out '
                    'MODEL.onnx"; "cnnfind train psfstars|morphology ARGS" '
                    'run "python -m cnnfind.training.psfstars|morphology '
                    'ARGS".',
        add_help=True)
    train.add_argument('model_kind',
                       choices=('starfinder', 'n2v', 'psfstars', 'morphology'),
                       metavar='MODEL',
                       help='which model to train: starfinder, n2v, psfstars or '
                            'morphology')
    train.add_argument('train_args', nargs=argparse.REMAINDER, metavar='ARGS',
                       help='passed on to the training script')
    train.set_defaults(func=_cmd_train)


#: The sub-commands, in the order of ``cnnfind --help``: functions
#: ``add(subparsers)``, or ``'module:function'`` names of such functions in
#: other modules (imported when the parser is built).
def _add_activations(sub):
    from cnnfind.training import activations
    p = sub.add_parser(
        'activations', help='plot the feature maps of every layer of a '
                            'network for an input image',
        description='Feature maps of each layer of one of the four networks '
                    '(or your own ONNX file) for an input image, as a figure '
                    '(needs onnx and matplotlib: pip install '
                    '"cnnfind[activations]").')
    activations.add_arguments(p)
    p.set_defaults(func=activations.run)


SUBCOMMANDS = [_add_demo, _add_find, _add_denoise, _add_psfstars, _add_morph,
               _add_train, 'cnnfind.viewer._cli:add_parser', _add_activations]


def _resolve(entry):
    if callable(entry):
        return entry
    module, _, name = entry.partition(':')
    return getattr(importlib.import_module(module), name)


def build_parser():
    """Return the `argparse.ArgumentParser` of the ``cnnfind`` command."""
    parser = argparse.ArgumentParser(
        prog='cnnfind',
        description='CNN tools for astronomical images: star finding '
                    '(a drop-in replacement for photutils DAOStarFinder), '
                    'denoising, PSF-star selection and galaxy morphology.')
    parser.add_argument('--version', action='version',
                        version=f'%(prog)s {_package_version()}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for entry in SUBCOMMANDS:
        _resolve(entry)(sub)
    return parser


def main(argv=None):
    """
    Entry point of the ``cnnfind`` command.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success, 1 when an image failed, 2 for a usage error, 130
        when interrupted (Ctrl-C).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, 'func', None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f'cnnfind {args.command}: interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
