# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The generic Noise2Void model against training scale: PSNR of denoisers
on the benchmark fields, and the one training variant that is not a
command-line option.

``psnr`` denoises the fields of ``bench_denoise.py --size 384 --seeds 0
1`` (``simulate_denoise_field``, FWHM 3 px, seeds 1000 and 1001, stars,
galaxies and nebula) with each model and prints the mean PSNR per kind,
the same numbers as that benchmark's PSNR column::

    python benchmarks/n2v_generic_scaling.py psnr bundled runs/x/n2v.onnx

``train-fwhm3`` runs ``python -m cnnfind.training.n2v --generic`` with
the simulated fields' PSF FWHM drawn from 2.5-3.6 pixels instead of
1.3-9 (the benchmark's FWHM is 3), to see what specialising the PSF
gains; the other arguments are passed on::

    python benchmarks/n2v_generic_scaling.py train-fwhm3 --out runs/f/n2v.onnx --steps 3000

An experiment behind the denoising page, not part of the package.
"""

import os
import sys
import time
import warnings

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def psnr_table(models):
    from cnnfind import N2VDenoiser
    from cnnfind.evaluation.denoise import psnr, simulate_denoise_field
    fields = [(kind, simulate_denoise_field((384, 384), kind,
                                            seed=1000 + seed, fwhm=3.0))
              for kind in ('stars', 'galaxies', 'nebula') for seed in (0, 1)]
    print(f'{"model":40s} {"stars":>7s} {"galaxies":>9s} {"nebula":>7s} '
          f'{"seconds":>8s}')
    for m in models:
        den = N2VDenoiser(model=None if m == 'bundled' else m)
        res = {}
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            for kind, f in fields:
                res.setdefault(kind, []).append(psnr(den(f['image']),
                                                     f['truth']))
        dt = time.perf_counter() - t0
        print(f'{m[-40:]:40s} {np.mean(res["stars"]):7.2f} '
              f'{np.mean(res["galaxies"]):9.2f} {np.mean(res["nebula"]):7.2f} '
              f'{dt:8.1f}')


def train_fwhm3(argv):
    import cnnfind.training.data as data
    from cnnfind.training import n2v
    recipe = data._random_config

    def narrow_psf(rng, size):
        cfg = recipe(rng, size)
        fwhm = float(np.exp(rng.uniform(np.log(2.5), np.log(3.6))))
        # Keep the recipe's density scaling with the FWHM.
        cfg.density *= max(cfg.fwhm / 3, 1) ** 2 / max(fwhm / 3, 1) ** 2
        cfg.fwhm = fwhm
        return cfg

    data._random_config = narrow_psf
    n2v.main(['--generic', *argv])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ('psnr', 'train-fwhm3'):
        print(__doc__)
        return
    if argv[0] == 'psnr':
        psnr_table(argv[1:] or ['bundled'])
    else:
        train_fwhm3(argv[1:])


if __name__ == '__main__':
    main()
