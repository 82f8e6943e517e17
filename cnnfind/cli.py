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
    region files and PNG overlays). One unreadable file does not stop the
    batch; the exit status is 0 when every image was processed, 1 when any
    failed and 2 for a usage error.

``cnnfind denoise IMAGE [IMAGE ...] -o OUT [options]``
    Denoise FITS images with `~cnnfind.denoise.N2VDenoiser` (Noise2Void).
    ``OUT`` is the output file for a single image (``*.fits``) or else a
    directory that receives ``<stem>_denoised.fits`` per image. Same exit
    status as ``find``.

``cnnfind train starfinder [ARGS ...]``
    Train a star-finder model (needs ``pip install cnnfind[train]``); the
    arguments are passed on to ``python -m cnnfind.training.starfinder``.

``cnnfind train n2v IMAGE [IMAGE ...] --out MODEL.onnx [ARGS ...]``
    Train a Noise2Void denoiser on your own noisy frames (no clean images
    needed); the same as ``python -m cnnfind.training.n2v``.

``cnnfind train psfstars [ARGS ...]``, ``cnnfind train morphology [ARGS ...]``
    Reproduce the PSF-star scorer or the galaxy-morphology classifier; the
    same as ``python -m cnnfind.training.psfstars`` / ``.morphology``.

Everything heavy (numpy, astropy, onnxruntime, matplotlib, torch) is imported
inside the functions so that ``cnnfind --help`` stays fast.
"""

import argparse
import os
import sys
import warnings
from pathlib import Path

__all__ = ['main']

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Where astropy keeps the SkyView M13 frame used by ``cnnfind demo``.
M13_PACKAGE = 'astropy.io.fits.hdu.compressed.tests'
M13_NAME = 'data/m13.fits'

#: Columns of a CNNStarFinder table (used to write an empty table when an
#: image has no detections).
TABLE_COLUMNS = ('id', 'x_centroid', 'y_centroid', 'sharpness', 'roundness1',
                 'roundness2', 'n_pixels', 'peak', 'flux', 'mag',
                 'daofind_mag', 'probability')

_FITS_SUFFIXES = ('.fits', '.fit', '.fts')
_COMPRESSION_SUFFIXES = ('.gz', '.bz2', '.xz', '.fz')


class CLIError(Exception):
    """An error about one input, carrying a message meant for the user."""


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


def read_image(path, ext=None, mask_ext=None):
    """
    Read a 2-D image (and optionally a mask) from a FITS file.

    Parameters
    ----------
    path : str
        FITS file name.
    ext : int, str, tuple or `None`
        HDU holding the image; `None` takes the first HDU with 2-D data.
    mask_ext : int, str, tuple or `None`
        HDU holding a bad-pixel mask (non-zero pixels are masked).

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
    from astropy.io import fits

    if not os.path.exists(path):
        raise CLIError(f'{path}: no such file')
    if os.path.isdir(path):
        raise CLIError(f'{path}: is a directory, not a FITS file')
    try:
        hdul = fits.open(path, memmap=False)
    except Exception as exc:  # OSError, TypeError, ... from a non-FITS file
        raise CLIError(f'{path}: cannot be read as FITS ({exc})') from None
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
        if mask_ext is not None:
            mhdu = _select_hdu(hdul, mask_ext, path, what='mask')
            user_mask = _as_2d(mhdu.data, path, mask_ext)
            if user_mask.shape != data.shape:
                raise CLIError(f'{path}: mask extension {mask_ext!r} has shape '
                               f'{user_mask.shape} but the image has shape '
                               f'{data.shape}')
            mask |= np.asarray(user_mask) != 0
    finally:
        hdul.close()

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


