# Licensed under a 3-clause BSD style license - see LICENSE.rst
import warnings

import numpy as np
import pytest

from cnnfind.evaluation import (
    detection_scores,
    match_sources,
    peers,
    read_sextractor_catalog,
    run_dao,
    run_iraf,
    run_sep,
    run_sextractor,
    run_sourcefinder,
    scoring_mask,
    sextractor_path,
)
from cnnfind.simulation import make_scenario


@pytest.fixture(scope='module')
def sim():
    return make_scenario('sparse', shape=(192, 192), seed=2)


def _check_positions(sim, res, snr_min=20.0, tol=0.5):
    st = sim['stars']
    bright = scoring_mask(st['x'], st['y'], sim['image'].shape,
                          snr=st['snr'], snr_min=snr_min, edge=6)
    assert bright.sum() >= 3
    it, idet, _ = match_sources(st['x'], st['y'], res.x, res.y, 3.0)
    sel = bright[it]
    # Every bright star is found ...
    assert sel.sum() == bright.sum()
    dx = res.x[idet[sel]] - st['x'][it[sel]]
    dy = res.y[idet[sel]] - st['y'][it[sel]]
    # ... within 0.5 px, with no pixel-convention offset.
    assert np.all(np.hypot(dx, dy) < tol)
    assert abs(np.median(dx)) < 0.1 and abs(np.median(dy)) < 0.1
    assert res.seconds > 0
    assert res.score.shape == res.x.shape


@pytest.mark.parametrize('runner, kwargs', [
    (run_dao, {'threshold': 4.0}),
    (run_dao, {'threshold': 4.0, 'sharpness_range': None, 'sigma_radius': 3}),
    (run_iraf, {'threshold': 3.0, 'roundness_range': None}),
    (run_sourcefinder, {'threshold': 1.0}),
])
def test_photutils_peers(sim, runner, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        res = runner(sim['image'], sim['fwhm'], **kwargs)
    _check_positions(sim, res)


def test_dao_score_reproduces_threshold(sim):
    low = run_dao(sim['image'], sim['fwhm'], threshold=3.0)
    high = run_dao(sim['image'], sim['fwhm'], threshold=6.0)
    keep = low.score >= 6.0
    assert keep.sum() == high.x.size
    np.testing.assert_allclose(np.sort(low.x[keep]), np.sort(high.x))


def test_sep(sim):
    pytest.importorskip('sep')
    _check_positions(sim, run_sep(sim['image'], sim['fwhm'], threshold=1.0))


def test_sextractor_finds_stars_within_half_pixel(sim):
    if sextractor_path() is None:
        pytest.skip('SExtractor (source-extractor) is not installed')
    res = run_sextractor(sim['image'], sim['fwhm'], threshold=1.0)
    _check_positions(sim, res)
    st = sim['stars']
    req = scoring_mask(st['x'], st['y'], sim['image'].shape, snr=st['snr'],
                       snr_min=10)
    assert detection_scores(st['x'], st['y'], res.x, res.y,
                            required=req)['completeness'] > 0.9


def test_sextractor_bad_pixels(sim):
    if sextractor_path() is None:
        pytest.skip('SExtractor (source-extractor) is not installed')
    image = sim['image'].copy()
    image[:, 10] = np.nan
    res = run_sextractor(image, sim['fwhm'], threshold=1.5)
    assert np.all(np.isfinite(res.x))
    # A NaN column is not a line of sources.
    assert np.sum(np.abs(res.x - 10) < 1.5) <= 2


def test_sextractor_missing_binary(sim, monkeypatch):
    with pytest.raises(FileNotFoundError, match='SExtractor'):
        run_sextractor(sim['image'], 3.0, executable='/nonexistent/sex')
    monkeypatch.setattr(peers, 'sextractor_path', lambda: None)
    with pytest.raises(FileNotFoundError, match='not installed'):
        run_sextractor(sim['image'], 3.0)


def test_read_sextractor_catalog(tmp_path):
    path = tmp_path / 'test.cat'
    path.write_text(
        '#   1 NUMBER   Running object number\n'
        '#   2 FLUX_APER  Flux vector\n'
        '#   4 XWIN_IMAGE  x [pixel]\n'
        '         1  10.0  11.0  5.5\n'
        '         2  20.0  21.0  7.5\n')
    t = read_sextractor_catalog(path)
    assert t.colnames == ['NUMBER', 'FLUX_APER', 'FLUX_APER_2', 'XWIN_IMAGE']
    assert t['XWIN_IMAGE'].tolist() == [5.5, 7.5]
