# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Make the PSFStarSelector figure of the docs: selected and rejected stars
on the M67 plate (a real image held out of training) and the ePSF that
`photutils.psf.EPSFBuilder` builds from the selection.

::

    python benchmarks/figure_psfstars.py --out docs/_static/psfstars_m67.png
"""

import argparse
import warnings
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'real'
IMAGE = 'astropy-data/photometry_M6707HH.fits'


def main(argv=None):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from astropy.io import fits
    from astropy.visualization import ImageNormalize, LogStretch, ZScaleInterval
    from photutils.psf import EPSFBuilder

    from cnnfind.psfstars import PSFStarSelector

    p = argparse.ArgumentParser()
    p.add_argument('--out', default='docs/_static/psfstars_m67.png')
    p.add_argument('--crop', type=int, default=1059)
    args = p.parse_args(argv)
    path = DATA / IMAGE
    if not path.exists():
        print(f'{path} is absent; nothing to do')
        return
    data = fits.getdata(path).astype(np.float32)
    c = args.crop
    y0, x0 = (data.shape[0] - c) // 2, (data.shape[1] - c) // 2
    data = data[y0:y0 + c, x0:x0 + c]
    sel = PSFStarSelector()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tab = sel(data, keep_rejected=True)
        stars = sel.extract_stars(data)
        res = EPSFBuilder(oversampling=4, maxiters=10,
                          progress_bar=False)(stars)
    epsf = res[0] if isinstance(res, tuple) else res.epsf

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 5.2),
                                  gridspec_kw=dict(width_ratios=(1.6, 1)))
    norm = ImageNormalize(data, interval=ZScaleInterval())
    ax.imshow(data, origin='lower', cmap='Greys', norm=norm)
    colours = {'selected': 'lime', 'saturated': 'red', 'too faint': '0.6',
               'near edge or mask': 'orange',
               'cosmic ray / hot pixel': 'magenta',
               'not point-like / extended': 'cyan', 'odd shape': 'yellow'}
    for reason in sorted(set(tab['reason'])):
        r = tab[tab['reason'] == reason]
        if reason == 'too faint':
            continue
        col = colours.get(reason, 'dodgerblue')
        ax.scatter(r['x_centroid'], r['y_centroid'],
                   s=90 if reason == 'selected' else 50, facecolors='none',
                   edgecolors=col, lw=1.2, label=f'{reason} ({len(r)})')
    ax.legend(loc='upper right', fontsize=7, framealpha=0.8)
    ax.set_title(f'M67 (DSS plate), {c}x{c}: {int(tab["selected"].sum())}'
                 f' of {len(tab)} candidates selected', fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax2.imshow(epsf.data, origin='lower', cmap='viridis',
               norm=ImageNormalize(epsf.data, stretch=LogStretch()))
    ax2.set_title(f"ePSF from the {len(stars)} selected stars (EPSFBuilder, oversampling 4)\n"
                  f'estimated FWHM {sel.fwhm_used_:.2f} px', fontsize=9)
    ax2.set_xticks([])
    ax2.set_yticks([])
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=70)
    try:  # a palette PNG keeps the docs small
        from PIL import Image
        Image.open(args.out).convert('RGB').quantize(colors=128).save(
            args.out, optimize=True)
    except ImportError:
        pass
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
