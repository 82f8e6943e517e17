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

from cnnfind.viewer._server import HOST, ViewerServer, make_server
from cnnfind.viewer._state import ViewerState

__all__ = ['HOST', 'ViewerServer', 'ViewerState', 'make_server']