def detect(data, mask=None, *, fwhm=3.0, threshold_sigma=5.0,
           min_probability=None, model=None, device='auto', progress=False):
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
    import numpy as np
    from astropy.stats import sigma_clipped_stats
    from photutils.utils.exceptions import NoDetectionsWarning

    _, median, std = sigma_clipped_stats(data, sigma=3.0, mask=mask)
    if not np.isfinite(std) or std <= 0:
        raise CLIError('the sigma-clipped background noise is zero or '
                       'undefined; is the image constant?')
    threshold = threshold_sigma * std

    finder_cls = _get_finder_class()
    kwargs = {'device': device, 'progress': progress}
    if min_probability is not None:
        kwargs['min_probability'] = min_probability
    if model is not None:
        kwargs['model'] = model
    finder = finder_cls(threshold, fwhm, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        table = finder(data - median, mask=mask)
    if table is None:
        table = _empty_table()
    info = {'median': float(median), 'std': float(std),
            'threshold': float(threshold)}
    return table, info


def add_sky_columns(table, wcs):
    """Add ``sky_centroid``, ``ra`` and ``dec`` (deg) columns in place."""
    import astropy.units as u
    import numpy as np

    if len(table) == 0:
        table['ra'] = np.zeros(0) * u.deg
        table['dec'] = np.zeros(0) * u.deg
        return table
    x = np.asarray(getattr(table['x_centroid'], 'value', table['x_centroid']), float)
    y = np.asarray(getattr(table['y_centroid'], 'value', table['y_centroid']), float)
    sky = wcs.pixel_to_world(x, y)
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


def process_image(path, outdir, stem, *, ext=None, mask_ext=None, fwhm=3.0,
                  threshold_sigma=5.0, min_probability=None, model=None,
                  device='auto', progress=False, regions=False, png=False,
                  title=None):
    """
    Read one FITS image, find stars and write the outputs.

    Returns
    -------
    n_sources : int
    written : list of str
        The files written.
    """
    data, mask, header, label = read_image(path, ext=ext, mask_ext=mask_ext)
    table, info = detect(data, mask, fwhm=fwhm, threshold_sigma=threshold_sigma,
                         min_probability=min_probability, model=model,
                         device=device, progress=progress)

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


# ---------------------------------------------------------------------------
# Sub-commands
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


def _cmd_find(args):
    if args.min_probability is not None and not 0 <= args.min_probability <= 1:
        print('cnnfind find: error: --min-probability must be between 0 and 1',
              file=sys.stderr)
        return EXIT_USAGE
    if args.model is not None and not os.path.isfile(args.model):
        print(f'cnnfind find: error: --model {args.model}: no such file',
              file=sys.stderr)
        return EXIT_USAGE
    if os.path.exists(args.outdir) and not os.path.isdir(args.outdir):
        print(f'cnnfind find: error: output {args.outdir} exists and is not a '
              'directory', file=sys.stderr)
        return EXIT_USAGE

    ext = _parse_ext(args.ext)
    mask_ext = _parse_ext(args.mask_ext)
    failures = []
    total = 0
    images = args.images
    for i, (path, stem) in enumerate(zip(images, _unique_stems(images)), 1):
        prefix = f'[{i}/{len(images)}] {path}'
        try:
            n, written = process_image(
                path, args.outdir, stem, ext=ext, mask_ext=mask_ext,
                fwhm=args.fwhm, threshold_sigma=args.threshold_sigma,
                min_probability=args.min_probability, model=args.model,
                device=args.device, progress=args.progress,
                regions=args.regions, png=args.png)
        except CLIError as exc:
            failures.append((path, str(exc)))
            print(f'{prefix}: FAILED: {exc}', file=sys.stderr)
            continue
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # keep going with the rest of the batch
            msg = f'{type(exc).__name__}: {exc}'
            failures.append((path, msg))
            print(f'{prefix}: FAILED: {msg}', file=sys.stderr)
            continue
        total += n
        print(f'{prefix}: {n} sources -> {", ".join(written)}')

    n_ok = len(images) - len(failures)
    print(f'\nSummary: {n_ok} of {len(images)} images processed, '
          f'{total} sources in all; {len(failures)} failed.')
    if failures:
        print('Failed images:', file=sys.stderr)
        for path, msg in failures:
            print(f'  {path}: {msg}', file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK



def denoise_file(path, out_path, *, ext=None, mask_ext=None, model=None,
                 device='auto', saturation='auto', fill=False,
                 progress=False, residual=False):
    """
    Denoise one FITS image and write it (header kept, with HISTORY).

    Returns
    -------
    written : list of str
    """
    import numpy as np
    from astropy.io import fits

    from cnnfind.denoise import N2VDenoiser

    data, mask, header, label = read_image(path, ext=ext, mask_ext=mask_ext)
    den = N2VDenoiser(model, device=device, saturation=saturation)
    out = den(data, mask=mask, fill=fill, progress=progress)
    hdr = header.copy() if header is not None else fits.Header()
    for key in ('BZERO', 'BSCALE', 'BLANK'):
        hdr.remove(key, ignore_missing=True)
    hdr['HISTORY'] = (f'cnnfind {_package_version()} N2VDenoiser, model '
                      f'{den.model.name}, from {Path(path).name}[{label}]')
    written = []
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fits.PrimaryHDU(out.astype(np.float32), header=hdr).writeto(
        out_path, overwrite=True)
    written.append(str(out_path))
    if residual:
        res_path = str(out_path)[:-len('.fits')] + '_residual.fits'
        fits.PrimaryHDU((np.asarray(data, np.float32) - out), header=hdr
                        ).writeto(res_path, overwrite=True)
        written.append(res_path)
    return written


def _saturation_arg(text):
    if text.lower() in ('auto', 'none'):
        return None if text.lower() == 'none' else 'auto'
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number, 'auto' or 'none': {text!r}") from None


def _cmd_denoise(args):
    if args.model is not None and not os.path.isfile(args.model):
        print(f'cnnfind denoise: error: --model {args.model}: no such file',
              file=sys.stderr)
        return EXIT_USAGE
    images = args.images
    single_file = args.output.lower().endswith(_FITS_SUFFIXES)
    if single_file and len(images) > 1:
        print('cnnfind denoise: error: with several images, -o must be a '
              'directory', file=sys.stderr)
        return EXIT_USAGE
    if not single_file and os.path.exists(args.output) and \
            not os.path.isdir(args.output):
        print(f'cnnfind denoise: error: output {args.output} exists and is '
              'not a directory', file=sys.stderr)
        return EXIT_USAGE
    ext = _parse_ext(args.ext)
    mask_ext = _parse_ext(args.mask_ext)
    failures = []
    for i, (path, stem) in enumerate(zip(images, _unique_stems(images)), 1):
        prefix = f'[{i}/{len(images)}] {path}'
        out_path = (args.output if single_file else
                    os.path.join(args.output, f'{stem}_denoised.fits'))
        try:
            written = denoise_file(path, out_path, ext=ext,
                                   mask_ext=mask_ext, model=args.model,
                                   device=args.device,
                                   saturation=args.saturation,
                                   fill=args.fill, progress=args.progress,
                                   residual=args.residual)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # keep going with the rest of the batch
            msg = (str(exc) if isinstance(exc, CLIError)
                   else f'{type(exc).__name__}: {exc}')
            failures.append((path, msg))
            print(f'{prefix}: FAILED: {msg}', file=sys.stderr)
            continue
        print(f'{prefix}: wrote {", ".join(written)}')
    n_ok = len(images) - len(failures)
    print(f'\nSummary: {n_ok} of {len(images)} images denoised; '
          f'{len(failures)} failed.')
    return EXIT_FAILED if failures else EXIT_OK


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


def build_parser():
    """Return the `argparse.ArgumentParser` of the ``cnnfind`` command."""
    parser = argparse.ArgumentParser(
        prog='cnnfind',
        description='CNN-based star finder: a drop-in replacement for '
                    'photutils DAOStarFinder.')
    parser.add_argument('--version', action='version',
                        version=f'%(prog)s {_package_version()}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')

    def add_detection_options(p):
        p.add_argument('--fwhm', type=_positive_float, default=3.0,
                       help='FWHM of the stars in pixels (default: %(default)s)')
        p.add_argument('--threshold-sigma', type=_positive_float, default=5.0,
                       metavar='K',
                       help='detection threshold in units of the sigma-clipped '
                            'background noise (default: %(default)s)')
        p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto',
                       help='where the network runs (default: %(default)s)')

    demo = sub.add_parser(
        'demo', help='run CNNStarFinder on the M13 image shipped with astropy',
        description='Run CNNStarFinder on the SkyView M13 frame bundled with '
                    'astropy and write <OUTDIR>/m13.ecsv and <OUTDIR>/m13.png.')
    demo.add_argument('-o', '--outdir', default='cnnfind-demo',
                      help='output directory (default: %(default)s)')
    add_detection_options(demo)
    demo.set_defaults(func=_cmd_demo)

    find = sub.add_parser(
        'find', help='find stars in FITS images',
        description='Find stars in FITS images. Writes <OUTDIR>/<stem>.ecsv per '
                    'image (with sky_centroid/ra/dec when the header has a '
                    'celestial WCS), optionally a DS9 region file and a PNG '
                    'overlay. Exit status: 0 all images processed, 1 some '
                    'failed, 2 usage error.')
    find.add_argument('images', nargs='+', metavar='IMAGE', help='FITS file(s)')
    find.add_argument('-o', '--outdir', required=True, help='output directory')
    find.add_argument('--ext', metavar='N|NAME',
                      help='HDU with the image: index, EXTNAME or "EXTNAME,VER" '
                           '(default: first HDU with 2-D data)')
    find.add_argument('--mask-ext', metavar='N|NAME',
                      help='HDU with a bad-pixel mask (non-zero = bad); '
                           'non-finite image pixels are always masked')
    add_detection_options(find)
    find.add_argument('--min-probability', type=float, metavar='P',
                      help='minimum CNN star probability (default: the '
                           "model's own)")
    find.add_argument('--model', metavar='PATH',
                      help='ONNX model file (default: the bundled model)')
    find.add_argument('--regions', action='store_true',
                      help='also write a DS9 region file <stem>.reg')
    find.add_argument('--png', action='store_true',
                      help='also write a PNG overlay <stem>.png (needs matplotlib)')
    find.add_argument('--progress', action='store_true',
                      help='show a progress bar while the network runs')
    find.set_defaults(func=_cmd_find)

    den = sub.add_parser(
        'denoise', help='denoise FITS images (Noise2Void)',
        description='Denoise FITS images with N2VDenoiser. -o is the output '
                    'FITS file for one image, or a directory that receives '
                    '<stem>_denoised.fits per image. Masked and non-finite '
                    'pixels stay NaN unless --fill. Exit status: 0 all '
                    'images processed, 1 some failed, 2 usage error.')
    den.add_argument('images', nargs='+', metavar='IMAGE', help='FITS file(s)')
    den.add_argument('-o', '--output', required=True, metavar='OUT',
                     help='output .fits file (one image) or directory')
    den.add_argument('--ext', metavar='N|NAME',
                     help='HDU with the image (default: first HDU with 2-D '
                          'data)')
    den.add_argument('--mask-ext', metavar='N|NAME',
                     help='HDU with a bad-pixel mask (non-zero = bad)')
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
    den.add_argument('--residual', action='store_true',
                     help='also write <out>_residual.fits (raw - denoised)')
    den.add_argument('--device', choices=('auto', 'cpu', 'cuda'),
                     default='auto',
                     help='where the network runs (default: %(default)s)')
    den.add_argument('--progress', action='store_true',
                     help='show a progress bar')
    den.set_defaults(func=_cmd_denoise)

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
        0 on success, 1 when an image failed, 2 for a usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, 'func', None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return args.func(args)


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
