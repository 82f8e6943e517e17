"""Survey training sets (offline, with fake fetchers) and fine-tuning."""

import warnings

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from cnnfind.exceptions import CNNFindWarning
from cnnfind.simulation import FieldConfig, simulate_field
from cnnfind.training.survey import (
    build_field,
    build_from_files,
    build_survey_set,
    random_positions,
    read_field,
    spot_sigma,
)


def _wcs(shape, ra=150.0, dec=2.0, scale=0.5):
    w = WCS(naxis=2)
    w.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cdelt = [-scale / 3600, scale / 3600]
    return w


def _sim_field(seed, shape=(96, 96), saturation=None):
    """A simulated field, its WCS and a catalogue of its stars."""
    cfg = FieldConfig(density=1500, fwhm=3.0, snr_min=5.0, snr_max=3000.0,
                      saturation=saturation)
    sim = simulate_field(shape, cfg, seed=seed)
    wcs = _wcs(shape, ra=150.0 + seed * 0.1)
    st = sim['stars']
    sky = wcs.pixel_to_world(st['x'], st['y'])
    cat = Table({'ra': sky.ra.deg, 'dec': sky.dec.deg,
                 'mag': 25.0 - 2.5 * np.log10(st['flux'])})
    return sim, wcs, cat


def test_spot_sigma_grows_with_brightness():
    s = spot_sigma([21.0, 20.0, 18.0, 15.0, 10.0, 0.0], 20.0, 4.0)
    assert s[0] == s[1] == pytest.approx(0.8)  # at or beyond the limit
    assert np.all(np.diff(s[1:]) >= 0) and s[3] > s[2] > s[1]
    assert s[-1] == pytest.approx(4.0)  # capped


def test_heatmap_from_catalog_per_source_sigma():
    from cnnfind.training.targets import heatmap_from_catalog
    xy = np.array([[10.0, 10.0], [30.3, 12.6], [60.0, 5.0]])  # last: outside
    t0, w0 = heatmap_from_catalog((24, 48), xy)
    t, w = heatmap_from_catalog((24, 48), xy, sigma=[0.8, 3.0, 9.0])
    assert t[10, 10] == t[13, 30] == 1.0
    assert t[10, 13] == pytest.approx(np.exp(-0.5 * 9 / 0.64), abs=1e-6)
    # The wide spot reaches beyond the default 2-pixel window.
    assert t[13, 36] == pytest.approx(np.exp(-0.5 * (5.7**2 + 0.4**2) / 9),
                                      abs=1e-6)
    assert t0[13, 36] == 0.0 and t[:, 45:].max() == 0.0
    assert np.allclose(w, 1.0 + 20.0 * t)
    ts, _ = heatmap_from_catalog((24, 48), xy, sigma=3.0)  # one for all
    assert ts[10, 13] == pytest.approx(np.exp(-0.5), abs=1e-6)


def test_build_field_hdus_and_sized_spots():
    sim, wcs, cat = _sim_field(1)
    hdul = build_field(sim['image'], wcs, cat, mag='mag', fwhm=3.0)
    assert [h.name for h in hdul] == ['IMAGE', 'CATALOG', 'TARGET', 'WEIGHT']
    c = Table(hdul['CATALOG'].data)
    # Catalogue positions through the WCS land on the simulated ones.
    assert np.allclose(c['x'], sim['stars']['x'], atol=1e-6)
    assert np.allclose(c['y'], sim['stars']['y'], atol=1e-6)
    t = hdul['TARGET'].data
    tg = c[c['role'] == 'target']
    assert len(tg) > 5
    # Every target star has its peak pixel at 1, and the brightest star's
    # spot is wider than the faintest's.
    ix, iy = np.round(tg['x']).astype(int), np.round(tg['y']).astype(int)
    assert np.all(t[iy, ix] == 1.0)
    b, f = np.argmin(tg['mag']), np.argmax(tg['mag'])
    assert tg['sigma'][b] > tg['sigma'][f]

    def width(i):  # pixels above 0.5 around the star
        x0, y0 = ix[i], iy[i]
        return int((t[max(y0 - 8, 0):y0 + 9, max(x0 - 8, 0):x0 + 9]
                    > 0.5).sum())
    assert width(b) > width(f)
    assert WCS(hdul[0].header).celestial.wcs.compare(wcs.wcs, tolerance=1e-9)


