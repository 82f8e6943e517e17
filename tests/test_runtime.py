"""The shared inference layer: normalisation, tiling, registry, sessions."""

import json
import shutil

import numpy as np
import pytest

from cnnfind import CNNStarFinder
from cnnfind.runtime import (
    ModelError,
    available_devices,
    get_session,
    list_models,
    load_model,
    normalize_image,
    robust_sky_noise,
    run_tiled,
    tile_windows,
    valid_pixel_mask,
)


class TestRobustSkyNoise:
    def test_gaussian_noise(self):
        rng = np.random.default_rng(1)
        sky, noise = robust_sky_noise(rng.normal(50.0, 3.0, (300, 300)))
        assert sky == pytest.approx(50.0, abs=0.1)
        assert noise == pytest.approx(3.0, rel=0.03)

    def test_gradient_does_not_inflate_noise(self):
        rng = np.random.default_rng(2)
        yy, xx = np.mgrid[0:256, 0:256]
        img = rng.normal(0.0, 2.0, (256, 256)) + 0.5 * xx
        _, noise = robust_sky_noise(img)
        assert noise == pytest.approx(2.0, rel=0.05)

    def test_nan_and_mask_excluded(self):
        rng = np.random.default_rng(3)
        img = rng.normal(10.0, 1.0, (128, 128))
        img[:20] = np.nan
        mask = np.zeros(img.shape, bool)
        mask[50:60] = True
        img[50:60] = 1e6
        valid = valid_pixel_mask(img, mask)
        sky, noise = robust_sky_noise(img, valid)
        assert sky == pytest.approx(10.0, abs=0.05)
        assert noise == pytest.approx(1.0, rel=0.05)

    @pytest.mark.parametrize('case', ['normal', 'outliers', 'quantised',
                                      'small', 'skewed'])
    def test_clipping_matches_astropy(self, case):
        """The sorted-sample clipping gives astropy's clipped median and
        standard deviation."""
        from astropy.stats import sigma_clipped_stats

        from cnnfind.runtime.normalize import _clipped_median_std
        rng = np.random.default_rng(4)
        x = {'normal': rng.normal(1000.0, 5.0, 20000),
             'outliers': np.concatenate([rng.normal(0.0, 1.0, 5000),
                                         rng.exponential(50.0, 800)]),
             'quantised': np.round(rng.normal(3.0, 0.4, 4000)),
             'small': rng.normal(0.0, 1.0, 7),
             'skewed': rng.lognormal(0.0, 1.0, 3001)}[case]
        _, median, std = sigma_clipped_stats(x, sigma=3.0, maxiters=5)
        got_median, got_std = _clipped_median_std(x, 3.0, 5)
        assert got_median == pytest.approx(median, rel=1e-12, abs=1e-12)
        assert got_std == pytest.approx(std, rel=1e-9)

    def test_all_invalid_raises(self):
        with pytest.raises(ValueError, match='no valid'):
            robust_sky_noise(np.full((10, 10), np.nan))

    def test_constant_raises(self):
        with pytest.raises(ValueError, match='noise is zero'):
            robust_sky_noise(np.ones((32, 32)))


def test_valid_mask_shape_mismatch():
    with pytest.raises(ValueError, match='mask has shape'):
        valid_pixel_mask(np.zeros((5, 5)), np.zeros((4, 5), bool))


def test_normalize_invalid_pixels_are_zero():
    data = np.array([[1.0, np.nan], [100.0, 4.0]])
    valid = np.isfinite(data)
    x = normalize_image(data, valid, 1.0, 1.0, 3.0)
    assert x.dtype == np.float32
    assert x[0, 1] == 0.0
    assert x[0, 0] == 0.0
    assert x[1, 0] == pytest.approx(np.arcsinh(33.0), rel=1e-6)


@pytest.mark.parametrize(('shape', 'tile'), [((100, 70), 32), ((33, 200), 48),
                                             ((64, 64), 64)])
def test_tile_windows_cover_without_overlap(shape, tile):
    count = np.zeros(shape, int)
    for core, window in tile_windows(shape, tile, 16, 16):
        count[core] += 1
        assert window[0].start <= core[0].start
        assert window[0].start % 16 == 0
        assert window[1].start % 16 == 0
    assert np.all(count == 1)


