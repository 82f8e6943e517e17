"""
Probability calibration and headline metrics of the star-finder model,
measured on simulated fields that training never saw.
"""

import json
import warnings

import numpy as np

from cnnfind.simulation.fields import simulate_field
from cnnfind.simulation.scenarios import make_scenario
from cnnfind.training.data import _random_config

__all__ = ['isotonic_fit', 'calibrate_starfinder', 'scenario_metrics']

#: FWHM bin edges (pixels) of the probability calibration.
FWHM_EDGES = (2.5, 4.0, 6.0)


def isotonic_fit(score, label, n_knots=40):
    """
    Monotone (pool-adjacent-violators) fit of ``label`` against
    ``score``, returned as interpolation knots.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.training.calibrate import isotonic_fit
    >>> raw, prob = isotonic_fit(np.array([0.1, 0.2, 0.3, 0.4]),
    ...                          np.array([0, 1, 0, 1]))
    >>> [float(p) for p in np.interp([0.1, 0.25, 0.4], raw, prob)]
    [0.0, 0.5, 1.0]
    """
    order = np.argsort(score)
    s, y = np.asarray(score, float)[order], np.asarray(label, float)[order]
    vals, wts, ends = [], [], []
    for i, v in enumerate(y):
        vals.append(v)
        wts.append(1.0)
        ends.append(i)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            w = wts[-2] + wts[-1]
            v = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w
            vals[-2:] = [v]
            wts[-2:] = [w]
            ends[-2:] = [ends[-1]]
    fitted = np.repeat(vals, np.diff(np.concatenate([[-1], ends])).astype(int))
    # Knots dense where the scores are (mostly noise peaks), where the
    # true sources are, and evenly over the whole range.
    grid = np.linspace(0, 1, n_knots)
    knots = [np.quantile(s, grid), np.linspace(s[0], s[-1], n_knots)]
    if y.any():
        knots.append(np.quantile(s[y > 0], grid))
    qs = np.unique(np.concatenate(knots))
    prob = np.interp(qs, s, fitted)
    prob = np.maximum.accumulate(prob)
    return qs, prob


def _best_f1_cut(prob, hit, n_true, lo=0.2, hi=0.6):
    """The probability cut in [lo, hi] that maximises F1."""
    best, best_f1 = 0.5, -1.0
    for cut in np.arange(lo, hi + 1e-9, 0.05):
        sel = prob >= cut
        tp = int(hit[sel].sum())
        purity = tp / max(int(sel.sum()), 1)
        completeness = tp / max(n_true, 1)
        f1 = 2 * purity * completeness / max(purity + completeness, 1e-12)
        if f1 > best_f1:
            best, best_f1 = round(float(cut), 2), f1
    return best


def _greedy_match(xt, yt, xd, yd, radius):
    """One-to-one nearest-first matching; returns a bool per detection."""
    from scipy.spatial import cKDTree
    hit = np.zeros(len(xd), bool)
    if len(xt) == 0 or len(xd) == 0:
        return hit
    tree = cKDTree(np.column_stack([xt, yt]))
    dist, idx = tree.query(np.column_stack([xd, yd]), k=4,
                           distance_upper_bound=radius)
    pairs = [(d, i, j) for i in range(len(xd)) for d, j in
             zip(dist[i], idx[i], strict=True) if np.isfinite(d)]
    used = set()
    for _, i, j in sorted(pairs):
        if not hit[i] and j not in used:
            hit[i] = True
            used.add(j)
    return hit


