"""Activation maps of the four bundled networks."""

import argparse
import warnings

import numpy as np
import pytest
from astropy.io import fits

from cnnfind.simulation import FieldConfig, simulate_field

pytest.importorskip('onnx')
pytest.importorskip('matplotlib')

from cnnfind.training import activations as act  # noqa: E402


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope='module')
def field():
    sim = simulate_field((72, 88), FieldConfig(density=1200, fwhm=3.0,
                                               snr_min=20.0, snr_max=2000.0),
                         seed=5)
    return sim['image']


def _galaxy(n=2, size=60):
    """Synthetic uint8 cutouts of elongated blobs."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    out = []
    for k in range(n):
        q = 0.3 + 0.5 * k / max(n - 1, 1)
        r2 = xx**2 + (yy / q) ** 2
        img = 240 * np.exp(-np.sqrt(r2) / 4.0)
        out.append(np.repeat(img[..., None], 3, axis=-1).astype(np.uint8))
    return np.stack(out)


def _layers(maps):
    return {k: v for k, v in maps.items() if not k.startswith('input ')}


def test_starfinder_maps_and_output(field):
    from cnnfind.detection.finder import CNNStarFinder
    feed = act.network_input('starfinder', field, fwhm=3.0)
    x = next(iter(feed.values()))
    assert x.shape[-2:] == (80, 96)  # padded to multiples of 16
    maps = act.feature_maps('starfinder', feed)
    layers = _layers(maps)
    assert len(layers) >= 10
    assert list(layers)[-1] == 'logits'
    sizes = {v.shape[-1] for v in layers.values() if v.ndim == 4}
    assert {96, 48, 24, 12, 6} <= sizes  # every level of the encoder
    # The exposed output is the finder's own heatmap.
    heat = CNNStarFinder(threshold=1.0, fwhm=3.0).heatmap(field)
    got = _sigmoid(maps['logits'][0, 0, :72, :88])
    assert np.allclose(got, heat, atol=1e-5)


def test_n2v_maps_and_output(field):
    import onnxruntime as ort

    from cnnfind.runtime.registry import MODELS_DIR
    feed = act.network_input('n2v', field)
    maps = act.feature_maps('n2v', feed)
    layers = _layers(maps)
    assert len(layers) >= 8
    from cnnfind.runtime.registry import load_model
    m = int(load_model('n2v', 'n2v').card['size_multiple'])
    ny, nx = -(-72 // m) * m, -(-88 // m) * m
    assert feed['image'].shape == layers['prediction'].shape == (1, 2, ny, nx)
    plain = ort.InferenceSession(str(MODELS_DIR / 'n2v.onnx'),
                                 providers=['CPUExecutionProvider'])
    ref = plain.run(None, feed)[0]
    assert np.allclose(maps['prediction'], ref, atol=1e-5)


def test_psfstars_maps_and_output(field):
    from cnnfind.psfstars.selector import PSFStarSelector
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        feed, row = act._psfstars_feed('psfstars', field, None, 3.0, None)
        table = PSFStarSelector(fwhm=3.0).select(field, keep_rejected=True)
    maps = act.feature_maps('psfstars', feed)
    layers = _layers(maps)
    assert len(layers) >= 6
    assert maps['input stamps'].shape == (1, 3, 25, 25)
    assert layers['logits'].shape == (1, 1)
    assert any(v.ndim == 2 and v.shape[1] > 1 for v in layers.values())
    score = _sigmoid(float(layers['logits'][0, 0]))
    assert score == pytest.approx(float(table['psf_score'][0]), abs=1e-5)
    assert row['x_centroid'] == table['x_centroid'][0]


def test_galaxymorph_maps_and_output():
    from cnnfind.morphology.classifier import GalaxyMorphClassifier
    cut = _galaxy()
    maps = act.feature_maps('galaxymorph', act.network_input('galaxymorph',
                                                             cut))
    layers = _layers(maps)
    assert len(layers) >= 8
    p = layers['probabilities']
    assert p.shape == (2, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    tbl = GalaxyMorphClassifier()(cut)
    ref = np.column_stack([tbl[f'p_{c}'] for c in ('elliptical', 'spiral',
                                                    'no_galaxy')])
    assert np.allclose(p, ref, atol=1e-5)


def test_user_model_and_errors(tmp_path):
    import shutil

    from cnnfind.runtime.registry import MODELS_DIR
    user = tmp_path / 'mine.onnx'  # no card: the tool is guessed
    shutil.copy(MODELS_DIR / 'galaxymorph.onnx', user)
    assert act._tool_of(user) == 'galaxymorph'
    x = np.random.default_rng(1).random((1, 3, 64, 64)).astype(np.float32)
    a = act.feature_maps(user, x)
    b = act.feature_maps('galaxymorph', x)
    assert list(a) == list(b)
    assert np.allclose(a['probabilities'], b['probabilities'])
    with pytest.raises(ValueError, match='unknown model'):
        act.feature_maps('nosuchmodel', x)
    with pytest.raises(ValueError, match='missing input'):
        act.feature_maps('starfinder', {'image': np.zeros((1, 2, 16, 16))})


def test_plot_and_command_line(field, tmp_path):
    maps = act.feature_maps('starfinder',
                            act.network_input('starfinder', field))
    fig = act.plot_feature_maps(maps, max_channels=3, layers=['enc', 'logits'])
    n_rows = sum(1 for k in maps if 'enc' in k or 'logits' in k)
    assert len(fig.axes) == 3 * n_rows
    with pytest.raises(ValueError, match='no layer'):
        act.plot_feature_maps(maps, layers=['nothing'])

    path = tmp_path / 'field.fits'
    fits.writeto(path, field)
    out = tmp_path / 'maps.png'
    parser = act.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(['starfinder', str(path), '-o', str(out),
                              '--channels', '4', '--dpi', '40'])
    assert act.run(args) == 0
    head = out.read_bytes()[:8]
    assert head == b'\x89PNG\r\n\x1a\n' and out.stat().st_size > 5000
