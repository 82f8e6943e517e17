# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Real survey cutouts against Gaia: which Gaia sources each finder lists,
and how far from the Gaia position.

The images are the Legacy Surveys pipeline test cutouts in
``../shared/data/real/legacypipe-testcases`` (DECam, 90Prime and
Mosaic3 frames of 100-375 pixels, never used to train or calibrate
anything), with the Gaia tables that come with them. Gaia positions are
projected through each image's WCS (the pipeline's TPV solution). A Gaia
source with ``astrometric_excess_noise_sig > 2`` and an excess noise
above 1 mas is counted as extended (galaxy nuclei; a star finder should
reject those), the others as point sources. Sources within 3 pixels of
the edge and fainter than G = 20.5 are left out.

Each finder runs at a setting a user would pick without truth:
CNNStarFinder, DAOStarFinder and IRAFStarFinder at ``threshold = 5``
times the clipped standard deviation (CNNStarFinder with its default
``min_probability``), SEP, SExtractor and photutils SourceFinder at 1.5
times the background RMS (SExtractor's ``DETECT_THRESH`` of the
reference catalogues). A Gaia source is found when a detection lies
within ``max(2, FWHM / 2)`` pixels (FWHM from the image header). No mask
is given (``--mask`` passes the pipeline's data-quality map, which masks
the cores of saturated stars).

    python benchmarks/starfinder_gaia.py

An experiment behind the benchmarks page, not part of the package.
"""

import argparse
import functools
import glob
import os
import sys
import warnings

import numpy as np
from astropy.io import fits

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cnnfind.evaluation import (  # noqa: E402
    run_cnnfind,
    run_dao,
    run_iraf,
    run_sep,
    run_sextractor,
    run_sourcefinder,
    sextractor_path,
)

CASES = os.path.join(_ROOT, '..', 'shared', 'data', 'real',
                     'legacypipe-testcases')

FINDERS = [
    ('CNNStarFinder', run_cnnfind, 5.0),
    ('DAOStarFinder', run_dao, 5.0),
    ('IRAFStarFinder', run_iraf, 5.0),
    ('SourceFinder', run_sourcefinder, 1.5),
    ('SEP', run_sep, 1.5),
    ('SExtractor', run_sextractor, 1.5),
]


def _frames():
    """(case, image path, data-quality path) of every cutout with Gaia."""
    for case in sorted(os.listdir(CASES)):
        if not glob.glob(os.path.join(CASES, case, 'gaia', '*.fits')):
            continue
        pattern = os.path.join(CASES, case, 'images', '**', '*_oo[ik]_*.fits')
        for path in sorted(glob.glob(pattern, recursive=True)):
            dq = path.replace('_ooi_', '_ood_').replace('_oki_', '_ood_')
            yield case, path, dq if os.path.exists(dq) else None


@functools.lru_cache
def _gaia(case):
    """The Gaia tables of one test case (read once, shared by its frames)."""
    tables = [fits.getdata(f, 1) for f in sorted(
        glob.glob(os.path.join(CASES, case, 'gaia', '*.fits')))]
    return np.concatenate(tables)


def _positions(gaia, header, shape, margin=3, g_max=20.5):
    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS, FITSFixedWarning
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FITSFixedWarning)
        wcs = WCS(header)
    x, y = wcs.world_to_pixel(SkyCoord(gaia['ra'], gaia['dec'], unit='deg'))
    keep = ((x >= margin) & (y >= margin) & (x <= shape[1] - 1 - margin)
            & (y <= shape[0] - 1 - margin)
            & (gaia['phot_g_mean_mag'] < g_max))
    extended = ((gaia['astrometric_excess_noise_sig'] > 2)
                & (gaia['astrometric_excess_noise'] > 1.0))
    return x[keep], y[keep], extended[keep], gaia['phot_g_mean_mag'][keep]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--mask', action='store_true',
                   help="pass the pipeline's data-quality map as the mask")
    args = p.parse_args(argv)
    if not os.path.isdir(CASES):
        print(f'{CASES} not found: nothing to do')
        return
    finders = [f for f in FINDERS
               if f[0] != 'SExtractor' or sextractor_path() is not None]
    totals = {name: {'point': 0, 'ext': 0, 'off': [], 'n': 0}
              for name, _, _ in finders}
    n_point = n_ext = n_frames = 0
    for case, path, dq in _frames():
        with fits.open(path) as hdul:
            hdu = next(h for h in hdul if h.data is not None)
            data = hdu.data.astype(float)
            header = hdu.header
        gx, gy, ext, _ = _positions(_gaia(case), header, data.shape)
        if len(gx) == 0:
            continue
        mask = None
        if args.mask and dq is not None:
            mask = fits.getdata(dq, 1) != 0
            centre_ok = ~mask[np.round(gy).astype(int),
                              np.round(gx).astype(int)]
            gx, gy, ext = gx[centre_ok], gy[centre_ok], ext[centre_ok]
        fwhm = float(header.get('FWHM') or 4.0)
        radius = max(2.0, fwhm / 2)
        n_frames += 1
        n_point += int((~ext).sum())
        n_ext += int(ext.sum())
        for name, run, thr in finders:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                res = run(data, fwhm, thr, mask=mask)
            t = totals[name]
            t['n'] += len(res.x)
            if len(res.x) == 0:
                continue
            d = np.hypot(res.x[None, :] - gx[:, None],
                         res.y[None, :] - gy[:, None])
            nearest = d.min(axis=1)
            found = nearest <= radius
            t['point'] += int((found & ~ext).sum())
            t['ext'] += int((found & ext).sum())
            t['off'].extend(nearest[found & ~ext].tolist())
    print(f'Legacy Surveys test cutouts ({n_frames} frames): '
          f'{n_point} Gaia point sources and {n_ext} extended ones, '
          f'G < 20.5; mask: {"data-quality map" if args.mask else "none"}')
    print(f'{"finder":16s} {"point found":>11s} {"median off":>10s} '
          f'{"rms off":>8s} {"extended listed":>15s} {"detections":>10s}')
    for name, _, _ in finders:
        t = totals[name]
        off = np.asarray(t['off'])
        med = f'{np.median(off):.2f}' if len(off) else '--'
        rms = f'{np.sqrt(np.mean(off**2)):.2f}' if len(off) else '--'
        print(f'{name:16s} {t["point"]:>5d} / {n_point:<3d} {med:>10s} '
              f'{rms:>8s} {t["ext"]:>9d} / {n_ext:<3d} {t["n"]:>10d}')


if __name__ == '__main__':
    main()