def test_build_field_ignores_saturated_faint_and_edge_stars():
    sim, wcs, cat = _sim_field(2, saturation=1600.0)
    level = float(sim['image'].max())  # where stars saturate
    w0 = build_field(sim['image'], wcs, cat, mag='mag', fwhm=3.0,
                     saturation=None)['WEIGHT'].data
    hdul = build_field(sim['image'], wcs, cat, mag='mag', fwhm=3.0,
                       saturation=level, faint_limit=np.median(cat['mag']))
    c = Table(hdul['CATALOG'].data)
    w = hdul['WEIGHT'].data
    flat = sim['image'] >= level
    assert flat.any()
    assert np.all(w[flat] == 0.0) and not np.all(w0[flat] == 0.0)
    faint = c['in_image'] & (c['mag'] > np.median(cat['mag']))
    assert np.all(c['role'][faint] == 'ignored')
    ix = np.round(c['x'][faint]).astype(int)
    iy = np.round(c['y'][faint]).astype(int)
    assert np.all(w[iy, ix] == 0.0)
    assert np.all(c['role'][~c['in_image']] != 'target')


def test_unlisted_sources_ignored_or_negative():
    sim, wcs, cat = _sim_field(11)
    st = sim['stars']
    bright = np.flatnonzero((st['snr'] > 15) & (st['x'] > 5) & (st['x'] < 90)
                            & (st['y'] > 5) & (st['y'] < 90))
    drop = bright[::2]  # half the bright stars are missing from the list
    keep = np.setdiff1d(np.arange(len(cat)), drop)
    ix = np.round(st['x'][drop]).astype(int)
    iy = np.round(st['y'][drop]).astype(int)
    ign = build_field(sim['image'], wcs, cat[keep], mag='mag', fwhm=3.0)
    neg = build_field(sim['image'], wcs, cat[keep], mag='mag', fwhm=3.0,
                      unlisted='negative')
    assert len(drop) >= 3, len(drop)
    assert np.all(ign['WEIGHT'].data[iy, ix] == 0.0)
    assert np.all(neg['WEIGHT'].data[iy, ix] > 0.0)
    assert ign[0].header['NUNLIST'] >= len(drop)
    # Listed stars stay targets with full weight at their centres.
    c = Table(ign['CATALOG'].data)
    tg = c[c['role'] == 'target']
    assert np.all(ign['WEIGHT'].data[np.round(tg['y']).astype(int),
                                     np.round(tg['x']).astype(int)] > 1)
    with pytest.raises(ValueError, match='unlisted'):
        build_field(sim['image'], wcs, cat, mag='mag', unlisted='drop')


def test_build_field_bad_input():
    sim, wcs, cat = _sim_field(3)
    with pytest.raises(ValueError, match='2-D'):
        build_field(sim['image'][None], wcs, cat, mag='mag')
    with pytest.raises(ValueError, match='no column'):
        build_field(sim['image'], wcs, cat, mag='Gmag')


def test_random_positions_avoid_plane():
    pos = random_positions(400, min_abs_b=25, seed=3)
    b = pos.galactic.b.deg
    assert np.all(np.abs(b) >= 25) and (b > 0).any() and (b < 0).any()
    anywhere = random_positions(400, min_abs_b=0, seed=3)
    assert np.any(np.abs(anywhere.galactic.b.deg) < 25)
    with pytest.raises(ValueError):
        random_positions(3, min_abs_b=95)


def test_survey_set_retries_and_records_failures(tmp_path):
    fields = [_sim_field(s) for s in (4, 5, 6)]
    calls = {'image': 0}
    waits = []

    def fetch_image(pos):
        calls['image'] += 1
        k = int(round((pos.ra.deg - 150.0) / 0.1)) - 4
        if k == 0 and calls['image'] <= 2:  # rate limited twice
            raise ConnectionError('HTTP 429 Too Many Requests')
        if k == 1:  # always down
            raise TimeoutError('no answer')
        sim, wcs, _ = fields[k]
        return sim['image'], wcs.to_header()

    def fetch_catalog(pos):
        k = int(round((pos.ra.deg - 150.0) / 0.1)) - 4
        return fields[k][2]

    positions = SkyCoord([150.4, 150.5, 150.6], [2.0, 2.0, 2.0], unit='deg')
    summary = build_survey_set(tmp_path, positions, fetch_image=fetch_image,
                               fetch_catalog=fetch_catalog, retries=2,
                               backoff=1.0, sleep=waits.append,
                               log=lambda m: None, fwhm=3.0)
    assert list(summary['status']) == ['ok', 'failed', 'ok']
    assert list(summary['attempts']) == [4, 3, 2]  # image tries + catalogue
    assert 'no answer' in summary['error'][1] and summary['error'][0] == ''
    assert waits == [1.0, 2.0, 1.0, 2.0]  # exponential backoff
    assert (tmp_path / 'summary.ecsv').exists()
    f = read_field(tmp_path / summary['path'][0])
    assert f['target'].max() == 1.0
    assert int(f['header']['NTARGET']) == summary['n_targets'][0] > 0
    assert not (tmp_path / 'field_0001.fits').exists()


