# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Command line of the viewer: ``cnnfind view`` and ``python -m
cnnfind.viewer`` share `add_arguments` and `run`.
"""

import argparse
import os
import sys

__all__ = ['add_arguments', 'add_parser', 'main', 'run']

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DESCRIPTION = ('Serve a local web page (127.0.0.1 only) showing an image, '
               "CNNStarFinder's heatmap, the candidates' probabilities and "
               'the detections, with a min_probability slider and a button '
               'that writes the ECSV catalogue. Ctrl-C stops it.')
EPILOG = ('Exit status: 0 after Ctrl-C, 1 when the image cannot be read or '
          'the port cannot be opened, 2 for a usage error.')


def add_arguments(parser):
    """Add the viewer's arguments to an `argparse.ArgumentParser`."""
    parser.add_argument('image', metavar='IMAGE.fits', help='FITS image')
    parser.add_argument('--ext', default=None,
                        help='HDU with the image (number, name or "name,ver"; '
                             'default: the first 2-D image)')
    parser.add_argument('--mask-ext', default=None,
                        help='HDU with a bad-pixel mask (non-zero = bad)')
    parser.add_argument('--fwhm', type=float, default=None,
                        help='PSF FWHM in pixels (default: estimated from '
                             'the image, as PSFStarSelector does)')
    parser.add_argument('--threshold', '--threshold-sigma', type=float,
                        default=5.0, dest='threshold_sigma', metavar='K',
                        help='detection threshold in units of the background '
                             'pixel noise, as find --threshold-sigma '
                             '(default: 5)')
    parser.add_argument('--port', type=int, default=0,
                        help='TCP port on 127.0.0.1 (default: a free one)')
    parser.add_argument('--out', default=None,
                        help='ECSV file the Save button writes, or a '
                             'directory for IMAGE.ecsv (default: IMAGE.ecsv '
                             'in the current directory)')
    parser.add_argument('--model', default=None,
                        help='star-finder ONNX file (default: bundled model)')
    parser.add_argument('--device', default='auto',
                        choices=('auto', 'cpu', 'cuda'))
    parser.add_argument('--no-browser', action='store_true',
                        help='do not open a web browser')
    parser.add_argument('--verbose', action='store_true',
                        help='log every request')
    return parser


def add_parser(subparsers):
    """Add ``view`` to the ``cnnfind`` command's sub-parsers."""
    parser = subparsers.add_parser(
        'view', help='look at the heatmap and detections in a web page',
        description=DESCRIPTION, epilog=EPILOG)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _out_path(out, stem):
    if out is None:
        return os.path.abspath(f'{stem}.ecsv')
    if os.path.isdir(out) or out.endswith(os.sep):
        return os.path.abspath(os.path.join(out, f'{stem}.ecsv'))
    return os.path.abspath(out)


def _usage_error(message):
    print(f'cnnfind view: error: {message}', file=sys.stderr)
    return EXIT_USAGE


def build_state(args):
    """Read the image named in ``args`` and prepare a `ViewerState`."""
    from cnnfind.cli import _celestial_wcs, _output_stem, _package_version, _parse_ext, read_image
    from cnnfind.viewer._state import ViewerState

    data, mask, header, label = read_image(
        args.image, ext=_parse_ext(args.ext), mask_ext=_parse_ext(args.mask_ext))
    kwargs = {'device': args.device}
    if args.model is not None:
        kwargs['model'] = args.model
    meta = {'cnnfind_version': _package_version(),
            'image': os.path.abspath(args.image), 'extension': label}
    return ViewerState(data, mask, fwhm=args.fwhm,
                       threshold_sigma=args.threshold_sigma,
                       name=os.path.basename(args.image),
                       out=_out_path(args.out, _output_stem(args.image)),
                       meta=meta, wcs=_celestial_wcs(header), **kwargs)


def run(args):
    """
    Run the viewer until Ctrl-C; return the exit status (0 after a
    normal stop, 1 when the image cannot be read or the port cannot be
    opened, 2 for bad arguments).
    """
    from cnnfind.cli import CLIError
    from cnnfind.viewer._server import make_server

    if args.fwhm is not None and not args.fwhm > 0:
        return _usage_error('--fwhm must be a positive number')
    if not args.threshold_sigma >= 0:
        return _usage_error('--threshold must be >= 0')
    if not 0 <= args.port <= 65535:
        return _usage_error('--port must be between 0 and 65535')
    if args.model is not None and not os.path.isfile(args.model):
        return _usage_error(f'--model {args.model}: no such file')
    print(f'Reading {args.image} and running CNNStarFinder'
          + (' (estimating the FWHM first)' if args.fwhm is None else '')
          + '...', flush=True)
    try:
        state = build_state(args)
    except (CLIError, ValueError) as exc:
        print(f'cnnfind view: error: {exc}', file=sys.stderr)
        return EXIT_FAILED
    if state.fwhm_estimated:
        print(f'FWHM estimated from the image: {state.fwhm:.2f} px'
              + (f' ({state.fwhm_note})' if state.fwhm_note else ''))
    try:
        server = make_server(state, args.port, verbose=args.verbose)
    except OSError as exc:
        print(f'cnnfind view: error: cannot listen on 127.0.0.1:{args.port} '
              f'({exc})', file=sys.stderr)
        return EXIT_FAILED
    print(f'Serving {state.name} at {server.url} (Ctrl-C to stop); the '
          f'Save button writes {state.out}', flush=True)
    if not args.no_browser:
        import webbrowser
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print('\nStopped.', flush=True)
    finally:
        server.server_close()
    return EXIT_OK


def main(argv=None):
    """``python -m cnnfind.viewer``."""
    parser = argparse.ArgumentParser(prog='python -m cnnfind.viewer',
                                     description=DESCRIPTION,
                                     epilog=EPILOG)
    add_arguments(parser)
    return run(parser.parse_args(argv))
