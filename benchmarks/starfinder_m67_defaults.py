# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Injection-recovery on the M67 plate with CNNStarFinder at its *default*
settings, with and without the vetting stage.

``bench_starfinder.py --real`` runs every finder at the operating point
that best matches the SExtractor catalogue; this script instead runs
``CNNStarFinder(threshold, fwhm)`` as users do (default
``min_probability``), at ``threshold`` 5 and 3 times the plate's clipped
standard deviation, and injects the same stars as the benchmark (Moffat,
FWHM 2.38 px, SNR 10-200, 3 x 100 stars). Needs ``../shared/data``.

    python benchmarks/starfinder_m67_defaults.py

An experiment behind the benchmarks page, not part of the package.
"""

import os
import sys
import warnings

import numpy as np
from astropy.io import fits
from astropy.stats import sigma_clipped_stats

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cnnfind import CNNStarFinder  # noqa: E402
from cnnfind.evaluation import injection_recovery  # noqa: E402

PLATE = os.path.join(_ROOT, '..', 'shared', 'data', 'real', 'astropy-data',
                     'photometry_M6707HH.fits')
FWHM = 2.38  # median FWHM_IMAGE of the reference catalogue's bright stars


def main():
    if not os.path.exists(PLATE):
        print(f'{PLATE} not found: nothing to do')
        return
    warnings.simplefilter('ignore')
    img = fits.getdata(PLATE).astype(np.float32)
    _, med, std = sigma_clipped_stats(img)
    data = img - med
    print('vetting  threshold  min_probability  n_det  C(SNR>=10)  '
          'C[10-20]  C[20-50]  C[>50]')
    for vetting in (False, True):
        for k in (5.0, 3.0):
            finder = CNNStarFinder(k * std, FWHM, vetting=vetting)

            def run(image, finder=finder):
                tbl = finder(image)
                if tbl is None:
                    return np.zeros(0), np.zeros(0)
                return (np.asarray(tbl['x_centroid']),
                        np.asarray(tbl['y_centroid']))

            table, _ = injection_recovery(
                run, data, n=100, fwhm=FWHM, snr_range=(10.0, 200.0),
                bins=(10.0, 20.0, 50.0, np.inf), radius=3.0, seed=0,
                n_iter=3, noise_estimate='filtered')
            found = int(np.sum(table['n_found']))
            total = int(np.sum(table['n_true']))
            n_det = len(finder(data) or [])
            bins = '  '.join(f'{c:8.3f}' for c in table['completeness'])
            print(f'{vetting!s:7}  {k:9g}  {finder.min_probability:15.2f}  '
                  f'{n_det:5d}  {found / total:10.3f}  {bins}')


if __name__ == '__main__':
    main()
