# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
A local web page to look at CNNStarFinder's heatmap and detections.

``cnnfind view IMAGE.fits`` (or ``python -m cnnfind.viewer IMAGE.fits``)
serves one page on 127.0.0.1: the image (zscale or asinh stretch), the
network's heatmap as an overlay, the histogram of the candidates'
probabilities, and the detections, with a ``min_probability`` slider
and a button that writes the ECSV catalogue for the chosen cut. Only the
Python standard library's `http.server` is used; the page's HTML, CSS
and JavaScript are inline and nothing is fetched from elsewhere.
"""

__all__ = ['HOST', 'ViewerServer', 'ViewerState', 'make_server']

_LAZY = {'HOST': '_server', 'ViewerServer': '_server',
         'make_server': '_server', 'ViewerState': '_state'}


def __getattr__(name):
    # Imported on first use, so that the command line (``_cli``) loads fast.
    if name in _LAZY:
        import importlib
        module = importlib.import_module(f'{__name__}.{_LAZY[name]}')
        return getattr(module, name)
    msg = f'module {__name__!r} has no attribute {name!r}'
    raise AttributeError(msg)


def __dir__():
    return sorted(__all__)
