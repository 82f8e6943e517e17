# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Benchmark GalaxyMorphClassifier against a classical baseline.

In one run, on the held-out test split (Galaxy Zoo 1 cutouts of
``../shared/data/gz1`` split by object with the training seed, and
no-galaxy stamps from regions and frames never used in training):

* the bundled CNN, end to end from the JPEG cutouts (colour) and from
  their grey versions (the single-band path);
* the classical baseline: non-parametric morphology (concentration,
  asymmetry, smoothness, Gini, M20, ellipticity, size, colours;
  `cnnfind.evaluation.morph_features`) of the same framed stamps plus a
  gradient-boosting classifier (scikit-learn) trained on the training
  split with balanced class weights;
* speed: cutouts per second on the CPU.

It prints a table and, with ``--out``, writes the metrics as JSON.

Examples
--------
::

    python benchmarks/bench_morphology.py --out runs/bench/morphology.json
"""

import argparse
import json
import os
import sys
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cnnfind.evaluation.classification import (  # noqa: E402
    classification_metrics,
)
from cnnfind.evaluation.morph_features import (  # noqa: E402
    morphology_features,
)
from cnnfind.morphology import GalaxyMorphClassifier  # noqa: E402
from cnnfind.morphology._prepare import to_network_input  # noqa: E402
from cnnfind.training.morph_data import (  # noqa: E402
    CLASSES,
    load_gz1,
    no_galaxy_stamps,
    read_jpeg,
    split_gz1,
)

FEATURE_SIZE = 128


def _features(display_images, grey=False):
    """Baseline features of display stamps (the classifier's framing)."""
    out = []
    for disp in display_images:
        if grey:
            disp = disp.mean(axis=-1, keepdims=True)
        x, _ = to_network_input(disp, crop=0.5, size=FEATURE_SIZE)
        out.append(morphology_features(x))
    return np.array(out)


def _gz1_display(paths):
    for p in paths:
        yield read_jpeg(p).astype(np.float32) / 255.0


def _baseline(train_sets, test_feats, seed):
    from sklearn.ensemble import HistGradientBoostingClassifier
    x = np.vstack([f for f, _ in train_sets])
    y = np.concatenate([lab for _, lab in train_sets])
    model = HistGradientBoostingClassifier(class_weight='balanced',
                                           random_state=seed, max_iter=300)
    model.fit(x, y)
    return [model.predict_proba(f) for f in test_feats]


def _ensembles(models, cut, ng_test, y_test, p_bundled, p_ng_bundled):
    """
    Metrics of other models and of the mean probabilities of all of them
    and the bundled one (colour cutouts, with and without ``tta``).
    """
    cols = [f'p_{c}' for c in CLASSES]
    members = {tta: [np.vstack([p_bundled[tta], p_ng_bundled[tta]])]
               for tta in (False, True)}
    results = {}
    for path in models:
        x = None
        for tta in (False, True):
            clf = GalaxyMorphClassifier(path, device='cpu', tta=tta)
            if x is None:  # the stamps' network inputs, once per model
                x = np.stack([to_network_input(s, crop=clf._crop,
                                               size=clf._size)[0]
                              for s in ng_test])
            p = np.vstack([np.column_stack([clf(cut)[c] for c in cols]),
                           clf._predict(x)])
            members[tta].append(p)
            results[f'{os.path.relpath(path)}, tta={tta}'] = \
                classification_metrics(p, y_test, CLASSES)
    for tta in (False, True):
        results[f'mean of {len(members[tta])} models, tta={tta}'] = \
            classification_metrics(np.mean(members[tta], axis=0), y_test,
                                   CLASSES)
    return results


def _row(name, m):
    r = m['recall']
    return (f'{name:<34} {m["two_way_accuracy"]:>8.3f} {m["accuracy"]:>8.3f} '
            f'{m["balanced_accuracy"]:>8.3f} {r["elliptical"]:>7.3f} '
            f'{r["spiral"]:>7.3f} {r["no_galaxy"]:>7.3f} {m["ece"]:>6.3f}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--seed', type=int, default=0,
                        help='the split seed the model was trained with')
    parser.add_argument('--limit', type=int, default=None,
                        help='use at most this many objects per split')
    parser.add_argument('--out', default=None, help='JSON file of metrics')
    parser.add_argument('--feature-cache', default=None,
                        help='.npz file caching the baseline features '
                             '(they do not depend on the CNN)')
    parser.add_argument('--extra-models', nargs='*', default=(),
                        metavar='ONNX',
                        help='other galaxymorph ONNX files: each is scored '
                             'on the colour cutouts, with and without '
                             'tta, and so is the mean of their and the '
                             'bundled model\'s probabilities')
    args = parser.parse_args(argv)

    ids, paths, labels = load_gz1()
    split = split_gz1(ids, seed=args.seed)
    paths = np.array(paths, object)
    tr = np.nonzero(split == 'train')[0][:args.limit]
    te = np.nonzero(split == 'test')[0][:args.limit]
    ng_train = no_galaxy_stamps('train', seed=args.seed, full=True)
    ng_test = no_galaxy_stamps('test', seed=args.seed, full=True)
    if args.limit:
        ng_train, ng_test = ng_train[:args.limit], ng_test[:args.limit]
    y_test = np.concatenate([labels[te], np.full(len(ng_test), 2)])

    # CNN, end to end.
    clf = GalaxyMorphClassifier(device='cpu')
    cut = np.stack([read_jpeg(p) for p in paths[te]])
    grey_cut = cut.mean(axis=-1).round().astype(np.uint8)
    x_ng = np.stack([to_network_input(s, crop=clf._crop, size=clf._size)[0]
                     for s in ng_test])
    t0 = time.perf_counter()
    tbl = clf(cut)
    t_cnn = time.perf_counter() - t0
    p_ng = clf._predict(x_ng)
    cols = [f'p_{c}' for c in CLASSES]
    p_col = np.column_stack([tbl[c] for c in cols])
    p_grey = np.column_stack([clf(grey_cut)[c] for c in cols])
    tta = GalaxyMorphClassifier(device='cpu', tta=True)
    p_tta = np.column_stack([tta(cut)[c] for c in cols])
    p_ng_tta = tta._predict(x_ng)
    t0 = time.perf_counter()
    clf._predict(np.repeat(x_ng, 4, axis=0))
    t_net = (time.perf_counter() - t0) / (4 * len(x_ng))
    results = {
        'CNN colour': classification_metrics(np.vstack([p_col, p_ng]),
                                             y_test, CLASSES),
        'CNN grey (single band)': classification_metrics(
            np.vstack([p_grey, p_ng]), y_test, CLASSES),
        'CNN colour, tta=True': classification_metrics(
            np.vstack([p_tta, p_ng_tta]), y_test, CLASSES),
    }

    if args.extra_models:
        results.update(_ensembles(args.extra_models, cut, ng_test, y_test,
                                  {False: p_col, True: p_tta},
                                  {False: p_ng, True: p_ng_tta}))

    # Classical baseline: features of the same framed stamps.
    names = ('f_tr', 'f_tr_grey', 'f_ng_tr', 'f_te', 'f_te_grey', 'f_ng_te',
             't_feat')
    if args.feature_cache and os.path.exists(args.feature_cache):
        z = np.load(args.feature_cache)
        f_tr, f_tr_grey, f_ng_tr, f_te, f_te_grey, f_ng_te, t_feat = (
            z[n] for n in names)
    else:
        t0 = time.perf_counter()
        f_tr = _features(_gz1_display(paths[tr]))
        t_feat = (time.perf_counter() - t0) / len(tr)
        f_tr_grey = _features(_gz1_display(paths[tr]), grey=True)
        f_ng_tr = _features(ng_train)
        f_te = _features(_gz1_display(paths[te]))
        f_te_grey = _features(_gz1_display(paths[te]), grey=True)
        f_ng_te = _features(ng_test)
        if args.feature_cache:
            np.savez(args.feature_cache, **dict(zip(names, (
                f_tr, f_tr_grey, f_ng_tr, f_te, f_te_grey, f_ng_te, t_feat),
                strict=True)))
    y_ng_tr = np.full(len(f_ng_tr), 2)
    p_base, p_base_grey = _baseline(
        [(f_tr, labels[tr]), (f_tr_grey, labels[tr]), (f_ng_tr, y_ng_tr)],
        [np.vstack([f_te, f_ng_te]), np.vstack([f_te_grey, f_ng_te])],
        args.seed)
    results['CAS+Gini/M20 + boosting colour'] = classification_metrics(
        p_base, y_test, CLASSES)
    results['CAS+Gini/M20 + boosting grey'] = classification_metrics(
        p_base_grey, y_test, CLASSES)

    counts = np.bincount(y_test, minlength=3)
    print(f'test set: {dict(zip(CLASSES, counts.tolist(), strict=True))}')
    print(f'{"method":<34} {"E-vs-S":>8} {"acc3":>8} {"bal.acc":>8} '
          f'{"R(ell)":>7} {"R(sp)":>7} {"R(none)":>7} {"ECE":>6}')
    for name, m in results.items():
        print(_row(name, m))
    speed = {'cnn_cutouts_per_s_end_to_end': len(cut) / t_cnn,
             'cnn_network_per_s': 1.0 / t_net,
             'baseline_features_per_s': 1.0 / t_feat}
    print(f'\nspeed (CPU, {os.cpu_count()} cores): CNN end to end from '
          f'423x423 JPEG arrays {speed["cnn_cutouts_per_s_end_to_end"]:.0f}'
          f' cutouts/s; network alone {speed["cnn_network_per_s"]:.0f}/s; '
          f'baseline features {speed["baseline_features_per_s"]:.0f}/s')
    for name in ('CNN colour', 'CNN grey (single band)'):
        print(f'\nconfusion ({name}; rows true, columns predicted '
              f'{list(CLASSES)}):')
        for row in results[name]['confusion']:
            print('   ', row)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)),
                    exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump({'results': results, 'speed': speed,
                       'test_counts': counts.tolist()}, f, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
