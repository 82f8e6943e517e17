# Licensed under a 3-clause BSD style license - see LICENSE.rst
import numpy as np
import pytest

from cnnfind.evaluation import centroid_efficiency, centroid_errors, cramer_rao_bound


def test_cramer_rao_formula():
    assert cramer_rao_bound(3.0, 10.0) == pytest.approx(0.18)
    assert cramer_rao_bound(3.0, 10.0, regime='source') == pytest.approx(0.126)
    np.testing.assert_allclose(cramer_rao_bound(2.0, [5.0, 20.0]),
                               [0.24, 0.06])
    with pytest.raises(ValueError, match='regime'):
        cramer_rao_bound(3.0, 10.0, regime='read')


def test_centroid_errors_known_offsets():
    x = np.arange(0, 100, 10.0)
    y = np.zeros(10)
    dx = np.tile([0.2, -0.2], 5)
    e = centroid_errors(x, y, x + dx, y + 0.1)
    assert e['n'] == 10
    assert e['rms_x'] == pytest.approx(0.2)
    assert e['rms_y'] == pytest.approx(0.1)
    assert e['bias_x'] == pytest.approx(0.0, abs=1e-12)
    assert e['bias_y'] == pytest.approx(0.1)
    assert e['rms'] == pytest.approx(np.sqrt((0.04 + 0.01) / 2))
    sel = centroid_errors(x, y, x + dx, y, select=x < 30)
    assert sel['n'] == 3


def test_centroid_errors_nothing_matched():
    e = centroid_errors([0.0], [0.0], [50.0], [50.0])
    assert e['n'] == 0 and np.isnan(e['rms'])


def test_centroid_efficiency_at_and_above_bound():
    rng = np.random.default_rng(2)
    n = 4000
    x, y = rng.uniform(0, 2000, (2, n))
    snr = rng.uniform(10, 60, n)
    sig = cramer_rao_bound(3.0, snr)
    t = centroid_efficiency(x, y, snr, x + rng.normal(0, 1, n) * sig,
                            y + rng.normal(0, 1, n) * sig, 3.0,
                            bins=[10, 20, 60])
    np.testing.assert_allclose(t['ratio'], 1.0, atol=0.08)
    t2 = centroid_efficiency(x, y, snr, x + rng.normal(0, 1, n) * 2 * sig,
                             y + rng.normal(0, 1, n) * 2 * sig, 3.0,
                             bins=[10, 20, 60])
    np.testing.assert_allclose(t2['ratio'], 2.0, atol=0.15)
    assert t['n'].sum() == n
