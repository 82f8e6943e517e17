# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The viewer's HTTP server (standard library only, loopback only)."""

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cnnfind.viewer._page import PAGE
from cnnfind.viewer._render import STRETCHES, encode_png, heatmap_rgba, stretch_image

__all__ = ['HOST', 'ViewerServer', 'make_server']

#: The only address the viewer listens on.
HOST = '127.0.0.1'

_MAX_BODY = 10_000


class _BadRequest(Exception):
    """A request the client got wrong (answered with 400)."""


class ViewerServer(ThreadingHTTPServer):
    """
    A `~http.server.ThreadingHTTPServer` bound to 127.0.0.1 that serves
    one `~cnnfind.viewer.ViewerState`.

    Use `make_server` to create one; ``url`` is the page's address.
    """

    daemon_threads = True
    # Do not wait for request threads on close: one may sit on an idle
    # keep-alive connection, and Ctrl-C must stop the viewer at once.
    block_on_close = False
    allow_reuse_address = False

    def __init__(self, state, port=0, *, verbose=False):
        self.state = state
        self.verbose = verbose
        self._png_cache = {}
        self._png_lock = threading.Lock()
        super().__init__((HOST, int(port)), _Handler)

    @property
    def port(self):
        return self.server_address[1]

    @property
    def url(self):
        return f'http://{HOST}:{self.port}/'

    def png(self, what):
        """PNG bytes of the stretched image or the heatmap (cached)."""
        with self._png_lock:
            if what not in self._png_cache:
                if what == 'heatmap':
                    pixels = heatmap_rgba(self.state.heatmap())
                else:
                    pixels = stretch_image(self.state.image, what)
                self._png_cache[what] = encode_png(pixels)
            return self._png_cache[what]


def make_server(state, port=0, *, verbose=False):
    """
    Create the viewer's server for ``state`` on 127.0.0.1.

    Parameters
    ----------
    state : `~cnnfind.viewer.ViewerState`
        The prepared image.
    port : int, optional
        TCP port; 0 (default) takes a free one.
    verbose : bool, optional
        Log every request to stderr.

    Returns
    -------
    server : `ViewerServer`
        Call ``serve_forever()`` (``shutdown()`` from another thread
        stops it); ``server.url`` is the page's address.
    """
    return ViewerServer(state, port, verbose=verbose)


def _probability(query):
    values = query.get('p')
    if not values:
        raise _BadRequest('missing parameter p (min_probability, 0-1)')
    try:
        p = float(values[0])
    except ValueError:
        raise _BadRequest(f'p must be a number, not {values[0]!r}') from None
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise _BadRequest(f'p must be between 0 and 1, not {values[0]!r}')
    return p


class _Handler(BaseHTTPRequestHandler):
    server_version = 'cnnfind-viewer'
    protocol_version = 'HTTP/1.1'
    # An idle keep-alive connection is closed after this many seconds.
    timeout = 60

    # -- plumbing -----------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status, body, content_type):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def _json(self, obj, status=HTTPStatus.OK):
        self._send(status, json.dumps(obj).encode(), 'application/json')

    def _error(self, status, message):
        # An unread request body must not be taken for the next request.
        self.close_connection = True
        self._json({'error': message}, status)

    def _host_ok(self):
        """Refuse other host names (DNS rebinding)."""
        host = self.headers.get('Host', '')
        port = self.server.port
        return host in (f'{HOST}:{port}', f'localhost:{port}')

    def _dispatch(self, routes):
        if not self._host_ok():
            return self._error(HTTPStatus.BAD_REQUEST, 'unexpected Host header')
        parts = urlsplit(self.path)
        route = routes.get(parts.path)
        if route is None:
            return self._error(HTTPStatus.NOT_FOUND, f'no such page: {parts.path}')
        try:
            route(parse_qs(parts.query))
        except _BadRequest as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception as exc:  # report, keep serving
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                        f'{type(exc).__name__}: {exc}')

    def do_GET(self):
        self._dispatch({'/': self._page, '/index.html': self._page,
                        '/api/info': self._info,
                        '/api/detections': self._detections,
                        '/image.png': self._image, '/heatmap.png': self._heat})

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        self._dispatch({'/api/save': self._save})

    # -- routes -------------------------------------------------------------
    def _page(self, query):
        self._send(HTTPStatus.OK, PAGE.encode(), 'text/html; charset=utf-8')

    def _info(self, query):
        self._json(self.server.state.info())

    def _detections(self, query):
        self._json(self.server.state.detections(_probability(query)))

    def _image(self, query):
        stretch = query.get('stretch', ['zscale'])[0]
        if stretch not in STRETCHES:
            raise _BadRequest(f'stretch must be one of {", ".join(STRETCHES)}')
        self._send(HTTPStatus.OK, self.server.png(stretch), 'image/png')

    def _heat(self, query):
        self._send(HTTPStatus.OK, self.server.png('heatmap'), 'image/png')

    def _save(self, query):
        origin = self.headers.get('Origin')
        if origin is not None and origin.rstrip('/') != self.server.url.rstrip('/'):
            raise _BadRequest('cross-origin request refused')
        ctype = self.headers.get('Content-Type', '').split(';')[0].strip()
        if ctype != 'application/json':
            raise _BadRequest('the body must be JSON (Content-Type: '
                              'application/json)')
        try:
            length = int(self.headers.get('Content-Length', '0'))
        except ValueError:
            raise _BadRequest('bad Content-Length') from None
        if not 0 < length <= _MAX_BODY:
            raise _BadRequest('missing or oversized body')
        try:
            body = json.loads(self.rfile.read(length))
            p = body['min_probability']
        except (ValueError, KeyError, TypeError):
            raise _BadRequest('the body must be {"min_probability": P}') from None
        p = _probability({'p': [str(p)]})
        path, rows = self.server.state.save(p)
        self._json({'path': path, 'rows': rows, 'min_probability': p})
