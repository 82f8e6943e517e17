# Licensed under a 3-clause BSD style license - see LICENSE.rst
import numpy as np
import pytest

from cnnfind.evaluation import (
    best_f1,
    completeness_at_purity,
    completeness_per_bin,
    detection_scores,
    scoring_mask,
    threshold_sweep,
)


@pytest.fixture
def field():
    rng = np.random.default_rng(11)
    x, y = rng.uniform(0, 200, (2, 300))
    return x, y


def test_perfect_detections(field):
    x, y = field
    s = detection_scores(x, y, x + 0.1, y - 0.1)
    assert (s['tp'], s['fp'], s['fn']) == (300, 0, 0)
    assert s['purity'] == 1.0 and s['completeness'] == 1.0 and s['f1'] == 1.0


def test_shift_beyond_radius_scores_zero():
    # Sources 20 px apart, catalogue shifted by 5 px > radius.
    g = np.arange(0, 200, 20.0)
    x, y = [a.ravel() for a in np.meshgrid(g, g)]
    s = detection_scores(x, y, x + 5.0, y, radius=3.0)
    assert s['tp'] == 0 and s['fp'] == x.size and s['fn'] == x.size
    assert s['purity'] == 0 and s['completeness'] == 0 and s['f1'] == 0


def test_no_detections_purity_is_nan():
    s = detection_scores([1.0], [1.0], [], [])
    assert np.isnan(s['purity']) and s['completeness'] == 0 and s['f1'] == 0


def test_required_sources_are_dont_care():
    # Star 1 is not required: finding it is no false positive, missing
    # it no false negative.
    req = [True, False, True]
    s = detection_scores([0, 10, 20], [0, 0, 0], [0, 10], [0, 0],
                         required=req)
    assert (s['tp'], s['fp'], s['fn'], s['ignored']) == (1, 0, 1, 1)


def test_scoring_mask():
    ok = scoring_mask([-1, 0, 9.4, 9.6, 5], [5, 5, 5, 5, 5], (10, 10),
                      snr=[10, 10, 10, 10, 2.9])
    assert ok.tolist() == [False, True, True, False, False]
    assert scoring_mask([1.0], [5.0], (10, 10), edge=2).tolist() == [False]


def test_sweep_is_monotonic_and_consistent(field):
    x, y = field
    rng = np.random.default_rng(3)
    # 250 found stars and 150 spurious detections; spurious ones score low.
    xd = np.concatenate([x[:250] + rng.normal(0, 0.3, 250),
                         rng.uniform(0, 200, 150)])
    yd = np.concatenate([y[:250] + rng.normal(0, 0.3, 250),
                         rng.uniform(0, 200, 150)])
    score = np.concatenate([rng.uniform(2, 10, 250), rng.uniform(0, 4, 150)])
    sweep = threshold_sweep(x, y, xd, yd, score)
    assert len(sweep) == np.unique(score).size
    assert np.all(np.diff(sweep['threshold']) > 0)
    assert np.all(np.diff(sweep['completeness']) <= 0)
    assert np.all(np.diff(sweep['n_det']) <= 0)
    assert np.all(sweep['tp'] + sweep['fn'] == 300)
    # Every row equals a direct evaluation of the detections above the cut.
    for row in sweep[::37]:
        keep = score >= row['threshold']
        direct = detection_scores(x, y, xd[keep], yd[keep])
        assert (row['tp'], row['fp']) == (direct['tp'], direct['fp'])
    best = best_f1(sweep)
    assert best['f1'] == np.nanmax(sweep['f1'])
    assert 2 <= best['threshold'] <= 4
    # Spurious scores reach 4: about 250 * 6 / 8 true detections lie above.
    assert 0.55 < completeness_at_purity(sweep, 0.95) < 0.75
    c, t = completeness_at_purity(sweep, 0.95, return_threshold=True)
    row = sweep[sweep['threshold'] == t][0]
    assert row['purity'] >= 0.95 and row['completeness'] == c


def test_sweep_prefers_high_score_detection():
    # The high-score detection is the farther one: it keeps the star at
    # every cut, so a cut never loses it.
    sweep = threshold_sweep([0.0], [0.0], [0.5, 2.0], [0.0, 0.0],
                            score=[1.0, 5.0])
    assert sweep['tp'].tolist() == [1, 1]
    assert sweep['fp'].tolist() == [1, 0]


def test_completeness_at_purity_never_reached():
    sweep = threshold_sweep([0.0], [0.0], [50.0], [50.0], score=[1.0])
    assert np.isnan(completeness_at_purity(sweep, 0.95))


def test_completeness_per_bin():
    x = np.arange(0, 100, 10.0)
    snr = np.array([3, 4, 6, 7, 8, 12, 15, 30, 40, 50.0])
    found = np.array([0, 1, 0, 1, 1, 1, 1, 1, 1, 1], bool)
    t = completeness_per_bin(x, np.zeros(10), snr, x[found] + 0.2,
                             np.zeros(found.sum()), [3, 5, 10, 20, np.inf])
    assert t['n_true'].tolist() == [2, 3, 2, 3]
    np.testing.assert_allclose(t['completeness'], [0.5, 2 / 3, 1, 1])


def test_sweep_argument_checks():
    with pytest.raises(ValueError, match='score'):
        threshold_sweep([0], [0], [0, 1], [0, 1], score=[1.0])
    with pytest.raises(ValueError, match='required'):
        detection_scores([0, 1], [0, 1], [0], [0], required=[True])
    with pytest.raises(ValueError, match='finite F1'):
        best_f1(threshold_sweep([], [], [], [], score=[]))
