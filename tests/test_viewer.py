"""Tests of the heatmap viewer (``cnnfind view`` / ``python -m cnnfind.viewer``)."""

import argparse
import glob
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import warnings
import zlib

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable
from photutils.utils.exceptions import NoDetectionsWarning

from cnnfind.detection.finder import CNNStarFinder
from cnnfind.runtime import robust_sky_noise
from cnnfind.simulation import make_scenario
from cnnfind.viewer import HOST, ViewerState, make_server
from cnnfind.viewer._cli import _out_path, add_arguments, build_state, main, run
from cnnfind.viewer._page import PAGE
from cnnfind.viewer._render import encode_png, heatmap_rgba, stretch_image

from .conftest import END_OF_RUN_REPORTS

CHROMIUM = '/usr/bin/chromium'
SLIDER_VALUES = (0.05, 0.3, 0.6, 0.9)


# -- fixtures ---------------------------------------------------------------

@pytest.fixture(scope='module')
def sim_fits(tmp_path_factory):
    """A simulated 128x128 'sparse' field written to FITS."""
    sim = make_scenario('sparse', shape=(128, 128), seed=1)
    path = tmp_path_factory.mktemp('viewer') / 'field.fits'
    fits.PrimaryHDU(sim['image']).writeto(path)
    return path, sim


def _args(*argv):
    parser = add_arguments(argparse.ArgumentParser())
    return parser.parse_args([str(a) for a in argv])


@pytest.fixture(scope='module')
def state(sim_fits):
    path, _ = sim_fits
    outdir = path.parent / 'out'
    outdir.mkdir()
    # No --fwhm: the viewer estimates it.
    return build_state(_args(path, '--threshold', 3, '--no-browser',
                             '--out', outdir))


@pytest.fixture(scope='module')
def server(state):
    srv = make_server(state)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _reference(state, p):
    """What a fresh CNNStarFinder returns at min_probability=p."""
    finder = CNNStarFinder(state.threshold, state.fwhm, min_probability=p)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        tab = finder(state.data, mask=state.mask)
    if tab is None:
        return np.zeros((0, 3))
    return np.column_stack([np.asarray(tab[c], float) for c in
                            ('x_centroid', 'y_centroid', 'probability')])


def _columns(tab):
    return np.column_stack([np.asarray(getattr(tab[c], 'value', tab[c]), float)
                            for c in ('x_centroid', 'y_centroid', 'probability')])


