"""Noise2Void training: blind-spot batches, loss, network, export, a tiny run."""

import json

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from cnnfind.denoise import N2VDenoiser  # noqa: E402
from cnnfind.denoise._prepare import GRID, median_fill  # noqa: E402
from cnnfind.evaluation.denoise import psnr, simulate_denoise_field  # noqa: E402
from cnnfind.runtime.registry import load_model  # noqa: E402
from cnnfind.training.export import check_parity, export_onnx  # noqa: E402
from cnnfind.training.n2v import (  # noqa: E402
    HALO,
    _options,
    _receptive_field_radius,
    build_parser,
    make_batch,
    nll_loss,
    normalise_frame,
    train_n2v,
)
from cnnfind.training.n2v_net import N2VNet  # noqa: E402


@pytest.fixture(scope='module')
def frames():
    out = []
    for seed in (1, 2):
        f = simulate_denoise_field((96, 96), 'stars', seed=seed)
        img = f['image'].copy()
        img[10:14, 20:40] = np.nan
        out.append(normalise_frame(img))
    return out


def test_normalised_frame_contract(frames):
    z, valid = frames[0]
    assert z.dtype == np.float32 and valid.dtype == bool
    assert not valid[10:14, 20:40].any()
    assert np.all(z[~valid] == 0)
    # Unit noise in the sky (the transform is the identity there).
    assert 0.7 < np.std(z[valid & (np.abs(z) < 4)]) < 1.2


def test_batch_hides_a_grid_and_scores_only_it(frames):
    rng = np.random.default_rng(0)
    x, target, weight = make_batch(frames, rng, 4, 32)
    assert x.shape == (4, 2, 32, 32) and target.shape == (4, 32, 32)
    for b in range(4):
        hidden = weight[b] > 0
        # One pixel in GRID**2, on a regular grid, minus invalid pixels.
        assert hidden.sum() <= 32 * 32 // GRID**2
        ys, xs = np.nonzero(hidden)
        assert len(set(ys % GRID)) == 1 and len(set(xs % GRID)) == 1
        # Hidden pixels are flagged invalid and hold the neighbours'
        # median, not their own value.
        assert np.all(x[b, 1][hidden] == 0)
        med = median_fill(target[b])
        np.testing.assert_allclose(x[b, 0][hidden], med[hidden], atol=1e-5)
        # Elsewhere the input is the target.
        keep = x[b, 1] > 0
        np.testing.assert_array_equal(x[b, 0][keep], target[b][keep])


def test_batches_are_reproducible(frames):
    a = make_batch(frames, np.random.default_rng((3, 1)), 2, 32)
    b = make_batch(frames, np.random.default_rng((3, 1)), 2, 32)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


def test_loss_only_on_hidden_pixels(frames):
    torch.manual_seed(0)
    model = N2VNet()
    x, target, weight = (torch.from_numpy(a) for a in
                         make_batch(frames, np.random.default_rng(1), 2, 32))
    loss = nll_loss(model, (x, target, weight))
    changed = target.clone()
    changed[weight == 0] += 100.0
    assert torch.isclose(loss, nll_loss(model, (x, changed, weight)))
    changed[weight > 0] += 1.0
    assert not torch.isclose(loss, nll_loss(model, (x, changed, weight)))


def test_net_shape_and_receptive_field():
    model = N2VNet()
    out = model(torch.zeros(2, 2, 48, 64))
    assert out.shape == (2, 2, 48, 64)
    assert _receptive_field_radius(model) <= HALO


def test_onnx_torch_parity(tmp_path):
    torch.manual_seed(0)
    model = N2VNet().eval()
    path = export_onnx(model, (torch.randn(1, 2, 32, 32),),
                       tmp_path / 'n.onnx', input_names=('image',),
                       output_names=('prediction',),
                       dynamic_axes={'image': {0: 'b', 2: 'h', 3: 'w'},
                                     'prediction': {0: 'b', 2: 'h', 3: 'w'}})
    x = torch.randn(3, 2, 40, 72)
    assert check_parity(model, path, (x,)) < 1e-4


def test_tiny_training_exports_and_reloads(tmp_path):
    f = simulate_denoise_field((96, 96), 'stars', seed=8)
    out = tmp_path / 'own.onnx'
    den = train_n2v([f['image']], out, steps=40, patch=32, batch_size=8,
                    device='cpu')
    assert isinstance(den, N2VDenoiser)
    assert out.exists()
    card = json.loads(out.with_suffix('.json').read_text())
    for key in ('sha256', 'training_command', 'normalization', 'halo',
                'blind_spot_grid', 'onnx_parity_max_abs_diff'):
        assert key in card
    assert card['onnx_parity_max_abs_diff'] < 1e-4
    assert card['training']['device'] == 'cpu'
    # The recorded command names the non-default batch and patch sizes.
    assert card['training_command'].endswith(
        '--steps 40 --seed 0 --batch-size 8 --patch 32')
    # The runtime reloads it (SHA-256 checked) and it denoises.
    load_model(str(out), 'n2v')
    again = N2VDenoiser(str(out), device='cpu')
    d = again(f['image'])
    assert psnr(d, f['truth']) > psnr(f['image'], f['truth']) + 2.0


def test_wider_network_is_recorded_and_runs(tmp_path):
    """``channels`` builds a wider network; the card and the recorded
    command say so, and the runtime runs it like the default one."""
    f = simulate_denoise_field((64, 64), 'stars', seed=9)
    out = tmp_path / 'wide.onnx'
    den = train_n2v([f['image']], out, steps=2, patch=32, batch_size=2,
                    device='cpu', channels=(8, 16, 24))
    card = json.loads(out.with_suffix('.json').read_text())
    assert card['training']['channels'] == [8, 16, 24]
    assert card['training_command'].endswith(
        '--batch-size 2 --patch 32 --channels 8 16 24')
    assert den(f['image']).shape == f['image'].shape
    # The default width is not written into the command.
    args = build_parser().parse_args(['--generic', '--channels', '24', '32',
                                      '48'])
    assert _options(args, 'channels') == ''
    with pytest.raises(ValueError, match='channels must be positive'):
        train_n2v([f['image']], tmp_path / 'x.onnx', steps=1, patch=32,
                  channels=(0, 16, 24))


def test_training_input_errors(tmp_path):
    with pytest.raises(ValueError, match='smaller than the patch'):
        train_n2v([np.random.default_rng(0).normal(size=(20, 20))],
                  tmp_path / 'x.onnx', steps=1, patch=32)
    with pytest.raises(ValueError, match='2-D'):
        normalise_frame(np.zeros((2, 8, 8)))
    args = build_parser().parse_args(['--generic'])
    assert args.generic and args.threads == 1
