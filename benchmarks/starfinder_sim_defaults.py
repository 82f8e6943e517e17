# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
CNNStarFinder on the benchmark scenarios at the settings users run, not at
its best operating point: ``threshold=5*std`` and ``min_probability`` 0.1,
0.2 and 0.3 (0.3 is the bundled model's default). Purity, completeness and
F1 against the same truth as ``bench_starfinder.py`` (1024x1024, seeds 0
and 1 pooled, stars of SNR >= 3, match radius 3 px).

    python benchmarks/starfinder_sim_defaults.py

An experiment behind the benchmarks docs page, not part of the package.
"""

import sys
import warnings

import numpy as np
from bench_starfinder import pooled_truth

from cnnfind.evaluation import run_cnnfind, threshold_sweep
from cnnfind.simulation import make_scenario

SCENARIOS = ('sparse', 'crowded', 'faint', 'realistic')
CUTS = (0.1, 0.2, 0.3)


def main():
    print('$ python ' + ' '.join(sys.argv))
    print('threshold=5*std; F1 (purity, completeness) per min_probability')
    print(f'{"scenario":10s}' + ''.join(f'  p >= {c:<16}' for c in CUTS))
    for name in SCENARIOS:
        sims = [make_scenario(name, (1024, 1024), seed=seed)
                for seed in (0, 1)]
        step, tx, ty, _, req, _ = pooled_truth(sims, 3.0, 3.0)
        x, y, score = [], [], []
        for k, sim in enumerate(sims):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                res = run_cnnfind(sim['image'], sim['fwhm'], 5.0,
                                  mask=sim['mask'], min_probability=0.01)
            x.append(res.x + k * step)
            y.append(res.y)
            score.append(res.score)
        sweep = threshold_sweep(tx, ty, np.concatenate(x), np.concatenate(y),
                                np.concatenate(score), 3.0, required=req,
                                cuts=CUTS)
        cells = [f'  {r["f1"]:.3f} ({r["purity"]:.2f}, '
                 f'{r["completeness"]:.2f})  ' for r in sweep]
        print(f'{name:10s}' + ''.join(cells))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