def _get(server, path, headers=None):
    req = urllib.request.Request(server.url + path.lstrip('/'),
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get('Content-Type'), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get('Content-Type'), exc.read()


def _post(server, path, body, content_type='application/json', headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path.lstrip('/'), data=data,
                                 method='POST',
                                 headers={'Content-Type': content_type,
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _decode_png(png):
    """Pixels of a PNG written by encode_png (8 bit, filter 0)."""
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    pos, chunks = 8, {}
    while pos < len(png):
        n = int.from_bytes(png[pos:pos + 4], 'big')
        kind = png[pos + 4:pos + 8]
        chunks[kind] = chunks.get(kind, b'') + png[pos + 8:pos + 8 + n]
        crc = int.from_bytes(png[pos + 8 + n:pos + 12 + n], 'big')
        assert crc == zlib.crc32(png[pos + 4:pos + 8 + n]) & 0xFFFFFFFF
        pos += 12 + n
    nx, ny = (int.from_bytes(chunks[b'IHDR'][i:i + 4], 'big') for i in (0, 4))
    channels = {0: 1, 6: 4}[chunks[b'IHDR'][9]]
    raw = np.frombuffer(zlib.decompress(chunks[b'IDAT']), np.uint8)
    rows = raw.reshape(ny, 1 + nx * channels)
    assert np.all(rows[:, 0] == 0)
    pix = rows[:, 1:].reshape(ny, nx, channels)
    return pix[..., 0] if channels == 1 else pix


# -- the catalogue the slider serves ----------------------------------------

@pytest.mark.parametrize('p', SLIDER_VALUES)
def test_catalogue_equals_finder(state, p):
    # The viewer re-runs the finder for each cut (the network once): the
    # answer must be what CNNStarFinder(min_probability=p) returns.
    np.testing.assert_array_equal(_columns(state.catalogue(p)),
                                  _reference(state, p))


def test_slider_values_change_the_count(state):
    counts = [len(state.catalogue(p)) for p in SLIDER_VALUES]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > counts[-1] > 0


def test_candidates_are_the_lowest_cut(state):
    assert state.LOW_CUT == 0.0
    np.testing.assert_array_equal(_columns(state.candidates),
                                  _reference(state, 0.0))


def test_heatmap_equals_finder(state):
    finder = CNNStarFinder(state.threshold, state.fwhm)
    np.testing.assert_array_equal(state.heatmap(),
                                  finder.heatmap(state.data, state.mask))


def test_background_and_threshold_as_cnnfind_find(state, sim_fits):
    median, std = robust_sky_noise(sim_fits[1]['image'])
    assert state.background == pytest.approx(median)
    assert state.threshold == pytest.approx(3.0 * std)
    np.testing.assert_allclose(state.data, sim_fits[1]['image'] - median)


def test_fwhm_estimated(state, sim_fits):
    assert state.fwhm_estimated
    assert state.fwhm_note is None
    assert state.fwhm == pytest.approx(sim_fits[1]['fwhm'], rel=0.2)


def test_fwhm_estimate_failure_is_reported():
    # Too few bright isolated stars: the fallback value is said so.
    sim = make_scenario('sparse', shape=(128, 128), seed=0)
    st = ViewerState(sim['image'], fwhm=None, threshold_sigma=3.0)
    assert st.fwhm_estimated
    assert 'could not estimate the FWHM' in st.fwhm_note
    assert st.info()['fwhm_note'] == st.fwhm_note


def test_fwhm_given_is_kept(sim_fits):
    st = ViewerState(sim_fits[1]['image'], fwhm=2.5, threshold_sigma=3.0)
    assert st.fwhm == 2.5 and not st.fwhm_estimated


@pytest.mark.parametrize('kwargs, match', [
    ({'fwhm': -1.0}, 'fwhm'),
    ({'fwhm': 3.0, 'threshold_sigma': -2.0}, 'threshold_sigma'),
])
def test_state_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViewerState(np.random.default_rng(0).normal(size=(32, 32)), **kwargs)


def test_state_constant_image():
    with pytest.raises(ValueError, match='constant'):
        ViewerState(np.ones((32, 32)), fwhm=3.0)


def test_no_candidates(tmp_path):
    # Pure noise and a 50-sigma threshold: nothing to show, an empty file.
    noise = np.random.default_rng(4).normal(100.0, 5.0, (64, 64))
    st = ViewerState(noise, fwhm=3.0, threshold_sigma=50.0,
                     out=str(tmp_path / 'none.ecsv'))
    assert len(st.candidates) == 0
    assert st.detections(0.5)['count'] == 0
    path, rows = st.save(0.5)
    assert rows == 0
    tab = QTable.read(path, format='ascii.ecsv')
    assert len(tab) == 0 and 'probability' in tab.colnames


def test_save_adds_sky_columns(sim_fits, tmp_path):
    from astropy.wcs import WCS
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [64.5, 64.5]
    wcs.wcs.cdelt = [-1e-4, 1e-4]
    path = tmp_path / 'wcs.fits'
    fits.PrimaryHDU(sim_fits[1]['image'], header=wcs.to_header()).writeto(path)
    st = build_state(_args(path, '--fwhm', 3, '--threshold', 3,
                           '--out', tmp_path / 'wcs.ecsv'))
    _, rows = st.save(0.3)
    tab = QTable.read(st.out, format='ascii.ecsv')
    assert rows == len(tab) > 0
    ra, dec = wcs.pixel_to_world_values(np.asarray(tab['x_centroid']),
                                        np.asarray(tab['y_centroid']))
    np.testing.assert_allclose(tab['ra'].to_value('deg'), ra)
    np.testing.assert_allclose(tab['dec'].to_value('deg'), dec)
    assert tab.meta['image'] == str(path)


@pytest.mark.parametrize('p', [-0.1, 1.5, float('nan')])
def test_catalogue_bad_probability(state, p):
    with pytest.raises(ValueError, match='between 0 and 1'):
        state.catalogue(p)


# -- rendering ----------------------------------------------------------------

def test_png_roundtrip_grey_and_rgba():
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (7, 5), dtype=np.uint8)
    rgba = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    np.testing.assert_array_equal(_decode_png(encode_png(grey)), grey)
    np.testing.assert_array_equal(_decode_png(encode_png(rgba)), rgba)
    with pytest.raises(ValueError, match='pixels'):
        encode_png(np.zeros((3, 3, 3), np.uint8))


@pytest.mark.parametrize('stretch', ['zscale', 'asinh'])
def test_stretch_orientation_and_nan(stretch):
    data = np.zeros((20, 30))
    data[2, 25] = 100.0           # bright pixel near the bottom right
    data[15, 3] = np.nan
    data += np.random.default_rng(1).normal(0, 1, data.shape)
    grey = stretch_image(data, stretch)
    assert grey.shape == data.shape and grey.dtype == np.uint8
    assert grey[20 - 1 - 2, 25] == 255       # flipped: origin at the bottom
    assert grey[20 - 1 - 15, 3] == 0         # NaN is black
    with pytest.raises(ValueError, match='stretch'):
        stretch_image(data, 'log')


def test_stretches_differ():
    data = np.random.default_rng(2).lognormal(0, 1.5, (40, 40))
    assert not np.array_equal(stretch_image(data, 'zscale'),
                              stretch_image(data, 'asinh'))


def test_heatmap_colours():
    heat = np.array([[0.0, 0.25], [0.5, 1.0]])
    rgba = heatmap_rgba(heat)
    assert rgba[1, 0, 3] == 0                       # heat 0: transparent
    assert rgba[0, 0, 3] == rgba[0, 1, 3] == 230    # flipped; opaque at >=0.5
    assert rgba[1, 1, 3] < rgba[0, 0, 3]


# -- the HTTP API ---------------------------------------------------------------

_PROBE = """
import socket, sys
port = int(sys.argv[1])
def reach(address):
    try:
        socket.create_connection((address, port), timeout=5).close()
        return 'open'
    except OSError:
        return 'closed'
addresses = set()
try:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(('192.0.2.1', 9))  # UDP: picks the outgoing address only
        addresses.add(s.getsockname()[0])
except OSError:
    pass
try:
    addresses.update(socket.gethostbyname_ex(socket.gethostname())[2])
except OSError:
    pass
print(reach('127.0.0.1'))
for a in sorted(addresses):
    if not a.startswith('127.'):
        print(a, reach(a))
"""


def test_binds_to_loopback_only(server):
    assert server.server_address[0] == HOST == '127.0.0.1'
    assert server.url == f'http://127.0.0.1:{server.port}/'
    # In a separate interpreter: pytest-remotedata blocks connections to
    # anything but localhost here, which would make the check vacuous.
    out = subprocess.run([sys.executable, '-c', _PROBE, str(server.port)],
                         capture_output=True, text=True, timeout=60,
                         check=True).stdout.split('\n')
    assert out[0] == 'open'
    others = [line.split() for line in out[1:] if line]
    if not others:
        pytest.skip('this machine has no non-loopback address to test')
    assert all(state == 'closed' for _, state in others), others


def test_page(server):
    status, ctype, body = _get(server, '/')
    assert status == 200 and ctype.startswith('text/html')
    page = body.decode()
    assert page == PAGE
    for element in ('slider', 'count', 'save', 'hist', 'heat', 'stretch'):
        assert f'id="{element}"' in page


def test_page_fetches_nothing_from_elsewhere():
    urls = set(re.findall(r'(?:https?:)?//[\w.-]+[^\s\'"]*', PAGE))
    # Only the SVG namespace name (an identifier, never fetched).
    assert urls == {'http://www.w3.org/2000/svg'}
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="[^"]*//', PAGE)


def test_info(server, state):
    status, ctype, body = _get(server, '/api/info')
    assert status == 200 and ctype == 'application/json'
    info = json.loads(body)
    assert (info['nx'], info['ny']) == (128, 128)
    assert info['fwhm'] == state.fwhm and info['fwhm_estimated'] is True
    assert info['threshold'] == pytest.approx(state.threshold)
    assert info['default_min_probability'] == state.default_min_probability
    assert info['out'] == state.out
    cand = info['candidates']
    assert cand['count'] == len(state.candidates) == len(cand['probability'])
    np.testing.assert_allclose(cand['probability'],
                               _reference(state, 0.0)[:, 2], atol=6e-4)


@pytest.mark.parametrize('p', SLIDER_VALUES)
def test_detections_endpoint(server, state, p):
    status, _, body = _get(server, f'/api/detections?p={p}')
    assert status == 200
    d = json.loads(body)
    ref = _reference(state, p)
    assert d['count'] == len(ref) == len(d['x'])
    np.testing.assert_allclose(np.column_stack([d['x'], d['y'],
                                                d['probability']]).reshape(-1, 3),
                               ref, atol=6e-4)


@pytest.mark.parametrize('stretch', ['zscale', 'asinh'])
def test_image_png(server, state, stretch):
    status, ctype, body = _get(server, f'/image.png?stretch={stretch}')
    assert status == 200 and ctype == 'image/png'
    np.testing.assert_array_equal(_decode_png(body),
                                  stretch_image(state.image, stretch))


def test_heatmap_png(server, state):
    status, ctype, body = _get(server, '/heatmap.png')
    assert status == 200 and ctype == 'image/png'
    pix = _decode_png(body)
    assert pix.shape == (128, 128, 4)
    np.testing.assert_array_equal(pix, heatmap_rgba(state.heatmap()))


def test_save_endpoint(server, state):
    p = 0.6
    status, d = _post(server, '/api/save', {'min_probability': p})
    assert status == 200
    assert d['path'] == state.out
    assert state.out.endswith(os.path.join('out', 'field.ecsv'))
    tab = QTable.read(d['path'], format='ascii.ecsv')
    assert d['rows'] == len(tab) == len(_reference(state, p))
    np.testing.assert_allclose(_columns(tab), _reference(state, p),
                               rtol=1e-12)
    assert tab.meta['min_probability'] == p
    assert tab.meta['threshold_sigma'] == 3.0
    assert tab.meta['fwhm'] == state.fwhm


@pytest.mark.parametrize('path, code', [
    ('/nope', 404),
    ('/api/detections', 400),
    ('/api/detections?p=abc', 400),
    ('/api/detections?p=1.5', 400),
    ('/api/detections?p=nan', 400),
    ('/image.png?stretch=log', 400),
])
def test_bad_get(server, path, code):
    status, ctype, body = _get(server, path)
    assert status == code and ctype == 'application/json'
    assert json.loads(body)['error']


@pytest.mark.parametrize('path, body, ctype, headers, code', [
    ('/api/save', {'min_probability': 2}, 'application/json', {}, 400),
    ('/api/save', {'p': 0.5}, 'application/json', {}, 400),
    ('/api/save', b'not json', 'application/json', {}, 400),
    ('/api/save', {'min_probability': 0.5}, 'text/plain', {}, 400),
    ('/api/save', {'min_probability': 0.5}, 'application/json',
     {'Origin': 'http://evil.example'}, 400),
    ('/api/other', {'min_probability': 0.5}, 'application/json', {}, 404),
])
def test_bad_post(server, state, path, body, ctype, headers, code):
    before = os.path.getmtime(state.out) if os.path.exists(state.out) else None
    status, d = _post(server, path, body, ctype, headers)
    assert status == code and d['error']
    after = os.path.getmtime(state.out) if os.path.exists(state.out) else None
    assert before == after  # nothing written


def test_foreign_host_header_refused(server):
    conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=10)
    conn.request('GET', '/api/info', headers={'Host': 'attacker.example'})
    assert conn.getresponse().status == 400
    conn.close()


