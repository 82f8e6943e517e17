"""
Re-rank CNNStarFinder detections with a probability learnt jointly from the
network's calibrated probability and the matched-filter SNR at the detection,
and print the best F1 on the benchmark scenarios (1024x1024, seeds 0 and 1
pooled, threshold 2 sigma, ``min_probability=0.01``, match radius 3 px,
truth SNR >= 3).

The joint probability is a gradient-boosted classifier (scikit-learn, not a
cnnfind dependency) on two features, ``logit(probability)`` and
``log(SNR)``, fitted either on 96 random-recipe 256x256 fields (the fields
the shipped calibration is fitted on, ``--fit random``) or on seeds 10 and
11 of the four benchmark scenarios themselves (``--fit scenarios``: an upper
bound, since it is fitted to the scenario mix it is scored on).

    python benchmarks/starfinder_joint_calibration.py --fit random
    python benchmarks/starfinder_joint_calibration.py --fit scenarios

An experiment behind the training docs ("Tried variants"), not part of the
package.
"""

import argparse
import warnings

import numpy as np
from starfinder_score_combination import detect_with_snr

from cnnfind.evaluation import match_sources
from cnnfind.evaluation.metrics import best_f1, scoring_mask, threshold_sweep
from cnnfind.simulation import make_scenario
from cnnfind.simulation.fields import simulate_field
from cnnfind.training.data import _random_config

SCENARIOS = ('sparse', 'crowded', 'faint', 'realistic')


def _features(image, mask, fwhm, stars):
    """Detections, their two features and whether they match a star."""
    xd, yd, p, snr = detect_with_snr(image, mask, fwhm)
    if len(xd) == 0:
        return None
    feats = np.column_stack([np.log(p / (1 - p)),
                             np.log(np.clip(snr, 0.1, None))])
    real = stars['snr'] >= 2
    _, idet, _ = match_sources(stars['x'][real], stars['y'][real], xd, yd,
                               radius=3.0)
    label = np.zeros(len(xd), int)
    label[idet] = 1
    return dict(x=xd, y=yd, features=feats, label=label)


def _scenario(name, seed):
    sim = make_scenario(name, seed=seed)
    st = sim['stars']
    out = _features(sim['image'], sim['mask'], sim['fwhm'], st)
    matchable = st['snr'] >= 2
    required = scoring_mask(st['x'], st['y'], sim['image'].shape,
                            snr=st['snr'], snr_min=3.0)
    out.update(xt=st['x'][matchable], yt=st['y'][matchable],
               required=required[matchable])
    return out


def _random_fields(n=96, size=256):
    feats, labels = [], []
    for k in range(n):
        rng = np.random.default_rng((0, k))
        cfg = _random_config(rng, size)
        sim = simulate_field((size, size), cfg, seed=rng)
        out = _features(sim['image'], sim['mask'], cfg.fwhm, sim['stars'])
        if out is not None:
            feats.append(out['features'])
            labels.append(out['label'])
    return np.concatenate(feats), np.concatenate(labels)


def _best_f1(runs, score):
    parts = [(r['xt'] + 5000 * k, r['yt'], r['required'], r['x'] + 5000 * k,
              r['y'], score(r['features'])) for k, r in enumerate(runs)]
    xt, yt, req, xd, yd, s = (np.concatenate(a) for a in zip(*parts,
                                                               strict=True))
    sweep = threshold_sweep(xt, yt, xd, yd, s, 3.0, required=req)
    return float(best_f1(sweep)['f1'])


def main(argv=None):
    from sklearn.ensemble import HistGradientBoostingClassifier
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--fit', choices=('random', 'scenarios'), default='random')
    args = p.parse_args(argv)
    warnings.simplefilter('ignore')
    bench = {name: [_scenario(name, seed) for seed in (0, 1)]
             for name in SCENARIOS}
    if args.fit == 'random':
        x_fit, y_fit = _random_fields()
    else:
        fit = [_scenario(name, seed) for name in SCENARIOS
               for seed in (10, 11)]
        x_fit = np.concatenate([r['features'] for r in fit])
        y_fit = np.concatenate([r['label'] for r in fit])
    model = HistGradientBoostingClassifier(max_iter=200, random_state=0)
    model.fit(x_fit, y_fit)
    scores = {'probability': lambda f: f[:, 0],
              f'joint ({args.fit})': lambda f: model.predict_proba(f)[:, 1]}
    print(f'{"score":20s} ' + '  '.join(f'{s:>9s}' for s in SCENARIOS))
    for name, fn in scores.items():
        print(f'{name:20s} ' + '  '.join(
            f'{_best_f1(bench[s], fn):9.3f}' for s in SCENARIOS))


if __name__ == '__main__':
    main()
