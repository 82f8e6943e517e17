"""
The vectorised per-source helpers behind CNNStarFinder: each fast path
is checked against a plain reference implementation, and the early cuts
of the finder against a run without them.
"""

import warnings

import numpy as np
import pytest
from scipy.spatial import cKDTree

from cnnfind import CNNStarFinder
from cnnfind.detection import finder as finder_module
from cnnfind.detection._background import _clipped_row_medians
from cnnfind.detection._measure import (
    _centres,
    _ellipse_coeffs,
    _gauss,
    _render_models,
    _stamps,
    _start_amplitudes,
)
from cnnfind.detection._vetting import vetting_features
from cnnfind.simulation import make_scenario


def _stamps_reference(image, xi, yi, ry, rx, fill):
    ny, nx = image.shape
    out = np.full((len(xi), 2 * ry + 1, 2 * rx + 1), fill, dtype=image.dtype)
    for k, (x, y) in enumerate(zip(xi, yi)):
        for j in range(-ry, ry + 1):
            for i in range(-rx, rx + 1):
                if 0 <= y + j < ny and 0 <= x + i < nx:
                    out[k, j + ry, i + rx] = image[y + j, x + i]
    return out


@pytest.mark.parametrize('where', ['inside', 'mixed', 'edge'])
def test_stamps_match_reference(where):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(40, 30)).astype(np.float32)
    if where == 'inside':
        xi, yi = rng.integers(3, 27, 20), rng.integers(2, 38, 20)
    elif where == 'mixed':
        xi, yi = rng.integers(0, 30, 50), rng.integers(0, 40, 50)
    else:
        xi, yi = np.array([0, 29, 0]), np.array([0, 39, 20])
    for fill in (0.0, np.nan):
        got = _stamps(image, xi, yi, 2, 3, fill=fill)
        want = _stamps_reference(image, xi, yi, 2, 3, fill)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    mask = rng.random((40, 30)) > 0.5
    np.testing.assert_array_equal(
        _stamps(mask, xi, yi, 1, 1, fill=False),
        _stamps_reference(mask, xi, yi, 1, 1, False))


@pytest.mark.parametrize('band', [1, 7, 64, 1000])
def test_render_models_matches_add_at(band):
    rng = np.random.default_rng(2)
    shape, n, radius = (90, 70), 120, 4
    xc, yc = rng.uniform(-1, 70, n), rng.uniform(-1, 90, n)
    # Sources sharing a rounded centre must all be added.
    xc[:10], yc[:10] = xc[10:20] + 0.1, yc[10:20] - 0.1
    amp = rng.uniform(0, 50, n)
    abc = _ellipse_coeffs((1.2, 1.8), 25.0)
    want = np.zeros((shape[0] + 2 * radius, shape[1] + 2 * radius))
    xi, yi = _centres(xc, yc, shape)
    off = np.arange(-radius, radius + 1)
    vals = amp[:, None, None] * _gauss(
        off[None, None, :] + (xi - xc)[:, None, None],
        off[None, :, None] + (yi - yc)[:, None, None], abc)
    np.add.at(want, (yi[:, None, None] + off[None, :, None] + radius,
                     xi[:, None, None] + off[None, None, :] + radius), vals)
    got = _render_models(shape, xc, yc, amp, abc, radius, band=band)
    assert got.shape == shape
    np.testing.assert_allclose(got, want[radius:-radius, radius:-radius],
                               rtol=1e-5, atol=1e-4)


def test_separable_gaussian_equals_full_form():
    rng = np.random.default_rng(3)
    dx = rng.normal(size=(5, 1, 7))
    dy = rng.normal(size=(5, 7, 1))
    abc = _ellipse_coeffs((1.5, 1.5), 0.0)
    assert abc[1] == 0
    a, _, c = abc
    np.testing.assert_allclose(_gauss(dx, dy, abc),
                               np.exp(-(a * dx**2 + c * dy**2)), rtol=1e-12)