# -- command line -----------------------------------------------------------------

def test_out_path(tmp_path):
    assert _out_path(None, 'm13') == os.path.abspath('m13.ecsv')
    assert _out_path(str(tmp_path), 'm13') == str(tmp_path / 'm13.ecsv')
    assert _out_path(str(tmp_path / 'a.ecsv'), 'm13') == str(tmp_path / 'a.ecsv')


@pytest.mark.parametrize('extra', [['--fwhm', '-1'], ['--threshold', '-1'],
                                   ['--port', '70000']])
def test_run_usage_errors(sim_fits, extra, capsys):
    assert run(_args(sim_fits[0], '--no-browser', *extra)) == 2
    assert 'error' in capsys.readouterr().err


def test_run_unreadable_image(tmp_path, capsys):
    bad = tmp_path / 'bad.fits'
    bad.write_text('not a FITS file')
    assert run(_args(bad, '--no-browser')) == 1
    assert 'cannot be read as FITS' in capsys.readouterr().err
    assert run(_args(tmp_path / 'missing.fits', '--no-browser')) == 1


def test_run_port_in_use(sim_fits, server, capsys):
    assert run(_args(sim_fits[0], '--no-browser', '--fwhm', 3,
                     '--port', server.port)) == 1
    assert 'cannot listen' in capsys.readouterr().err