def calibrate_starfinder(onnx_path, card, *, n_fields=48, size=256, seed=0,
                         metric_size=512, log=print):
    """
    Fit the raw-peak-to-probability calibration and measure metrics.

    A provisional card (without calibration) is written beside the
    model so that `~cnnfind.CNNStarFinder` can load it.

    Returns
    -------
    update : dict
        ``calibration``, ``default_min_probability`` and ``metrics``
        entries for the model card.
    """
    from cnnfind.detection import CNNStarFinder
    from cnnfind.training.export import write_card

    write_card(onnx_path, {k: v for k, v in card.items()
                           if k not in ('calibration',)})
    scores, labels, fwhms, n_true = [], [], [], 0
    for k in range(n_fields):
        rng = np.random.default_rng((seed, k))
        cfg = _random_config(rng, size)
        sim = simulate_field((size, size), cfg, seed=rng)
        finder = CNNStarFinder(0.0, cfg.fwhm, model=onnx_path,
                               min_probability=0.0)
        px, py, raw = finder._candidates(sim['image'], sim['mask'])
        st = sim['stars']
        real = st['snr'] >= 2.0
        hit = _greedy_match(st['x'][real], st['y'][real], px, py,
                            max(1.5, 0.5 * cfg.fwhm))
        scores.append(raw)
        labels.append(hit)
        fwhms.append(np.full(len(raw), cfg.fwhm))
        inside = ((st['x'] > -0.5) & (st['x'] < size - 0.5) & (st['y'] > -0.5)
                  & (st['y'] < size - 0.5))
        n_true += int((inside & (st['snr'] >= 3.0)).sum())
    scores = np.concatenate(scores)
    labels = np.concatenate(labels)
    fwhms = np.concatenate(fwhms)
    # Broad stars are localised less sharply, so their heatmap peaks are
    # lower: calibrate separately in bins of the FWHM input.
    overall = isotonic_fit(scores, labels)
    bins, prob = [], np.zeros(len(scores))
    for lo, hi in zip([0.0, *FWHM_EDGES], [*FWHM_EDGES, np.inf],
                      strict=True):
        sel = (fwhms >= lo) & (fwhms < hi)
        knots = (isotonic_fit(scores[sel], labels[sel])
                 if labels[sel].sum() >= 20 else overall)
        bins.append({'raw': [float(v) for v in knots[0]],
                     'probability': [float(v) for v in knots[1]]})
        prob[sel] = np.interp(scores[sel], *knots)
        log(f'calibration fwhm {lo}-{hi}: {sel.sum()} peaks, '
            f'{labels[sel].sum()} true')
    calibration = {'fwhm_edges': list(FWHM_EDGES), 'bins': bins,
                   'method': 'isotonic regression of matched heatmap peaks '
                             f'on {n_fields} simulated {size}x{size} fields, '
                             'per FWHM bin'}
    log(f'calibration: {len(scores)} peaks, {labels.mean():.3f} true')
    default_p = _best_f1_cut(prob, labels, n_true)
    log(f'default min_probability (best F1 on calibration fields): '
        f'{default_p:.2f}')

    card = dict(card, calibration=calibration,
                default_min_probability=default_p)
    write_card(onnx_path, card)
    metrics = scenario_metrics(onnx_path, seed=seed + 1,
                               metric_size=metric_size, log=log)
    return {'calibration': calibration,
            'default_min_probability': default_p, 'metrics': metrics}


def scenario_metrics(onnx_path, *, seed, metric_size=512, log=print):
    """
    Purity, completeness and F1 of `~cnnfind.CNNStarFinder` with the
    model at ``onnx_path`` (as its card stands) on the four benchmark
    scenarios at its default settings (threshold 2 sigma).
    """
    from cnnfind.detection import CNNStarFinder
    metrics = {}
    for name in ('sparse', 'crowded', 'faint', 'realistic'):
        sim = make_scenario(name, (metric_size, metric_size), seed=seed)
        finder = CNNStarFinder(2.0 * sim['noise'], sim['fwhm'],
                               model=onnx_path)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            tbl = finder(sim['image'] - np.median(sim['image']),
                         mask=sim['mask'])
        st = sim['stars']
        edge = metric_size - 1
        inside = ((st['x'] >= 0) & (st['x'] <= edge) & (st['y'] >= 0)
                  & (st['y'] <= edge))
        truth = inside & (st['snr'] >= 3.0)
        n_det = 0 if tbl is None else len(tbl)
        xd = np.zeros(0) if tbl is None else np.asarray(tbl['x_centroid'])
        yd = np.zeros(0) if tbl is None else np.asarray(tbl['y_centroid'])
        hit_any = _greedy_match(st['x'][inside & (st['snr'] >= 2)],
                                st['y'][inside & (st['snr'] >= 2)], xd, yd,
                                3.0)
        hit = _greedy_match(st['x'][truth], st['y'][truth], xd, yd, 3.0)
        purity = float(hit_any.mean()) if n_det else 0.0
        completeness = float(hit.sum() / max(truth.sum(), 1))
        f1 = (2 * purity * completeness / (purity + completeness)
              if purity + completeness > 0 else 0.0)
        metrics[name] = {'purity': round(purity, 4),
                         'completeness_snr3': round(completeness, 4),
                         'f1': round(f1, 4), 'n_detected': n_det,
                         'n_true_snr3': int(truth.sum())}
        log(f'{name}: {json.dumps(metrics[name])}')
    metrics['note'] = (f'{metric_size}x{metric_size} seeded scenarios (cnnfind.simulation.'
                       f'make_scenario, seed {seed}), threshold 2 sigma, '
                       'default min_probability, match radius 3 px')
    return metrics
