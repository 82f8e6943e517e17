# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Self-consistency of denoising on real frames: is a denoised exposure
closer to an independent exposure of the same field than the raw one?

No truth exists for real images, but two exposures of the same field in
the same band have independent noise. If exposure A is denoised, its
mean squared difference to exposure B (resampled onto A's pixels and
scaled to A's flux units) is the denoised image's own error plus B's
noise plus what differs between the two exposures (seeing, resampling);
for the raw A it is A's noise plus the same two terms. So a denoiser
that removes noise without removing signal lowers the difference, and
one that removes signal raises it. The ratio ``MSE(method) / MSE(raw)``
is printed per pair and over all pairs (lower is better).

The frames are the Legacy Surveys pipeline test cutouts in
``../shared/data/real/legacypipe-testcases`` (DECam, 90Prime, Mosaic3):
every ordered pair of exposures of one field in one band. B is resampled
with the two WCS (bilinear) and scaled by the median ratio of the
pixels above 5 sigma in both; pixels flagged in either data-quality map,
without inverse variance, or within 3 pixels of the edge are left out,
and so are saturated stars (pixels above half the ``SATURATE`` level,
grown by 5 pixels). Pairs with fewer than 400 common pixels, or fewer
than 20 pixels above 5 sigma in both (no source to scale the fluxes by,
as in the small 90Prime and Mosaic3 cutouts), are skipped. The Gaussian
filter is matched to the header FWHM;
BM3D (if installed) gets the median noise of A's inverse-variance map.

    python benchmarks/denoise_self_consistency.py

An experiment behind the denoising page, not part of the package.
"""

import glob
import os
import re
import sys
import warnings
from itertools import permutations

import numpy as np
from astropy.io import fits
from scipy import ndimage

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cnnfind import N2VDenoiser  # noqa: E402
from cnnfind.runtime import robust_sky_noise  # noqa: E402

CASES = os.path.join(_ROOT, '..', 'shared', 'data', 'real',
                     'legacypipe-testcases')


def _load(path):
    with fits.open(path) as hdul:
        hdu = next(h for h in hdul if h.data is not None)
        data = hdu.data.astype(np.float64)
        header = hdu.header
    ivar = fits.getdata(path.replace('_ooi_', '_oow_'), 1).astype(float)
    dq = fits.getdata(path.replace('_ooi_', '_ood_'), 1)
    from astropy.wcs import WCS, FITSFixedWarning
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FITSFixedWarning)
        wcs = WCS(header)
    good = (dq == 0) & (ivar > 0) & np.isfinite(data)
    sat = header.get('SATURATE')
    if sat:
        bright = ndimage.binary_dilation(data > 0.5 * sat, iterations=5)
        good &= ~bright
    sky, _ = robust_sky_noise(data, good)
    return {'data': data, 'sky': sky, 'ivar': ivar, 'good': good,
            'wcs': wcs, 'fwhm': float(header.get('FWHM') or 4.0)}


def _resample(a, b):
    """B's sky-subtracted data and validity on A's pixel grid."""
    ny, nx = a['data'].shape
    yy, xx = np.mgrid[:ny, :nx]
    sky = a['wcs'].pixel_to_world(xx.ravel(), yy.ravel())
    bx, by = b['wcs'].world_to_pixel(sky)
    coords = np.vstack([by, bx])
    val = ndimage.map_coordinates(b['data'] - b['sky'], coords, order=1,
                                  mode='constant', cval=np.nan)
    ok = ndimage.map_coordinates(b['good'].astype(float), coords, order=1,
                                 mode='constant', cval=0.0) > 0.999
    inside = ((bx >= 3) & (by >= 3) & (bx <= b['data'].shape[1] - 4)
              & (by <= b['data'].shape[0] - 4))
    return val.reshape(ny, nx), (ok & inside).reshape(ny, nx)


def _methods(den, fwhm, noise):
    out = {'raw': lambda im: im,
           'gaussian': lambda im: ndimage.gaussian_filter(im, fwhm / 2.3548),
           'n2v': lambda im: np.asarray(den(im), float)}
    try:
        import bm3d
        out['bm3d'] = lambda im: np.asarray(
            bm3d.bm3d(im, sigma_psd=noise), float)
    except ImportError:
        pass
    return out


def main():
    if not os.path.isdir(CASES):
        print(f'{CASES} not found: nothing to do')
        return
    den = N2VDenoiser(device='cpu')
    rows = []
    for case in sorted(os.listdir(CASES)):
        paths = sorted(glob.glob(os.path.join(CASES, case, 'images', '**',
                                              '*_ooi_*.fits'),
                                 recursive=True))
        bands = {}
        for p in paths:
            m = re.search(r'_ooi_([a-z]+)_', os.path.basename(p))
            bands.setdefault(m.group(1), []).append(p)
        for band, group in sorted(bands.items()):
            frames = {p: _load(p) for p in group}
            for pa, pb in permutations(group, 2):
                a, b = frames[pa], frames[pb]
                y, ok_b = _resample(a, b)
                use = a['good'] & ok_b
                x = a['data'] - a['sky']
                noise = float(np.median(1 / np.sqrt(a['ivar'][a['good']])))
                both = use & (x > 5 * noise) & (y > 5 * noise)
                if use.sum() < 400 or both.sum() < 20:
                    continue
                scale = float(np.median(y[both] / x[both]))
                y = y / scale
                res = {}
                for name, fn in _methods(den, a['fwhm'],
                                          noise).items():
                    with warnings.catch_warnings():
                        warnings.simplefilter('ignore')
                        est = fn(a['data'].astype(np.float32)) - a['sky']
                    res[name] = float(np.mean((est[use] - y[use]) ** 2))
                rows.append((case, band, os.path.basename(pa)[:22],
                             os.path.basename(pb)[:22], int(use.sum()),
                             res))
    if not rows:
        print('no usable pairs')
        return
    names = [n for n in rows[0][5] if n != 'raw']
    print('MSE(method) / MSE(raw) against an independent exposure '
          '(lower is better; < 1: closer to the other exposure than the '
          'raw frame is)')
    head = (f'{"case":11s} {"band":4s} {"A":22s} {"B":22s} {"pixels":>6s} '
            + ' '.join(f'{n:>8s}' for n in names))
    print(head)
    print('-' * len(head))
    ratios = {n: [] for n in names}
    for case, band, a, b, n, res in rows:
        r = {k: res[k] / res['raw'] for k in names}
        for k in names:
            ratios[k].append(r[k])
        print(f'{case:11s} {band:4s} {a:22s} {b:22s} {n:6d} '
              + ' '.join(f'{r[k]:8.3f}' for k in names))
    print('-' * len(head))
    print(f'{"median of " + str(len(rows)) + " pairs":73s}'
          + ' '.join(f'{np.median(ratios[k]):8.3f}' for k in names))
    print(f'{"pairs with ratio < 1":73s}'
          + ' '.join(f'{np.sum(np.asarray(ratios[k]) < 1):8d}'
                     for k in names))


if __name__ == '__main__':
    main()