def test_add_parser_for_cnnfind_view(sim_fits, capsys):
    from cnnfind.viewer._cli import add_parser
    parser = argparse.ArgumentParser(prog='cnnfind')
    add_parser(parser.add_subparsers(dest='command'))
    args = parser.parse_args(['view', str(sim_fits[0]), '--fwhm', '-2'])
    assert args.func is run and args.threshold_sigma == 5.0
    assert args.func(args) == 2
    assert 'cnnfind view: error: --fwhm' in capsys.readouterr().err


def test_main_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(['--help'])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert '--threshold' in out and '--no-browser' in out


# -- end to end in headless Chromium ------------------------------------------

def _chromium_dom(url, tmp_path):
    profile = tmp_path / 'chromium-profile'
    cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu',
           '--disable-background-networking', '--disable-component-update',
           '--disable-sync', '--no-first-run', '--disable-quic',
           '--disable-extensions', f'--user-data-dir={profile}',
           '--virtual-time-budget=30000', '--dump-dom', url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason=f'{CHROMIUM} is not installed (apt-get install chromium)')
def test_browser_slider_and_save(server, state, tmp_path):
    if os.path.exists(state.out):
        os.remove(state.out)
    low, high = 0.05, 0.9
    dom = _chromium_dom(f'{server.url}?p={low},{high}&autosave=1'
                        '&stretch=asinh&heatmap=0', tmp_path)
    assert 'data-done="1"' in dom, dom[-3000:]
    assert 'id="image" alt="image" src="image.png?stretch=asinh"' in dom
    assert re.search(r'id="heatimg"[^>]*style="display: none;"', dom)
    # The page logs each slider position it applied and its count.
    steps = [(float(p), int(n)) for p, n in
             re.findall(r'<li data-p="([\d.]+)" data-count="(\d+)"', dom)]
    assert steps[0][0] == state.default_min_probability  # the initial cut
    assert steps[-2:] == [(low, len(_reference(state, low))),
                          (high, len(_reference(state, high)))]
    assert steps[-2][1] != steps[-1][1]   # moving the slider changed it
    count = int(re.search(r'<b id="count">(\d+)</b>', dom).group(1))
    assert count == steps[-1][1]
    circles = len(re.findall(r'<circle ', dom))
    assert circles == count
    # The Save button wrote the catalogue at the slider's last value.
    saved = re.search(r'id="saved" data-rows="(\d+)" data-path="([^"]+)" '
                      r'data-p="([\d.]+)"', dom)
    assert saved, dom[-3000:]
    rows, path, p = int(saved.group(1)), saved.group(2), float(saved.group(3))
    assert p == high and path == state.out and rows == count
    tab = QTable.read(path, format='ascii.ecsv')
    np.testing.assert_allclose(_columns(tab), _reference(state, high),
                               rtol=1e-12)