def test_run_tiled_stitches_window_outputs():
    shape = (70, 90)
    ref = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    out = run_tiled(shape, lambda w: ref[w], tile=32, halo=16, multiple=16)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize('shape', [(300, 200), (97, 333)])
def test_tiled_heatmap_equals_full_pass(shape):
    rng = np.random.default_rng(4)
    data = rng.normal(0, 1, shape).astype(np.float32)
    from cnnfind.simulation import render_profiles
    render_profiles(data, rng.uniform(0, shape[1], 40),
                    rng.uniform(0, shape[0], 40), 200.0, 3.0)
    data[10:14, 20:30] = np.nan
    full = CNNStarFinder(5.0, 3.0, tile_size=4096).heatmap(data)
    tiled = CNNStarFinder(5.0, 3.0, tile_size=64).heatmap(data)
    np.testing.assert_allclose(tiled, full, atol=2e-5, rtol=0)


class TestRegistry:
    def test_bundled_model_has_card(self):
        assert 'starfinder' in list_models()
        model = load_model(None, 'starfinder')
        for key in ('name', 'version', 'normalization', 'halo',
                    'training_command', 'training_data', 'metrics',
                    'sha256', 'calibration'):
            assert key in model.card

    def test_unknown_name(self):
        with pytest.raises(ModelError, match='unknown model'):
            load_model('no-such-model', 'starfinder')

    def test_missing_file(self, tmp_path):
        with pytest.raises(ModelError, match='does not exist'):
            load_model(tmp_path / 'missing.onnx', 'starfinder')

    def test_sha_mismatch(self, tmp_path):
        src = load_model(None, 'starfinder')
        dst = tmp_path / 'copy.onnx'
        dst.write_bytes(src.path.read_bytes()[:-10] + b'0123456789')
        shutil.copy(src.path.with_suffix('.json'), tmp_path / 'copy.json')
        with pytest.raises(ModelError, match='SHA-256'):
            load_model(dst, 'starfinder')

    def test_corrupt_file_without_card(self, tmp_path):
        bad = tmp_path / 'bad.onnx'
        bad.write_bytes(b'this is not an onnx file')
        model = load_model(bad, 'starfinder')
        assert 'note' in model.card
        with pytest.raises(ModelError, match='corrupt'):
            get_session(model)

    def test_unreadable_card(self, tmp_path):
        src = load_model(None, 'starfinder')
        dst = tmp_path / 'm.onnx'
        shutil.copy(src.path, dst)
        (tmp_path / 'm.json').write_text('{not json')
        with pytest.raises(ModelError, match='cannot read'):
            load_model(dst, 'starfinder')

    def test_user_model_with_its_own_card(self, tmp_path):
        src = load_model(None, 'starfinder')
        dst = tmp_path / 'mine.onnx'
        shutil.copy(src.path, dst)
        card = dict(src.card, name='mine')
        (tmp_path / 'mine.json').write_text(json.dumps(card))
        assert load_model(dst, 'starfinder').name == 'mine'

    def test_card_missing_required_key(self, tmp_path):
        src = load_model(None, 'starfinder')
        dst = tmp_path / 'm.onnx'
        shutil.copy(src.path, dst)
        card = {k: v for k, v in src.card.items() if k != 'halo'}
        (tmp_path / 'm.json').write_text(json.dumps(card))
        with pytest.raises(ModelError, match='lacks'):
            CNNStarFinder(1.0, 3.0, model=dst)


class TestSessions:
    def test_cached(self):
        model = load_model(None, 'starfinder')
        assert get_session(model) is get_session(model)

    def test_cpu_always_available(self):
        assert 'cpu' in available_devices()

    def test_bad_device(self):
        with pytest.raises(ValueError, match='device must be'):
            CNNStarFinder(1.0, 3.0, device='gpu')

    @pytest.mark.skipif('cuda' in available_devices(),
                        reason='CUDA is available here')
    def test_cuda_requested_but_absent(self):
        with pytest.raises(RuntimeError, match='CUDA'):
            CNNStarFinder(1.0, 3.0, device='cuda')

    def test_thread_count(self):
        model = load_model(None, 'starfinder')
        sess = get_session(model, n_threads=1)
        assert sess is not get_session(model)
