# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
CNNStarFinder on images whose noise is correlated between pixels
(resampled, co-added or drizzled frames, scanned photographic plates),
with the correlation factor measured from the data
(``noise_correlation='auto'``, the default) and with white noise assumed
(``noise_correlation=None``, the behaviour before version 0.x), next to
DAOStarFinder, all at the settings a user would type: ``threshold=5*std``
with ``std`` the sigma-clipped standard deviation of the pixels.

Simulated part: the sparse, crowded and faint scenarios (new seeds), as
simulated (white noise) and after a half-pixel bilinear shift or a
Gaussian smoothing of sigma 0.6 px. Purity: detections within 2 px of a
true star of any SNR; completeness: stars of SNR >= 5 (white-noise
matched-filter SNR of the unsmoothed field) found within 2 px. Real
part: the measured roughness ``q`` (1 for white noise), the factor and
the number of detections on the real frames of ``shared/data``.

    python benchmarks/starfinder_correlated_noise.py
    python benchmarks/starfinder_correlated_noise.py --seeds 7001 7002 --size 512

An experiment behind the star-finder docs page, not part of the package.
"""

import argparse
import os
import sys
import warnings

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from scipy import ndimage

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cnnfind import CNNStarFinder  # noqa: E402
from cnnfind.simulation import make_scenario  # noqa: E402
from cnnfind.training.calibrate import _greedy_match  # noqa: E402

DATA_DIR = os.environ.get('CNNFIND_DATA',
                          os.path.join(_ROOT, '..', 'shared', 'data'))

#: name -> (function of the image, shift of the star positions).
TRANSFORMS = {
    'white (as simulated)': (lambda im: im, 0.0),
    'bilinear half-pixel shift': (
        lambda im: ndimage.shift(im, (0.5, 0.5), order=1, mode='nearest'),
        0.5),
    'Gaussian smoothing 0.6 px': (
        lambda im: ndimage.gaussian_filter(im, 0.6), 0.0),
}

REAL = (('M67 DSS plate', 'astropy-data/photometry_M6707HH.fits', 2.4),
        ('M13 SkyView', 'astropy-pkg/m13_skyview_300px.fits', 3.0),
        ('Horsehead DSS2', 'astropy-data/tutorials_FITS-images_HorseHead.fits',
         3.0),
        ('M51 (IRAF dev$pix)', 'photutils-datasets/isophote_M51.fits', 3.0),
        ('Spitzer IRAC', 'astropy-data/photometry_spitzer_example_image.fits',
         3.0),
        ('VLT ISAAC', 'debian-eso-midas-testdata/'
         'ISAAC.2006-04-13T06_32_38.944.fits', 3.0),
        ('SEP NTT frame', 'sep/image.fits', 2.4),
        ('SAAO 1 m raw CCD', 'pypi-package-testdata/'
         'ccdproc_a8280271_saao1m_raw.fits', 3.0))


def _finders(std, fwhm):
    from photutils.detection import DAOStarFinder
    return {'CNN auto': CNNStarFinder(5 * std, fwhm),
            'CNN white': CNNStarFinder(5 * std, fwhm, noise_correlation=None),
            'DAO': DAOStarFinder(5 * std, fwhm)}


def _run(finder, image):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return finder(image)


def simulated(seeds, size):
    rows = []
    for scenario in ('sparse', 'crowded', 'faint'):
        for label, (transform, offset) in TRANSFORMS.items():
            counts = {}
            factors = []
            for seed in seeds:
                sim = make_scenario(scenario, shape=(size, size), seed=seed)
                img = transform(np.asarray(sim['image'], float))
                _, med, std = sigma_clipped_stats(img)
                st = sim['stars']
                xs, ys = st['x'] + offset, st['y'] + offset
                bright = st['snr'] >= 5
                for name, finder in _finders(std, sim['fwhm']).items():
                    tbl = _run(finder, img - med)
                    c = counts.setdefault(name, [0, 0, 0, 0])
                    if tbl is None:
                        c[3] += int(bright.sum())
                        continue
                    xd = np.asarray(tbl['x_centroid'], float)
                    yd = np.asarray(tbl['y_centroid'], float)
                    c[0] += len(xd)
                    c[1] += int(_greedy_match(xs, ys, xd, yd, 2.0).sum())
                    c[2] += int(_greedy_match(xd, yd, xs[bright], ys[bright],
                                              2.0).sum())
                    c[3] += int(bright.sum())
                    if name == 'CNN auto':
                        factors.append(tbl.meta['noise_correlation'])
            row = {'scenario': scenario, 'noise': label,
                   'factor': float(np.mean(factors)) if factors else np.nan}
            for name, (n, true, found, total) in counts.items():
                row[f'{name} n'] = n
                row[f'{name} P'] = true / n if n else np.nan
                row[f'{name} C'] = found / total if total else np.nan
            rows.append(row)
            print(f'  {scenario}, {label}: done', flush=True)
    return Table(rows=rows)


def real():
    from cnnfind.detection._correlation import roughness
    rows = []
    for label, rel, fwhm in REAL:
        path = os.path.join(DATA_DIR, 'real', rel)
        if not os.path.exists(path):
            print(f'  {label}: {path} missing, skipped')
            continue
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            with fits.open(path) as hdul:
                img = next(h.data for h in hdul if h.data is not None
                           and h.data.ndim == 2).astype(float)
        _, med, std = sigma_clipped_stats(img)
        row = {'image': label, 'shape': 'x'.join(map(str, img.shape)),
               'q': roughness(img, np.isfinite(img))}
        for name, finder in _finders(std, fwhm).items():
            tbl = _run(finder, img - med)
            row[name] = 0 if tbl is None else len(tbl)
            if name == 'CNN auto' and tbl is not None:
                row['factor'] = tbl.meta['noise_correlation']
        rows.append(row)
    return Table(rows=rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[7001, 7002])
    p.add_argument('--size', type=int, default=512)
    args = p.parse_args(argv)
    sim = simulated(args.seeds, args.size)
    for c in sim.colnames:
        if sim[c].dtype.kind == 'f':
            sim[c].info.format = '.2f'
    print(f'\nSimulated fields ({args.size}x{args.size}, seeds '
          f'{" ".join(map(str, args.seeds))}), threshold=5*std, default '
          'min_probability; n = detections, P = purity, C = completeness '
          'at SNR >= 5')
    sim.pprint_all()
    tab = real()
    for c in ('q', 'factor'):
        if c in tab.colnames:
            tab[c].info.format = '.2f'
    print('\nReal frames: detections at threshold=5*std (sigma-clipped std '
          'of the pixels)')
    tab.pprint_all()


if __name__ == '__main__':
    main()
