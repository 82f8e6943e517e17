# Licensed under a 3-clause BSD style license - see LICENSE.rst
import numpy as np
import pytest

from cnnfind.evaluation import match_sources


@pytest.mark.parametrize('method', ['optimal', 'greedy'])
def test_one_to_one_with_duplicates(method):
    # Three detections crowd one star, a fourth sits on another.
    it, idet, d = match_sources([10.0, 30.0], [10.0, 30.0],
                                [10.4, 9.9, 10.2, 30.0],
                                [10.0, 10.0, 10.3, 30.0], radius=2.0,
                                method=method)
    assert it.tolist() == [0, 1]
    assert idet.tolist() == [1, 3]
    np.testing.assert_allclose(d, [0.1, 0.0])


@pytest.mark.parametrize('method', ['optimal', 'greedy'])
def test_random_fields_are_one_to_one(method):
    rng = np.random.default_rng(4)
    xt, yt = rng.uniform(0, 100, (2, 400))
    xd, yd = rng.uniform(0, 100, (2, 500))
    it, idet, d = match_sources(xt, yt, xd, yd, radius=3.0, method=method)
    assert len(np.unique(it)) == it.size
    assert len(np.unique(idet)) == idet.size
    assert np.all(d <= 3.0)
    np.testing.assert_allclose(np.hypot(xt[it] - xd[idet], yt[it] - yd[idet]),
                               d)
    assert np.all(np.diff(it) > 0)


def test_optimal_maximises_number_of_matches():
    # The nearest-first pair (star 1, detection 0) would leave both
    # star 0 and detection 1 unmatched.
    args = ([0.0, 3.0], [0.0, 0.0], [1.6, 4.5], [0.0, 0.0])
    it, idet, _ = match_sources(*args, radius=2.0)
    assert it.tolist() == [0, 1] and idet.tolist() == [0, 1]
    it, _, _ = match_sources(*args, radius=2.0, method='greedy')
    assert it.tolist() == [1]


def test_optimal_never_fewer_than_greedy():
    rng = np.random.default_rng(7)
    xt, yt = rng.uniform(0, 60, (2, 300))
    xd = xt + rng.normal(0, 1.5, 300)
    yd = yt + rng.normal(0, 1.5, 300)
    n_opt = match_sources(xt, yt, xd, yd, 3.0)[0].size
    n_greedy = match_sources(xt, yt, xd, yd, 3.0, method='greedy')[0].size
    assert n_opt >= n_greedy


def test_exact_positions_match_at_zero_distance():
    it, idet, d = match_sources([5.0, 6.0], [5.0, 6.0], [6.0, 5.0],
                                [6.0, 5.0])
    assert it.tolist() == [0, 1] and idet.tolist() == [1, 0]
    assert np.all(d == 0)


def test_beyond_radius_and_empty_and_nan():
    assert match_sources([0.0], [0.0], [5.0], [0.0], radius=3.0)[0].size == 0
    assert match_sources([], [], [1.0], [1.0])[0].size == 0
    assert match_sources([1.0], [1.0], [], [])[0].size == 0
    it, idet, _ = match_sources([1.0, 9.0], [1.0, 9.0], [np.nan, 9.1],
                                [1.0, 9.0])
    assert it.tolist() == [1] and idet.tolist() == [1]


def test_bad_arguments():
    with pytest.raises(ValueError, match='radius'):
        match_sources([0], [0], [0], [0], radius=0)
    with pytest.raises(ValueError, match='method'):
        match_sources([0], [0], [0], [0], method='hungarian')
    with pytest.raises(ValueError, match='same length'):
        match_sources([0, 1], [0], [0], [0])
