"""
Fit, export and calibrate the vetting model of CNNStarFinder: a
gradient-boosted tree ensemble on the candidate features of
`cnnfind.detection._vetting`, written as an ONNX ``TreeEnsembleRegressor``
that onnxruntime runs without scikit-learn.

Run on its own it re-fits the vetting model of an exported star-finder
network (the last stage of ``python -m cnnfind.training.starfinder``)::

    python -m cnnfind.training.vetting --model cnnfind/models/starfinder.onnx
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.special import expit

from cnnfind.detection._measure import _centres
from cnnfind.detection._vetting import FEATURES
from cnnfind.evaluation.matching import match_sources
from cnnfind.training.calibrate import (
    _best_f1_cut,
    scenario_metrics,
)
from cnnfind.training.data import draw_field, load_backgrounds
from cnnfind.training.export import write_card

__all__ = ['candidate_samples', 'fit_vetting', 'platt_fit', 'trees_to_onnx']

#: Name and version of the bundled vetting model.
VETTING_NAME = 'starfinder_vetting'
VETTING_VERSION = '1.1.0'
#: Lowest heatmap value of a candidate that the vetting stage measures.
RAW_FLOOR = 0.05
#: Match radius (pixels) that makes a candidate a star in the labels.
MATCH_RADIUS = 3.0


def candidate_samples(onnx_path, n_fields, *, size=256, seed=0,
                      raw_floor=RAW_FLOOR, backgrounds=(), p_real=0.3):
    """
    Candidates of the star-finder network on random-recipe fields, with
    their vetting features.

    The fields are drawn as the network's own training fields
    (`~cnnfind.training.data.draw_field`): simulated skies or, with
    probability ``p_real``, crops of the real ``backgrounds`` (from
    `~cnnfind.training.data.load_backgrounds`), some with correlated
    noise; the finder is given the FWHM seen in the image times a
    log-normal factor of width 0.1, as users' estimates are.
    Candidates on the real sources of a real crop carry no label and are
    left out.

    Returns
    -------
    samples : dict
        ``features`` (N, n_features), ``label`` (1 where the candidate
        lies within `MATCH_RADIUS` of a simulated star of SNR >= 2) and
        ``n_true`` (the stars of SNR >= 3 inside the fields).
    """
    from cnnfind.detection import CNNStarFinder
    feats, labels, n_true = [], [], 0
    for k in range(n_fields):
        rng = np.random.default_rng((seed, k))
        field = draw_field(rng, size, backgrounds, p_real)
        sim = field['sim']
        fwhm = field['fwhm'] * float(np.exp(rng.normal(0.0, 0.1)))
        finder = CNNStarFinder(0.0, fwhm, model=onnx_path,
                               min_probability=0.0, vetting=False)
        finder._raw_floor = raw_floor
        try:
            data, valid, _, sky, noise = finder._prepare(field['image'],
                                                         field['mask'])
        except ValueError:  # nothing usable in this field
            continue
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            src = finder._sources(data, valid, sky, noise)
        st = sim['stars']
        inside = ((st['x'] > -0.5) & (st['x'] < size - 0.5)
                  & (st['y'] > -0.5) & (st['y'] < size - 0.5))
        n_true += int((inside & (st['snr'] >= 3.0)).sum())
        if src is None or len(src['x']) == 0:
            continue
        features = finder._features(data, sky, noise, src)
        real = st['snr'] >= 2.0
        _, idet, _ = match_sources(st['x'][real], st['y'][real], src['x'],
                                   src['y'], MATCH_RADIUS)
        label = np.zeros(len(src['x']), int)
        label[idet] = 1
        if field['exclusion'] is not None:
            xi, yi = _centres(src['x'], src['y'], data.shape)
            keep = (label == 1) | ~field['exclusion'][yi, xi]
            features, label = features[keep], label[keep]
        feats.append(features)
        labels.append(label)
    return {'features': np.concatenate(feats),
            'label': np.concatenate(labels), 'n_true': n_true}


def _float32_floor(value):
    """
    The largest float32 not above ``value``: for float32 features,
    ``x <= value`` and ``x <= _float32_floor(value)`` then agree, so the
    float32 ONNX trees branch exactly as scikit-learn's float64 ones.
    """
    t = np.float32(value)
    if float(t) > float(value):
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)


def trees_to_onnx(model, path, n_features):
    """
    Write a fitted binary `~sklearn.ensemble.HistGradientBoostingClassifier`
    as an ONNX ``TreeEnsembleRegressor`` whose output is the model's
    decision function (log-odds), shape ``(N, 1)``.
    """
    import onnx
    from onnx import TensorProto, helper
    attrs = {k: [] for k in (
        'nodes_treeids', 'nodes_nodeids', 'nodes_featureids', 'nodes_modes',
        'nodes_values', 'nodes_truenodeids', 'nodes_falsenodeids',
        'nodes_missing_value_tracks_true', 'target_treeids',
        'target_nodeids', 'target_ids', 'target_weights')}
    for tree_id, (predictor,) in enumerate(model._predictors):
        for node_id, node in enumerate(predictor.nodes):
            leaf = bool(node['is_leaf'])
            attrs['nodes_treeids'].append(tree_id)
            attrs['nodes_nodeids'].append(node_id)
            attrs['nodes_featureids'].append(0 if leaf
                                             else int(node['feature_idx']))
            attrs['nodes_modes'].append('LEAF' if leaf else 'BRANCH_LEQ')
            attrs['nodes_values'].append(
                0.0 if leaf else _float32_floor(node['num_threshold']))
            attrs['nodes_truenodeids'].append(0 if leaf else int(node['left']))
            attrs['nodes_falsenodeids'].append(0 if leaf
                                               else int(node['right']))
            attrs['nodes_missing_value_tracks_true'].append(
                int(bool(node['missing_go_to_left'])) if not leaf else 0)
            if leaf:
                attrs['target_treeids'].append(tree_id)
                attrs['target_nodeids'].append(node_id)
                attrs['target_ids'].append(0)
                attrs['target_weights'].append(float(node['value']))
    base = float(np.ravel(model._baseline_prediction)[0])
    node = helper.make_node(
        'TreeEnsembleRegressor', ['features'], ['logit'],
        domain='ai.onnx.ml', n_targets=1, aggregate_function='SUM',
        base_values=[base], post_transform='NONE', **attrs)
    graph = helper.make_graph(
        [node], 'starfinder_vetting',
        [helper.make_tensor_value_info('features', TensorProto.FLOAT,
                                       [None, n_features])],
        [helper.make_tensor_value_info('logit', TensorProto.FLOAT,
                                       [None, 1])])
    onnx_model = helper.make_model(
        graph, producer_name='cnnfind.training.vetting',
        opset_imports=[helper.make_opsetid('', 17),
                       helper.make_opsetid('ai.onnx.ml', 3)])
    onnx_model.ir_version = 9
    onnx.checker.check_model(onnx_model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, str(path))
    return Path(path)


def platt_fit(score, label, iters=50):
    """
    Slope and intercept of ``P(label) = 1 / (1 + exp(-(a * score + b)))``
    by maximum likelihood (Newton's method).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.training.vetting import platt_fit
    >>> rng = np.random.default_rng(0)
    >>> s = rng.normal(size=20000)
    >>> y = rng.random(20000) < 1 / (1 + np.exp(-(2 * s - 1)))
    >>> a, b = platt_fit(s, y)
    >>> round(a, 1), round(b, 1)
    (2.0, -1.0)
    """
    x = np.column_stack([np.asarray(score, float), np.ones(len(score))])
    y = np.asarray(label, float)
    w = np.array([1.0, 0.0])
    for _ in range(iters):
        p = expit(x @ w)
        grad = x.T @ (y - p)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def _onnx_logit(path, features):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return sess.run(None, {'features': features.astype(np.float32)})[0][:, 0]


def fit_vetting(onnx_path, *, n_fit=300, n_calib=100, size=256, seed=0,
                max_iter=300, out_dir=None, training_command=None, log=print,
                data_dir=None, p_real=0.3):
    """
    Fit the vetting model of a star-finder network and write it (ONNX
    and card) beside it, or into ``out_dir``.

    The trees are fitted on the candidates of ``n_fit`` random-recipe
    fields (`candidate_samples`; a fraction ``p_real`` of them on crops
    of the real frames in ``data_dir``, when present); the probability
    calibration (logistic) and the default ``min_probability`` (best
    F1) come from ``n_calib`` other fields.

    Returns
    -------
    card : dict
        The vetting model's card.
    """
    from sklearn import __version__ as sklearn_version
    from sklearn.ensemble import HistGradientBoostingClassifier
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir) if out_dir else onnx_path.parent
    t0 = time.time()
    backgrounds = load_backgrounds(data_dir) if p_real > 0 else []
    drawn = {'size': size, 'backgrounds': backgrounds, 'p_real': p_real}
    fit = candidate_samples(onnx_path, n_fit, seed=seed, **drawn)
    log(f'vetting: {len(fit["label"])} candidates on {n_fit} fields, '
        f'{fit["label"].mean():.3f} stars ({time.time() - t0:.0f} s)')
    trees = HistGradientBoostingClassifier(max_iter=max_iter,
                                           random_state=seed)
    trees.fit(fit['features'], fit['label'])
    path = trees_to_onnx(trees, out_dir / f'{VETTING_NAME}.onnx',
                         len(FEATURES))
    calib = candidate_samples(onnx_path, n_calib, seed=seed + 1, **drawn)
    x32 = calib['features'].astype(np.float32)
    logit = _onnx_logit(path, x32)
    parity = float(np.max(np.abs(logit - trees.decision_function(x32))))
    log(f'vetting: ONNX parity max |diff| = {parity:.2e}')
    if not parity < 1e-3:
        msg = f'ONNX tree ensemble differs from scikit-learn by {parity}'
        raise RuntimeError(msg)
    slope, intercept = platt_fit(logit, calib['label'])
    prob = expit(slope * logit + intercept)
    default_p = _best_f1_cut(prob, calib['label'].astype(bool),
                             calib['n_true'], lo=0.1, hi=0.7)
    log(f'vetting: default min_probability {default_p:.2f} '
        f'({time.time() - t0:.0f} s)')
    card = {
        'name': VETTING_NAME,
        'version': VETTING_VERSION,
        'task': 'CNNStarFinder candidate vetting: star or not',
        'for_model': onnx_path.stem,
        'features': list(FEATURES),
        'inputs': {'features': f'float32 (N, {len(FEATURES)}), the '
                               'features in the order above'},
        'outputs': {'logit': 'float32 (N, 1) log-odds of a star'},
        'raw_floor': RAW_FLOOR,
        # A strictly increasing map keeps the trees' ranking (an isotonic
        # fit would tie candidates on its flat steps).
        'calibration': {'slope': slope, 'intercept': intercept,
                        'method': f'probability = 1 / (1 + exp(-(slope * '
                                  f'logit + intercept))), logistic fit on '
                                  f'the candidates of {n_calib} held-out '
                                  f'random-recipe {size}x{size} fields'},
        'default_min_probability': default_p,
        'training_data': (
            f'candidates (heatmap value >= {RAW_FLOOR}) of {n_fit} '
            f'random-recipe {size}x{size} fields drawn as the '
            'network\'s training fields (cnnfind.training.data.draw_field: '
            'FWHM 1.3-9 px, cosmic rays, hot pixels, galaxies, saturation, '
            'gradients, nebulosity; 15 % with correlated noise; '
            f'{len(backgrounds)} real frames as skies for {p_real:.0%} of '
            'the fields, their own sources left out); the FWHM given '
            'jittered by 10 %; label: within '
            f'{MATCH_RADIUS:g} px of a simulated star of SNR >= 2'),
        'training': {'estimator': 'sklearn HistGradientBoostingClassifier',
                     'max_iter': max_iter, 'n_iter': int(trees.n_iter_),
                     'seed': seed, 'n_fit_fields': n_fit,
                     'n_calibration_fields': n_calib,
                     'n_candidates': int(len(fit['label'])),
                     'scikit_learn': sklearn_version},
        'training_command': training_command or (
            f'python -m cnnfind.training.vetting --model {onnx_path}'),
        'refit_command': ('python -m cnnfind.training.vetting --model '
                          f'{onnx_path} --fields {n_fit} --calib-fields '
                          f'{n_calib} --seed {seed}'),
        'onnx_parity_max_abs_diff': parity,
        'created': time.strftime('%Y-%m-%d'),
    }
    write_card(path, card)
    log(f'wrote {path}')
    return card


def build_parser():
    p = argparse.ArgumentParser(
        prog='python -m cnnfind.training.vetting',
        description='Fit the vetting model of an exported CNNStarFinder '
                    'network and name it in the network\'s card.')
    p.add_argument('--model', default='cnnfind/models/starfinder.onnx',
                   help='the exported star-finder network (.onnx)')
    p.add_argument('--fields', type=int, default=300,
                   help='random-recipe fields the trees are fitted on')
    p.add_argument('--calib-fields', type=int, default=100,
                   help='other fields for the calibration')
    p.add_argument('--size', type=int, default=256)
    p.add_argument('--max-iter', type=int, default=300)
    p.add_argument('--seed', type=int, default=30_000)
    p.add_argument('--metric-seed', type=int, default=20_001,
                   help='seed of the scenarios measured for the card')
    p.add_argument('--metric-size', type=int, default=512)
    p.add_argument('--data-dir', default=None,
                   help='the shared data folder (default: ../shared/data '
                        'when present) whose real frames serve as skies')
    p.add_argument('--no-real', action='store_true',
                   help='simulated skies only')
    return p


def attach_vetting(card):
    """The network's card naming the vetting model beside it."""
    return dict(card, vetting=f'{VETTING_NAME}.onnx')


def main(argv=None):
    args = build_parser().parse_args(argv)
    onnx_path = Path(args.model)
    card_path = onnx_path.with_suffix('.json')
    card = json.loads(card_path.read_text())
    # The network's own command reproduces both; this one re-fits the
    # vetting model alone.
    fit_vetting(onnx_path, n_fit=args.fields, n_calib=args.calib_fields,
                size=args.size, seed=args.seed, max_iter=args.max_iter,
                training_command=card.get('training_command'),
                data_dir=args.data_dir, p_real=0.0 if args.no_real else 0.3)
    card = attach_vetting(card)
    write_card(onnx_path, card)
    card['metrics'] = scenario_metrics(onnx_path, seed=args.metric_seed,
                                       metric_size=args.metric_size)
    write_card(onnx_path, card)
    return card_path


if __name__ == '__main__':
    main(sys.argv[1:])
