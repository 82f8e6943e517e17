# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Render the denoising figures of ``docs/denoise.rst`` (raw, denoised and
residual on real images of ``../shared/data/real``) into
``docs/_static/denoise_*.png``::

    python benchmarks/figure_denoise.py

Skips (with a message) the images that are absent.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.visualization import AsinhStretch, ImageNormalize  # noqa: E402

from cnnfind.denoise import N2VDenoiser  # noqa: E402
from cnnfind.runtime.normalize import robust_sky_noise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / 'shared' / 'data' / 'real'

#: name -> (file, (y0, y1, x0, x1) crop, title)
IMAGES = {
    'm67': ('astropy-data/photometry_M6707HH.fits', (380, 630, 380, 630),
            'M67, DSS plate scan (held out of training)'),
    'sep': ('sep/image.fits', (0, 256, 0, 256),
            'ESO NTT frame of the SEP tests (held out of training)'),
    'horsehead': ('astropy-data/tutorials_FITS-images_HorseHead.fits',
                  (300, 550, 250, 500), 'Horsehead nebula, DSS2 red'),
}


def render(name, den):
    rel, (y0, y1, x0, x1), title = IMAGES[name]
    path = DATA / rel
    if not path.exists():
        print(f'{rel} not found; skipped')
        return None
    with fits.open(path) as hdul:
        img = next(h.data for h in hdul if h.data is not None
                   and h.data.ndim == 2).astype(np.float32)
    out = den(img)
    sky, noise = robust_sky_noise(img)
    raw_c, den_c = img[y0:y1, x0:x1], out[y0:y1, x0:x1]
    res_c = raw_c - den_c
    norm = ImageNormalize(vmin=sky - 3 * noise, vmax=sky + 60 * noise,
                          stretch=AsinhStretch(0.05))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
    for ax, im, label in ((axes[0], raw_c, 'raw'),
                          (axes[1], den_c, 'N2VDenoiser')):
        ax.imshow(im, origin='lower', cmap='gray', norm=norm)
        ax.set_title(label)
    axes[2].imshow(res_c, origin='lower', cmap='gray', vmin=-4 * noise,
                   vmax=4 * noise)
    axes[2].set_title('residual (raw - denoised), +-4 sigma')
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    out_path = ROOT / 'docs' / '_static' / f'denoise_{name}.png'
    out_path.parent.mkdir(exist_ok=True)
    fig.savefig(out_path, dpi=72)
    plt.close(fig)
    # Grey-scale PNG: a third of the size of the RGBA one.
    from PIL import Image
    Image.open(out_path).convert('L').save(out_path, optimize=True)
    print(f'wrote {out_path} ({out_path.stat().st_size // 1024} kB)')
    return out_path


def main():
    den = N2VDenoiser(device='cpu')
    for name in IMAGES:
        render(name, den)


if __name__ == '__main__':
    sys.exit(main())