def test_close_does_not_wait_for_an_idle_keep_alive_connection(state):
    # A browser keeps its connection open between requests; stopping the
    # viewer (Ctrl-C: serve_forever ends, then server_close) must not
    # wait for the request thread that sits on it.
    import socket
    srv = make_server(state)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    conn = socket.create_connection((HOST, srv.port), timeout=10)
    try:
        conn.sendall(f'GET /api/info HTTP/1.1\r\nHost: {HOST}:{srv.port}'
                     '\r\nConnection: keep-alive\r\n\r\n'.encode())
        assert conn.recv(12).startswith(b'HTTP/1.1 200')
        srv.shutdown()
        thread.join(5)
        closer = threading.Thread(target=srv.server_close, daemon=True)
        closer.start()
        closer.join(5)
        assert not closer.is_alive(), 'server_close waited for the connection'
    finally:
        conn.close()


def _pipe_holders(proc):
    """Other processes that hold the child's stdout pipe open."""
    inode = os.fstat(proc.stdout.fileno()).st_ino
    holders = []
    for fd_dir in glob.glob('/proc/[0-9]*/fd'):
        pid = int(fd_dir.split('/')[2])
        if pid == os.getpid():
            continue
        try:
            links = [os.readlink(os.path.join(fd_dir, f))
                     for f in os.listdir(fd_dir)]
        except OSError:
            continue
        if f'pipe:[{inode}]' in links:
            holders.append(pid)
    return holders


