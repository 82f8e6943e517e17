"""
Field-mode framing of GalaxyMorphClassifier before and after the
neighbour-masked Petrosian radius.

Part 1 (``--gz1 N``): the calibration of the framing. For N Galaxy Zoo 1
cutouts (random, fixed seed) it measures the Petrosian 90 % radius of the
central galaxy on the display image, plainly (the old framing, and the one
``STAMP_SCALE`` was measured with) and as field mode now frames it
(`framed_side` with the field's segmentation), and prints the median
cutout side / R90 of both and how many sources changed radius.

Part 2: the SDSS colour JPEG of the NGC 6976 field and its linear SDSS r
frame. The sources are the largest galaxies of the SExtractor reference
catalogue of the r frame (``CLASS_STAR < 0.5``, largest ``ISOAREA_IMAGE``;
positions mapped onto the JPEG, which is the r frame enlarged 3x and
flipped). For each it prints the stamp side and label with the old framing
("before": `framed_side` without segments, i.e. the plain azimuthal-mean
radius, the stamps classified by the same network) and with the field mode
of the classifier ("after").

Usage::

    nice -n 10 python benchmarks/morph_field_framing.py [--gz1 1000] [--n-gal 8]
"""

import argparse
import time
import warnings

import numpy as np

from cnnfind.exceptions import CNNFindWarning
from cnnfind.morphology._prepare import to_network_input
from cnnfind.morphology._stamps import (
    cut_stamp,
    display_grey,
    framed_side,
    petrosian_r90,
    segment_display,
)
from cnnfind.morphology.classifier import GalaxyMorphClassifier
from cnnfind.training.morph_data import (
    _FITS_NY,
    _JPEG,
    _JPEG_SCALE,
    _SDSS_R_CAT,
    STAMP_SCALE,
    _data_dir,
    _read_fits,
    load_gz1,
    read_jpeg,
)


def gz1_ratio(n, seed=0):
    """Median cutout side / R90, plain and as field mode frames it."""
    ids, paths, labels = load_gz1()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(paths), min(n, len(paths)), replace=False)
    plain, field, masked = [], [], []
    for i in pick:
        img = read_jpeg(paths[i]).astype(np.float32) / 255.0
        grey = display_grey(img)
        x, y = (grey.shape[1] - 1) / 2, (grey.shape[0] - 1) / 2
        seg = segment_display(grey)
        plain.append(grey.shape[0] / petrosian_r90(grey, x, y))
        field.append(grey.shape[0] / (framed_side(grey, x, y, 1.0,
                                                  segments=seg)))
        masked.append(grey.shape[0] / petrosian_r90(grey, x, y,
                                                    segments=seg))
    plain, field, masked = map(np.array, (plain, field, masked))
    changed = ~np.isclose(plain, field)
    print(f'GZ1 cutouts: {len(pick)} (seed {seed})')
    print(f'  median side/R90, plain R90 (old framing):      '
          f'{np.median(plain):.3f}')
    print(f'  median side/R90, field mode now (framed_side): '
          f'{np.median(field):.3f}')
    print(f'  median side/R90, neighbour-masked R90 always:  '
          f'{np.median(masked):.3f}')
    print(f'  sources whose radius changed: {changed.sum()} '
          f'({changed.mean():.1%}); median change of those '
          f'{np.median(plain[changed] / field[changed]) if changed.any() else 1:.3f}'
          ' (new R90 / old R90)')
    print('  other margins (masked R90 used when below margin x plain):')
    for margin in (0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8):
        use = plain / masked < margin  # side/R90 is inverse to R90
        alt = np.where(use, masked, plain)
        print(f'    margin {margin:.2f}: median side/R90 {np.median(alt):.3f} '
              f'({np.median(alt) / np.median(plain) - 1:+.1%}), '
              f'{use.mean():.1%} of sources changed')


def _classify_before(clf, disp, xy):
    """
    Old framing: plain-radius stamps through the same network path as
    field mode (`to_network_input`, then the classifier's network).
    """
    grey = display_grey(disp)
    sides = np.array([framed_side(grey, x, y, clf._stamp_scale)
                      for x, y in xy])
    x = np.stack([to_network_input(cut_stamp(disp, px, py, side),
                                   crop=clf._crop, size=clf._size)[0]
                  for (px, py), side in zip(xy, sides, strict=True)])
    masked = np.array([to_network_input(cut_stamp(disp, px, py, side),
                                        crop=clf._crop, size=clf._size)[1]
                       for (px, py), side in zip(xy, sides, strict=True)])
    tbl = clf._table(clf._predict(x), masked, xy)
    prob = np.column_stack([tbl['p_elliptical'], tbl['p_spiral'],
                            tbl['p_no_galaxy']]).max(axis=1)
    return np.round(sides).astype(int), list(tbl['label']), prob


def fields(n_gal):
    from cnnfind.evaluation.peers import read_sextractor_catalog
    root = _data_dir(None) / 'real'
    cat = read_sextractor_catalog(root / 'sextractor-reference' / _SDSS_R_CAT)
    gal = np.nonzero(cat['CLASS_STAR'] < 0.5)[0]
    gal = gal[np.argsort(cat['ISOAREA_IMAGE'][gal])[::-1][:n_gal]]
    xy_r = np.column_stack([cat['X_IMAGE'][gal] - 1, cat['Y_IMAGE'][gal] - 1])
    xy_j = np.column_stack([(xy_r[:, 0] + 0.5) * _JPEG_SCALE - 0.5,
                            (_FITS_NY - 0.5 - xy_r[:, 1]) * _JPEG_SCALE - 0.5])
    jpeg = read_jpeg(root / _JPEG)
    rframe = _read_fits(root / 'astropy-data'
                        / 'visualization_reprojected_sdss_r.fits.bz2')
    clf = GalaxyMorphClassifier()
    print(f'\n{"image":<8}{"id":>5}{"x":>7}{"y":>7}{"area":>6}'
          f'{"side before":>12}{"label before":>14}{"p":>6}'
          f'{"side after":>11}{"label after":>13}{"p":>6}')
    for name, data, xy in (('JPEG', jpeg, xy_j), ('r FITS', rframe, xy_r)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', CNNFindWarning)
            after = clf(data, positions=xy)
            disp = clf._field_display(data, None)
            before = _classify_before(clf, disp, xy)
        dt = time.perf_counter() - t0
        for k, row in enumerate(after):
            p_after = max(row['p_elliptical'], row['p_spiral'],
                          row['p_no_galaxy'])
            print(f'{name:<8}{cat["NUMBER"][gal[k]]:>5}{xy[k, 0]:>7.0f}'
                  f'{xy[k, 1]:>7.0f}{cat["ISOAREA_IMAGE"][gal[k]]:>6.0f}'
                  f'{before[0][k]:>12}{before[1][k]:>14}{before[2][k]:>6.2f}'
                  f'{int(row["stamp_size"].value):>11}{row["label"]:>13}'
                  f'{p_after:>6.2f}')
        print(f'  ({name}: {dt:.1f} s for both framings)')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--gz1', type=int, default=1000,
                        help='GZ1 cutouts for the calibration (0: skip)')
    parser.add_argument('--n-gal', type=int, default=8,
                        help='largest catalogued galaxies per field')
    args = parser.parse_args()
    print(f'STAMP_SCALE (training data) = {STAMP_SCALE}')
    if args.gz1:
        gz1_ratio(args.gz1)
    fields(args.n_gal)


if __name__ == '__main__':
    main()