def test_unclipped_row_medians_match_numpy():
    """``iters=0, min_count=1``, as the vetting features use it."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(300, 25))
    a[rng.random(a.shape) < 0.4] = np.nan
    a[0] = np.nan  # no valid value: NaN, as numpy
    a[1, 1:] = np.nan  # a single one
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        want = np.nanmedian(a, axis=1)
    np.testing.assert_array_equal(
        _clipped_row_medians(a, iters=0, min_count=1), want)


def test_dedupe_is_the_greedy_merge():
    finder = CNNStarFinder(1.0, 3.0)
    rng = np.random.default_rng(5)
    for trial in range(20):
        n = int(rng.integers(1, 200))
        xc, yc = rng.uniform(0, 50, n), rng.uniform(0, 50, n)
        if trial % 4 == 0:
            xc[:n // 2], yc[:n // 2] = xc[-(n // 2):], yc[-(n // 2):]
        order = rng.permutation(n)
        tree = cKDTree(np.column_stack([xc, yc]))
        taken, want = np.zeros(n, bool), []
        for i in order:
            if not taken[i]:
                want.append(i)
                taken[tree.query_ball_point([xc[i], yc[i]], 1.5)] = True
        np.testing.assert_array_equal(finder._dedupe(xc, yc, order),
                                      np.sort(want))


def test_start_amplitudes_of_an_isolated_star():
    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[:41, :41]
    abc = _ellipse_coeffs((1.3, 1.3), 0.0)
    star = 80.0 * _gauss(xx - 20.3, yy - 19.8, abc)
    data = star + rng.normal(0, 1.0, star.shape)
    amp, rel = _start_amplitudes(data, np.ones(data.shape, bool),
                                 np.array([20.3]), np.array([19.8]), abc, 4)
    assert amp[0] == pytest.approx(80.0, abs=4 * rel[0])
    # On pure noise the estimate is small.
    amp0, _ = _start_amplitudes(data - star, np.ones(data.shape, bool),
                                np.array([20.3]), np.array([19.8]), abc, 4)
    assert abs(amp0[0]) < 5 * rel[0]


def test_vetting_features_of_a_subset_equal_those_rows():
    sim = make_scenario('crowded', (128, 128), seed=8)
    finder = CNNStarFinder(3.0 * sim['noise'], sim['fwhm'])
    data, valid, _, sky, noise = finder._prepare(sim['image'], None)
    src = finder._sources(data, valid, sky, noise)
    full = finder._features(data, sky, noise, src)
    subset = np.zeros(len(src['x']), bool)
    subset[::3] = True
    np.testing.assert_array_equal(
        finder._features(data, sky, noise, src, subset=subset),
        full[subset])
    assert vetting_features(data, valid, sky, noise, sim['fwhm'],
                            src['abc'], src['x'], src['y'], src['amp'],
                            src['raw'], subset=np.zeros(0, int)).shape == (
        0, full.shape[1])


@pytest.mark.parametrize(('scenario', 'vetting'),
                         [('sparse', True), ('faint', True),
                          ('faint', False)])
def test_early_cuts_keep_the_detections(scenario, vetting, monkeypatch):
    """The amplitude cuts before the fits and before vetting only skip
    work: the catalogue matches a run without them."""
    sim = make_scenario(scenario, (384, 384), seed=44)
    finder = CNNStarFinder(5.0 * sim['noise'], sim['fwhm'], vetting=vetting)
    with_cuts = finder(sim['image'])
    monkeypatch.setattr(finder_module, '_START_CUT', 0.0)
    monkeypatch.setattr(finder_module, '_VET_CUT', -np.inf)
    without = finder(sim['image'])
    a = np.column_stack([with_cuts['x_centroid'], with_cuts['y_centroid']])
    b = np.column_stack([without['x_centroid'], without['y_centroid']])
    assert len(b) > 20
    # At most one source differs (a changed neighbour can move a
    # borderline probability), and none moves by more than 0.05 px.
    assert abs(len(a) - len(b)) <= 1
    d, _ = cKDTree(a).query(b)
    assert np.sum(d > 0.05) <= 1