def _status_lines(pid, fields):
    """The lines of ``/proc/<pid>/status`` that start with ``fields``
    (empty if the process is gone)."""
    try:
        with open(f'/proc/{pid}/status') as f:
            return [line.strip() for line in f if line.startswith(fields)]
    except OSError:
        return []


def _proc_state(pid):
    return ' '.join(_status_lines(pid, ('State', 'Threads'))) or 'gone'


def _sigint_state():
    """This process's SIGINT handler and whether SIGINT is blocked."""
    handler = signal.getsignal(signal.SIGINT)
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return f'SIGINT handler {handler!r}, blocked {blocked}'


def _diagnose_hang(proc, parent_state=''):
    """
    If the viewer does not exit after Ctrl-C (the defect this test found,
    now fixed): report at the end of the run what the child and anything
    holding its pipes are doing, then end them (SIGABRT
    first, whose faulthandler dump shows the Python stacks, then
    SIGKILL). A pipe held by another process keeps ``communicate``
    waiting after the child itself has exited.
    """
    lines = [f'child {proc.pid}: poll() = {proc.poll()}, '
             f'{_proc_state(proc.pid)}',
             f'test process when it started the child: {parent_state}']
    lines += _status_lines(proc.pid, ('SigBlk', 'SigIgn', 'SigCgt'))
    if sys.platform.startswith('linux'):
        for pid in _pipe_holders(proc):
            try:
                with open(f'/proc/{pid}/cmdline', 'rb') as f:
                    cmd = f.read().replace(b'\0', b' ').decode(errors='replace')
            except OSError:
                cmd = '?'
            lines.append(f'pipe held by {pid} ({_proc_state(pid)}): {cmd}')
    out = err = ''
    for sig, wait in ((signal.SIGABRT, 10), (signal.SIGKILL, 10)):
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=wait)
            lines.append(f'pipes closed after signal {sig.name}')
            break
        except subprocess.TimeoutExpired:
            lines.append(f'pipes still open {wait} s after {sig.name}, '
                         f'poll() = {proc.poll()}')
    lines.append(f'"Stopped." printed: {"Stopped." in (out or "")}')
    END_OF_RUN_REPORTS.append('[viewer hang after Ctrl-C]\n' + '\n'.join(lines)
                              + '\nstderr tail:\n' + (err or '')[-6000:])


def _default_sigint():
    """In the child before exec: Ctrl-C as from a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_module_entry_point_serves_and_stops(sim_fits, tmp_path):
    # python -m cnnfind.viewer: prints the address, serves, Ctrl-C exits 0.
    # The child gets SIGINT's default disposition, as a viewer started
    # from a terminal has: a test run launched in the background (as
    # .ci/run may be) ignores SIGINT, the child would inherit that, and
    # Python then never raises KeyboardInterrupt (the defect that was
    # open here; the diagnostics below found it).
    out = tmp_path / 'cat.ecsv'
    # faulthandler: on a hang, SIGABRT makes the child print every
    # thread's stack (reported at the end of the run, see _diagnose_hang).
    env = dict(os.environ, PYTHONFAULTHANDLER='1')
    parent_state = _sigint_state()
    proc = subprocess.Popen(
        [sys.executable, '-m', 'cnnfind.viewer', str(sim_fits[0]),
         '--fwhm', '3', '--threshold', '3', '--no-browser', '--out', str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=_default_sigint)
    try:
        url = None
        for line in proc.stdout:
            found = re.search(r'(http://127\.0\.0\.1:\d+/)', line)
            if found:
                url = found.group(1)
                break
        assert url, proc.stderr.read()
        with urllib.request.urlopen(url + 'api/info', timeout=30) as r:
            info = json.loads(r.read())
        assert info['fwhm'] == 3.0 and info['fwhm_estimated'] is False
        assert info['out'] == str(out)
        proc.send_signal(signal.SIGINT)
        # communicate() drains the pipes: wait() can deadlock on a full one.
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            _diagnose_hang(proc, parent_state)
            raise
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
