# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The bundled denoiser on low-count photon-counting images: sky level and
star aperture fluxes against the truth, before and after the local-mean
correction of `cnnfind.denoise.N2VDenoiser` for such images.

The fields are ``simulate_denoise_field`` star fields (Moffat FWHM 3 px,
3000 stars per million pixels, matched-filter SNR 3-1000) of pure
Poisson noise in counts (gain 1, no read noise: integer images) at sky
levels of 0.3 to 100 counts, and one field of the documented normal
kind (sky 400 electrons, gain 1.5, read noise 5 electrons) for which the
correction is off. ``before`` is the denoiser with the correction
disabled (the code before it was added); ``after`` is the denoiser as
it is.

Printed per sky level: whether the image was taken for low-count photon
counting; the mean of the sky pixels (truth within 1 % of the noise of
the sky) over the true sky, for the raw image and the denoised one; the
median aperture flux (radius 2 FWHM, true sky subtracted) over the true
flux of the stars with SNR >= 10 (and of those with SNR 10-30), with the
bootstrap error of the median; and the PSNR gain over the raw image.

    python benchmarks/denoise_low_counts.py [--size 384] [--seeds 0 1]

An experiment behind the denoising page, not part of the package.
"""

import argparse
import os
import sys
import warnings

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cnnfind.denoise import N2VDenoiser  # noqa: E402
from cnnfind.denoise import denoiser as _module  # noqa: E402
from cnnfind.evaluation.denoise import (  # noqa: E402
    aperture_fluxes,
    flux_ratio_per_bin,
    psnr,
    simulate_denoise_field,
)

SKIES = (0.3, 1.0, 3.0, 10.0, 100.0, 'normal')


def _field(sky, size, seed):
    kw = {'snr_range': (3.0, 1000.0)}
    if sky != 'normal':
        kw.update(sky=sky, gain=1.0, read_noise=0.0)
    return simulate_denoise_field((size, size), 'stars', seed, **kw)


def _measure(f, image):
    size = image.shape[0]
    st, r = f['stars'], 2.0 * f['fwhm']
    inside = ((st['x'] > r + 1) & (st['x'] < size - r - 2)
              & (st['y'] > r + 1) & (st['y'] < size - r - 2))
    x, y = st['x'][inside], st['y'][inside]
    sky = (f['truth'] - f['sky']) < 0.01 * f['noise']
    return (float(np.mean(image[sky]) / f['sky']),
            aperture_fluxes(image, x, y, r, f['sky']), st['snr'][inside])


def _cell(tab, i):
    return f"{tab['median_ratio'][i]:.3f} ± {tab['median_ratio_err'][i]:.3f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=384)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    args = parser.parse_args(argv)
    den = N2VDenoiser(device='cpu')
    gate = _module._low_counts
    rows = []
    for sky in SKIES:
        res = {k: {'sky': [], 'flux': [], 'gain': []}
               for k in ('raw', 'before', 'after')}
        true, snr, low = [], [], []
        for seed in args.seeds:
            f = _field(sky, args.size, seed)
            img = f['image']
            valid = np.isfinite(img)
            s, n = _module.robust_sky_noise(img, valid)
            low.append(gate(img, valid, s, n))
            with warnings.catch_warnings():
                warnings.simplefilter('error')
                _module._low_counts = lambda *a: False
                try:
                    outs = {'raw': img, 'before': den(img)}
                finally:
                    _module._low_counts = gate
                outs['after'] = den(img)
            _, ft, sn = _measure(f, f['truth'])
            true.append(ft)
            snr.append(sn)
            for k, out in outs.items():
                ratio, fl, _ = _measure(f, out)
                res[k]['sky'].append(ratio)
                res[k]['flux'].append(fl)
                res[k]['gain'].append(psnr(out, f['truth'])
                                      - psnr(img, f['truth']))
        true, snr = np.concatenate(true), np.concatenate(snr)
        for k, r in res.items():
            tab = flux_ratio_per_bin(np.concatenate(r['flux']), true, snr,
                                     bins=(10, 1e9))
            tab2 = flux_ratio_per_bin(np.concatenate(r['flux']), true, snr,
                                      bins=(10, 30))
            label = sky if sky == 'normal' else f'{sky:g}'
            rows.append((label, 'yes' if all(low) else
                         ('no' if not any(low) else 'mixed'), k,
                         f"{np.mean(r['sky']):.4f}", _cell(tab, 0),
                         _cell(tab2, 0), f"{np.mean(r['gain']):.2f}",
                         int(tab['n'][0])))
    head = ('sky', 'low', 'image', 'sky ratio', 'flux SNR>=10',
            'flux SNR 10-30', 'PSNR gain', 'n')
    widths = [max(len(str(v)) for v in col) for col in zip(head, *rows)]
    rule = '  '.join('=' * w for w in widths)
    print(rule)
    print('  '.join(h.ljust(w) for h, w in zip(head, widths)))
    print(rule)
    for row in rows:
        print('  '.join(str(v).ljust(w) for v, w in zip(row, widths)))
    print(rule)


if __name__ == '__main__':
    main()
