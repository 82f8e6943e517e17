"""
Rank CNNStarFinder detections by ``logit(probability) + w * log(SNR)``,
SNR being the matched-filter SNR at the detection, and print the best F1 for
a few weights ``w`` on the benchmark scenarios (1024x1024, seeds 0 and 1
pooled, threshold 2 sigma, ``min_probability=0.01``, match radius 3 px,
truth SNR >= 3). ``w = 0`` is the probability alone; ``w = inf`` the
matched-filter SNR alone, so the network only proposes the candidates.

    python benchmarks/starfinder_score_combination.py

An experiment behind the training docs ("A tried variant"), not part of the
package.
"""

import warnings

import numpy as np

from cnnfind import CNNStarFinder
from cnnfind.detection._input import _matched_filter_snr
from cnnfind.detection._measure import _stamps
from cnnfind.evaluation.metrics import best_f1, scoring_mask, threshold_sweep
from cnnfind.simulation import make_scenario

WEIGHTS = (0.0, 0.25, 0.5, 1.0, np.inf)


def detect_with_snr(image, mask, fwhm, noise=None):
    """
    CNNStarFinder detections at 2 sigma (``noise``; default the finder's
    own estimate) with ``min_probability=0.01``: positions, probability
    and the matched-filter SNR at each detection.
    """
    finder = CNNStarFinder(1.0, fwhm, min_probability=0.01)
    data, valid, _, sky, est = finder._prepare(image, mask)
    noise = est if noise is None else noise
    finder = CNNStarFinder(2 * noise, fwhm, min_probability=0.01)
    tbl = finder(image - np.median(image), mask=mask)
    if tbl is None:
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)
    resid = np.where(valid, (data - sky) / est, 0).astype(np.float32)
    snr_map = _matched_filter_snr(resid, fwhm)
    xd = np.asarray(tbl['x_centroid'])
    yd = np.asarray(tbl['y_centroid'])
    xi = np.clip(np.round(xd).astype(int), 0, image.shape[1] - 1)
    yi = np.clip(np.round(yd).astype(int), 0, image.shape[0] - 1)
    snr = _stamps(snr_map, xi, yi, 1, 1).max(axis=(1, 2))
    prob = np.clip(np.asarray(tbl['probability'], float), 1e-4, 1 - 1e-4)
    return xd, yd, prob, snr


def _detections(scenario, seed):
    sim = make_scenario(scenario, seed=seed)
    img, st = sim['image'], sim['stars']
    xd, yd, prob, snr = detect_with_snr(img, sim['mask'], sim['fwhm'],
                                        sim['noise'])
    required = scoring_mask(st['x'], st['y'], img.shape, snr=st['snr'],
                            snr_min=3.0)
    matchable = st['snr'] >= 2
    return (st['x'][matchable], st['y'][matchable], required[matchable],
            xd, yd, prob, snr)


def _score(prob, snr, w):
    """``logit(prob) + w * log(snr)``; the SNR alone for infinite ``w``."""
    log_snr = np.log(np.clip(snr, 0.1, None))
    if np.isinf(w):
        return log_snr
    return np.log(prob / (1 - prob)) + w * log_snr


def main():
    warnings.simplefilter('ignore')
    print('scenario   ' + '  '.join(f'w={w:<5}' for w in WEIGHTS))
    for scenario in ('sparse', 'crowded', 'faint', 'realistic'):
        runs = [_detections(scenario, seed) for seed in (0, 1)]
        f1 = []
        for w in WEIGHTS:
            parts = list(zip(*[
                (xt + 5000 * k, yt, req, xd + 5000 * k, yd,
                 _score(p, s, w))
                for k, (xt, yt, req, xd, yd, p, s) in enumerate(runs)],
                strict=True))
            xt, yt, req, xd, yd, score = (np.concatenate(a) for a in parts)
            sweep = threshold_sweep(xt, yt, xd, yd, score, 3.0, required=req)
            f1.append(float(best_f1(sweep)['f1']))
        print(f'{scenario:<10} ' + '  '.join(f'{v:.3f}  ' for v in f1))


if __name__ == '__main__':
    main()