def test_offline_legacypipe_with_gaia(shared_data, tmp_path):
    root = shared_data / 'real' / 'legacypipe-testcases'
    if not root.is_dir():
        pytest.skip('legacypipe test cases absent')
    n_target = n_files = 0
    for case in sorted(root.iterdir()):
        gaia = sorted(case.glob('gaia/*.fits'))
        for img in sorted(case.glob('images/**/*ooi*.fits'))[:1] if gaia else []:
            with warnings.catch_warnings():
                # Few Gaia stars: the FWHM often falls back to 3 pixels.
                warnings.simplefilter('ignore', CNNFindWarning)
                out = build_from_files(img, gaia,
                                       tmp_path / f'{case.name}.fits')
            f = read_field(out)
            c = f['catalog']
            assert f['image'].shape == f['target'].shape == f['weight'].shape
            tg = c[c['role'] == 'target']
            ix = np.round(tg['x']).astype(int)
            iy = np.round(tg['y']).astype(int)
            assert np.all(f['target'][iy, ix] == 1.0)
            assert np.all(f['weight'][~np.isfinite(f['image'])] == 0)
            n_target += len(tg)
            n_files += 1
    assert n_files >= 5 and n_target > 0


@pytest.mark.remote_data
def test_live_skyview_vizier(tmp_path):
    summary = build_survey_set(tmp_path, SkyCoord(150.1, 2.2, unit='deg'),
                               pixels=128, retries=1, backoff=2.0)
    assert summary['status'][0] == 'ok', summary['error'][0]
    assert summary['n_targets'][0] > 0


def test_finetune_end_to_end(tmp_path):
    torch = pytest.importorskip('torch')
    pytest.importorskip('onnx')
    from cnnfind.detection.finder import CNNStarFinder
    from cnnfind.runtime.registry import load_model
    from cnnfind.runtime.session import get_session
    from cnnfind.training import finetune

    torch.set_num_threads(1)
    # The ONNX weights loaded into StarNet reproduce the ONNX output.
    base = load_model('starfinder', 'starfinder')
    net = finetune.starnet_from_onnx(base.path).eval()
    sess = get_session(base, device='cpu')
    c = sess.get_inputs()[0].shape[1]
    x = np.random.default_rng(0).normal(size=(1, c, 32, 48)).astype(np.float32)
    f = np.full((1, 1, 1, 1), 0.2, np.float32)
    ref = sess.run(None, {'image': x, 'fwhm': f})[0]
    with torch.no_grad():
        got = net(torch.from_numpy(x), torch.from_numpy(f)).numpy()
    assert np.max(np.abs(got - ref)) < 1e-4

    setdir = tmp_path / 'set'
    setdir.mkdir()
    for seed in (7, 8, 9):
        sim, wcs, cat = _sim_field(seed, shape=(80, 72))
        build_field(sim['image'], wcs, cat, mag='mag', fwhm=3.0).writeto(
            setdir / f'f{seed}.fits')
    out = tmp_path / 'tuned.onnx'
    card_path = finetune.main([str(setdir), '--out', str(out), '--steps', '4',
                               '--batch-size', '2', '--patch', '48',
                               '--eval-every', '2', '--no-progress'])
    import json
    card = json.loads(card_path.read_text())
    assert card['fine_tuned_from']['name'] == 'starfinder'
    assert 'finetune' in card['training_command']
    assert len(card['training_files']) == 2
    assert len(card['validation_files']) == 1
    sim, _, _ = _sim_field(10, shape=(64, 64))
    finder = CNNStarFinder(threshold=5.0, fwhm=3.0, model=out)
    assert finder.model.card['name'] == 'tuned'
    heat = finder.heatmap(sim['image'])
    assert heat.shape == (64, 64) and np.isfinite(heat).all()
    # The weights changed, but only a little (a few small steps).
    tuned = finetune.starnet_from_onnx(out)
    d = [float((a - b).abs().max()) for a, b in
         zip(tuned.state_dict().values(), net.state_dict().values(),
             strict=True)]
    assert 0 < max(d) < 0.1
    with fits.open(setdir / 'f7.fits') as h:
        assert h['TARGET'].data.shape == (80, 72)
