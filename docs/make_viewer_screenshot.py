"""
Make docs/_static/viewer.png: the heatmap viewer on the SkyView M13 frame
that ships with astropy (the image of ``cnnfind demo``), slider at 0.5,
rendered by headless Chromium.

    python docs/make_viewer_screenshot.py

Needs Debian's ``chromium`` (``/usr/bin/chromium``).
"""

import subprocess
import tempfile
import threading
from pathlib import Path

from astropy.io import fits

from cnnfind.cli import find_m13
from cnnfind.viewer import ViewerState, make_server

OUT = Path(__file__).resolve().parent / '_static' / 'viewer.png'
CHROMIUM = '/usr/bin/chromium'


def main():
    with fits.open(find_m13()) as hdul:
        data = next(h.data for h in hdul if h.data is not None)
    with tempfile.TemporaryDirectory() as tmp:
        state = ViewerState(data.astype(float), name='m13.fits',
                            out=str(Path(tmp) / 'm13.ecsv'))
        server = make_server(state)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu',
                   '--disable-background-networking',
                   '--disable-component-update', '--disable-sync',
                   '--no-first-run', '--disable-quic', '--hide-scrollbars',
                   f'--user-data-dir={Path(tmp) / "profile"}',
                   '--window-size=1200,760', '--virtual-time-budget=30000',
                   f'--screenshot={OUT}', server.url + '?p=0.5']
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        finally:
            server.shutdown()
    # A 256-colour palette keeps the page's PNG small.
    from PIL import Image
    with Image.open(OUT) as im:
        small = im.convert('RGB').quantize(colors=256)
    small.save(OUT, optimize=True)
    print(f'wrote {OUT}')


if __name__ == '__main__':
    main()
