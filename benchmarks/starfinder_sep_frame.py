# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
What CNNStarFinder's detections on the SEP test frame are.

``bench_starfinder.py --real`` scores every finder by its agreement with
the SExtractor reference catalogue of the SEP frame (``sep/image.fits``,
an ESO NTT frame), which lists 36 sources. CNNStarFinder at
``threshold=5*std`` finds about 85 sources there. This script looks at
the detections that are not in that catalogue:

* how many are in the frame's *other* SExtractor catalogue,
  ``sep/image.cat`` (65 sources, made with SExtractor's default
  configuration for the SEP test suite);
* their matched-filter SNR, measured independently of the finder with
  the background and RMS maps that come with the frame (``back.fits``,
  ``rms.fits``; a Gaussian of the reference FWHM), against that of the
  reference sources;
* the same matched-filter SNR at random positions, which says how much
  of the frame's noise is correlated on the scale of the filter;
* which reference sources are missed, with SExtractor's ``CLASS_STAR``.

Needs ``../shared/data``::

    python benchmarks/starfinder_sep_frame.py

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
from cnnfind.evaluation import match_sources  # noqa: E402
from cnnfind.evaluation.peers import read_sextractor_catalog  # noqa: E402

DATA = os.path.join(_ROOT, '..', 'shared', 'data', 'real')
FRAME = os.path.join(DATA, 'sep')
REFERENCE = os.path.join(DATA, 'sextractor-reference', 'sep_image.cat')
FWHM = 2.36  # median FWHM_IMAGE of the reference catalogue's bright stars
RADIUS = 3.0  # match radius, pixels, as in bench_starfinder.py


def _read(name):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the frame's ESO-LOG cards
        from astropy import log
        with log.log_to_list():
            return np.asarray(fits.getdata(os.path.join(FRAME, name)),
                              dtype=float)


def _matched_filter_snr(image, noise, x, y, fwhm):
    """SNR of a Gaussian PSF's amplitude at (x, y), white-noise error."""
    sigma = fwhm / 2.3548
    half = int(np.ceil(4 * sigma))
    out = np.full(len(x), np.nan)
    for k, (xk, yk) in enumerate(zip(x, y, strict=True)):
        xi, yi = int(round(xk)), int(round(yk))
        y0, y1 = max(yi - half, 0), min(yi + half + 1, image.shape[0])
        x0, x1 = max(xi - half, 0), min(xi + half + 1, image.shape[1])
        yy, xx = np.mgrid[y0:y1, x0:x1]
        w = np.exp(-((xx - xk) ** 2 + (yy - yk) ** 2) / (2 * sigma ** 2))
        out[k] = (w * image[y0:y1, x0:x1]).sum() / np.sqrt((w * w).sum())
    return out / noise


def _near(xa, ya, xb, yb, radius):
    """Whether each (xa, ya) has a (xb, yb) within ``radius``."""
    if len(xb) == 0:
        return np.zeros(len(xa), bool)
    d = np.hypot(np.subtract.outer(xa, xb), np.subtract.outer(ya, yb))
    return d.min(axis=1) < radius


def main():
    if not (os.path.exists(os.path.join(FRAME, 'image.fits'))
            and os.path.exists(REFERENCE)):
        print('../shared/data/real/sep not found: nothing to do')
        return
    data = _read('image.fits')
    back, rms = _read('back.fits'), _read('rms.fits')
    ref = read_sextractor_catalog(REFERENCE)
    rx = np.asarray(ref['XWIN_IMAGE'], float) - 1
    ry = np.asarray(ref['YWIN_IMAGE'], float) - 1
    deep = np.loadtxt(os.path.join(FRAME, 'image.cat'))
    dx, dy = deep[:, 3] - 1, deep[:, 4] - 1  # XWIN_IMAGE, YWIN_IMAGE

    _, median, std = sigma_clipped_stats(data)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        table = CNNStarFinder(5.0 * std, FWHM)(data - median)
    x = np.asarray(table['x_centroid'])
    y = np.asarray(table['y_centroid'])
    it, id_, _ = match_sources(rx, ry, x, y, RADIUS)
    in_ref = np.zeros(len(x), bool)
    in_ref[id_] = True
    extra = ~in_ref
    noise = float(np.median(rms))
    snr = _matched_filter_snr(data - back, noise, x, y, FWHM)
    snr_ref = _matched_filter_snr(data - back, noise, rx, ry, FWHM)
    in_deep = _near(x, y, dx, dy, RADIUS)

    print(f'SEP frame: CNNStarFinder(5*std, fwhm={FWHM}), default '
          f'min_probability; {len(x)} detections; match radius {RADIUS} px')
    print(f'  reference catalogue ({REFERENCE.split(os.sep)[-1]}): '
          f'{len(rx)} sources, {len(it)} found')
    for k in sorted(set(range(len(rx))) - set(it.tolist())):
        print(f'    missed: x={rx[k]:.1f} y={ry[k]:.1f} '
              f'CLASS_STAR={float(ref["CLASS_STAR"][k]):.2f} '
              f'FWHM_IMAGE={float(ref["FWHM_IMAGE"][k]):.1f} '
              f'SNR_WIN={float(ref["SNR_WIN"][k]):.0f}')
    print(f'  detections not in the reference: {extra.sum()}; of these '
          f'{int((extra & in_deep).sum())} are in sep/image.cat '
          f'({len(dx)} sources, SExtractor default configuration)')
    print('  matched-filter SNR (back.fits/rms.fits, Gaussian FWHM '
          f'{FWHM}, white-noise error):')
    print(f'    reference sources found:   min {np.nanmin(snr[in_ref]):.1f}'
          f', median {np.nanmedian(snr[in_ref]):.1f}')
    print(f'    reference sources, all:    min {np.nanmin(snr_ref):.1f}')
    print(f'    detections not in it:      min {np.nanmin(snr[extra]):.1f}'
          f', median {np.nanmedian(snr[extra]):.1f}, max '
          f'{np.nanmax(snr[extra]):.1f}')
    for lo, hi in ((0, 5), (5, 7), (7, 10), (10, np.inf)):
        sel = extra & (snr >= lo) & (snr < hi)
        print(f'      SNR {lo:g}-{hi:g}: {int(sel.sum()):3d}, of which '
              f'{int((sel & in_deep).sum())} in sep/image.cat')
    rng = np.random.default_rng(0)
    half = int(np.ceil(4 * FWHM / 2.3548))
    rand = rng.uniform(half, np.array(data.shape[::-1]) - half - 1,
                       size=(3000, 2))
    far = ~_near(rand[:, 0], rand[:, 1], np.concatenate([x, dx, rx]),
                 np.concatenate([y, dy, ry]), 2 * FWHM)
    r_snr = _matched_filter_snr(data - back, noise, rand[far, 0],
                                rand[far, 1], FWHM)
    spread = 1.4826 * np.median(np.abs(r_snr - np.median(r_snr)))
    print(f'  random positions at least {2 * FWHM:.1f} px from any source '
          f'listed or found ({far.sum()}): matched-filter SNR spread '
          f'{spread:.2f} (1 for white noise), {np.mean(r_snr >= 5):.3f} '
          f'of them at SNR >= 5')


if __name__ == '__main__':
    main()
