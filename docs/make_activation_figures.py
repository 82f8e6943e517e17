"""
Make the activation-map figures of docs/activations.rst.

    python docs/make_activation_figures.py [--data ../shared/data]

Writes docs/_static/activations_starfinder_m13.png (the M13 frame from
SkyView through the star finder) and
docs/_static/activations_galaxymorph_spiral.png (a Galaxy Zoo spiral
through the morphology classifier).
"""

import argparse
import csv
import io
from pathlib import Path

import numpy as np
from astropy.io import fits

from cnnfind.training.activations import (
    feature_maps,
    network_input,
    plot_feature_maps,
)

HERE = Path(__file__).resolve().parent
STATIC = HERE / '_static'


def _m13(data_dir):
    path = data_dir / 'real' / 'astropy-pkg' / 'm13_skyview_300px.fits'
    if not path.exists():
        from cnnfind.cli import find_m13
        path = Path(find_m13())
    with fits.open(path) as hdul:
        img = next(h.data for h in hdul if h.data is not None).astype(float)
    return img, path.name


def _spiral(data_dir):
    """The first clockwise spiral of the classifier's test split."""
    from PIL import Image

    from cnnfind.training.morph_data import load_gz1, split_gz1
    ids, paths, _ = load_gz1(data_dir)  # the classifier's objects
    role = split_gz1(ids, seed=0)  # and its split (seed 0, shipped model)
    with open(data_dir / 'gz1' / 'labels.csv') as f:
        classes = {int(r['OBJID']): r['CLASS'] for r in csv.DictReader(f)}
    for i, path, split in zip(ids, paths, role, strict=True):
        if classes[int(i)] == '1' and split == 'test' and path.exists():
            with Image.open(path) as im:
                return np.asarray(im.convert('RGB')), path.name
    msg = 'no Galaxy Zoo test-split spiral image found'
    raise FileNotFoundError(msg)


def _save(fig, out, dpi):
    """Save as a 256-colour PNG (the maps use one colour map)."""
    from PIL import Image
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert('RGB').quantize(256).save(out, optimize=True)
    print(f'wrote {out} ({out.stat().st_size / 1024:.0f} kB)')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--data', default=str(HERE.parent.parent / 'shared'
                                         / 'data'))
    p.add_argument('--channels', type=int, default=6)
    p.add_argument('--dpi', type=int, default=72)
    args = p.parse_args(argv)
    data_dir = Path(args.data)
    STATIC.mkdir(exist_ok=True)

    img, name = _m13(data_dir)
    cut = img[150:246, 40:136]  # 96x96 of resolved stars off the core
    maps = feature_maps('starfinder', network_input('starfinder', cut,
                                                    fwhm=3.0))
    fig = plot_feature_maps(maps, max_channels=args.channels,
                            title=f'CNNStarFinder network on {name} '
                                  '[150:246, 40:136] (first '
                                  f'{args.channels} channels per layer)')
    out = STATIC / 'activations_starfinder_m13.png'
    _save(fig, out, args.dpi)

    gal, name = _spiral(data_dir)
    maps = feature_maps('galaxymorph', network_input('galaxymorph', gal))
    p_ = maps['probabilities'][0]
    fig = plot_feature_maps(maps, max_channels=args.channels, origin='upper',
                            title=f'GalaxyMorphClassifier network on Galaxy '
                                  f'Zoo {name} (p_elliptical {p_[0]:.2f}, '
                                  f'p_spiral {p_[1]:.2f}, p_no_galaxy '
                                  f'{p_[2]:.2f})')
    out = STATIC / 'activations_galaxymorph_spiral.png'
    _save(fig, out, args.dpi)


if __name__ == '__main__':
    main()
