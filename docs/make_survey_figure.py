"""
Make the figure of docs/survey_training.rst: one legacypipe DECam cutout
with its Gaia stars, built into a training field, and the field's TARGET and
WEIGHT planes.

    python docs/make_survey_figure.py [--data ../shared/data]

Writes docs/_static/survey_field.png. The cutout is the one of the
legacypipe test cases with the most Gaia stars inside it.
"""

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

from cnnfind.exceptions import CNNFindWarning
from cnnfind.training.survey import build_from_files, read_field

HERE = Path(__file__).resolve().parent
OUT = HERE / '_static' / 'survey_field.png'


def _best_field(root, workdir):
    """Build every case's first cutout; keep the one with most targets."""
    best = None
    for case in sorted(root.iterdir()):
        gaia = sorted(case.glob('gaia/*.fits'))
        images = sorted(case.glob('images/**/*ooi*.fits'))
        if not gaia or not images:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', CNNFindWarning)
            path = build_from_files(images[0], gaia,
                                    Path(workdir) / f'{case.name}.fits')
        field = read_field(path)
        n = int(np.sum(field['catalog']['role'] == 'target'))
        if best is None or n > best[0]:
            best = (n, case.name, images[0].name, field)
    return best


def main(argv=None):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from astropy.visualization import ImageNormalize, ZScaleInterval

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', default=str(HERE.parent.parent / 'shared' / 'data'))
    args = p.parse_args(argv)
    root = Path(args.data) / 'real' / 'legacypipe-testcases'
    with tempfile.TemporaryDirectory() as tmp:
        n, case, name, field = _best_field(root, tmp)
    img, cat = field['image'], field['catalog']
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.9))
    norm = ImageNormalize(np.nan_to_num(img), interval=ZScaleInterval())
    axes[0].imshow(img, origin='lower', cmap='Greys_r', norm=norm)
    colours = {'target': 'tab:red', 'ignored': 'tab:orange'}
    for role, colour in colours.items():
        sel = np.asarray(cat['role']) == role
        if sel.any():
            axes[0].scatter(cat['x'][sel], cat['y'][sel], s=120,
                            facecolors='none', edgecolors=colour, label=role)
    axes[0].set_xlim(-0.5, img.shape[1] - 0.5)
    axes[0].set_ylim(-0.5, img.shape[0] - 0.5)
    axes[0].legend(loc='upper right', fontsize=7)
    axes[0].set_title(f'{case}: {name}\nGaia stars ({n} targets)', fontsize=8)
    axes[1].imshow(field['target'], origin='lower', cmap='magma')
    axes[1].set_title('TARGET (spot width grows with brightness)', fontsize=8)
    axes[2].imshow(field['weight'], origin='lower', cmap='viridis')
    axes[2].set_title('WEIGHT (0 = ignored: unlisted sources, NaN)',
                      fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(OUT, dpi=80)
    print(f'wrote {OUT} ({case}, {name}, {n} targets)')


if __name__ == '__main__':
    main()
