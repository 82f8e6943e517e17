"""Training side: data, ONNX export and parity, a tiny end-to-end run."""

import json

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from cnnfind import CNNStarFinder  # noqa: E402
from cnnfind.training.calibrate import isotonic_fit  # noqa: E402
from cnnfind.training.data import N_CHANNELS, make_patch  # noqa: E402
from cnnfind.training.export import check_parity, export_onnx  # noqa: E402
from cnnfind.training.nets import (  # noqa: E402
    ExportStarNet,
    StarNet,
    fold_stem_weight,
    unfold_stem_weight,
)


def test_patch_targets_mark_bright_stars():
    rng = np.random.default_rng(3)
    x, fwhm_in, target, weight = make_patch(rng, 64, ())
    assert x.shape == (N_CHANNELS, 64, 64) and x.dtype == np.float32
    assert np.isfinite(x).all()
    assert set(np.unique(x[1])) <= {0.0, 1.0}
    assert target.max() <= 1.0 and target.min() >= 0.0
    assert np.all(weight >= 0)
    assert np.isfinite(fwhm_in)


def test_patches_are_reproducible():
    a = make_patch(np.random.default_rng((5, 1)), 64, ())
    b = make_patch(np.random.default_rng((5, 1)), 64, ())
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize('shape', [(1, 2, 64, 96), (2, 2, 48, 32),
                                   (2, 3, 48, 32)])
def test_onnx_torch_parity(tmp_path, shape):
    torch.manual_seed(0)
    model = StarNet(in_channels=shape[1])
    path = export_onnx(model, (torch.randn(1, shape[1], 32, 32),
                               torch.zeros(1, 1, 1, 1)),
                       tmp_path / 'net.onnx', input_names=('image', 'fwhm'),
                       output_names=('logits',),
                       dynamic_axes={'image': {0: 'b', 2: 'h', 3: 'w'},
                                     'fwhm': {0: 'b'},
                                     'logits': {0: 'b', 2: 'h', 3: 'w'}})
    diff = check_parity(model, path, (torch.randn(*shape),
                                      torch.full((shape[0], 1, 1, 1), 0.2)))
    assert diff < 1e-4


def test_bundled_model_matches_torch_weights(tmp_path):
    """The shipped ONNX file is an export of a StarNet (same outputs)."""
    import onnx
    from onnx import numpy_helper

    from cnnfind.runtime import load_model
    onnx_model = onnx.load(str(load_model(None, 'starfinder').path))
    inits = {i.name: numpy_helper.to_array(i)
             for i in onnx_model.graph.initializer}
    stem = torch.from_numpy(inits['stem.weight'].copy())
    if stem.shape[-1] == 6:  # exported with the stem folded
        stem = unfold_stem_weight(stem)
    inits['stem.weight'] = stem.numpy()
    n_in = stem.shape[1] // 4
    channels = (stem.shape[0], inits['enc1.0.0.weight'].shape[0],
                inits['enc2.0.0.weight'].shape[0])
    net = StarNet(channels, in_channels=n_in)
    state = net.state_dict()
    loaded = {k: torch.from_numpy(inits[k].copy()) for k in state
              if k in inits}
    assert len(loaded) == len(state)
    net.load_state_dict(loaded)
    x = torch.randn(1, n_in, 64, 64)
    f = torch.zeros(1, 1, 1, 1)
    diff = check_parity(net, load_model(None, 'starfinder').path, (x, f))
    assert diff < 1e-4


@pytest.mark.parametrize('n_in', [2, 3])
def test_folded_stem_is_the_same_function(n_in):
    """The export form (unshuffle folded into a strided stem) computes
    what StarNet computes, and the fold is invertible."""
    torch.manual_seed(1)
    net = StarNet((8, 16, 24), in_channels=n_in).eval()
    w = net.stem.weight.detach()
    folded = fold_stem_weight(w)
    assert folded.shape == (8, n_in, 6, 6)
    assert torch.equal(unfold_stem_weight(folded), w)
    export = ExportStarNet(net).eval()
    assert not any(isinstance(m, torch.nn.PixelUnshuffle)
                   for m in export.modules())
    assert set(export.state_dict()) == set(net.state_dict())
    x = torch.randn(2, n_in, 48, 80)
    f = torch.tensor([0.3, -0.2]).view(2, 1, 1, 1)
    with torch.no_grad():
        ref, got = net(x, f), export(x, f)
    assert float((ref - got).abs().max()) < 1e-5
    # A different weight layout would not be the same function.
    export.stem.weight.data = folded.transpose(-1, -2).contiguous()
    with torch.no_grad():
        assert float((ref - export(x, f)).abs().max()) > 1e-3


def test_export_starnet_has_no_transpose(tmp_path):
    """The exported graph has no 6-D transpose from the unshuffle, and
    the fine-tuning loader reads the folded stem back."""
    import onnx

    from cnnfind.training.finetune import starnet_from_onnx
    from cnnfind.training.starfinder import export_starnet
    torch.manual_seed(2)
    net = StarNet((8, 16, 24)).eval()
    path = tmp_path / 'sf.onnx'
    assert export_starnet(net, path, 2) < 1e-4
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert 'Transpose' not in ops and 'SpaceToDepth' not in ops
    back = starnet_from_onnx(path)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v)


def test_patch_matched_filter_channel_marks_stars():
    """The third channel is the matched-filter SNR: high on stars."""
    rng = np.random.default_rng(11)
    for _ in range(5):
        x, _, target, weight = make_patch(rng, 64, (), n_channels=3)
        on = target == 1.0
        if on.any():
            break
    assert on.any()
    off = (target == 0) & (x[1] == 1)
    # asinh(snr / 3) >= asinh(1) on stars of SNR >= 3 (up to noise).
    assert np.median(x[2][on]) > np.median(x[2][off]) + 0.5


def test_isotonic_fit_is_monotone():
    rng = np.random.default_rng(0)
    s = rng.random(500)
    y = rng.random(500) < s
    raw, prob = isotonic_fit(s, y)
    assert np.all(np.diff(prob) >= 0)
    assert prob[0] < 0.2 and prob[-1] > 0.8


def test_tiny_training_run_end_to_end(tmp_path):
    pytest.importorskip('sklearn')
    from cnnfind.training.starfinder import main
    card_path = main(['--out', str(tmp_path / 'models'),
                      '--workdir', str(tmp_path / 'run'), '--steps', '3',
                      '--patch', '64', '--batch-size', '2',
                      '--calib-fields', '2', '--metric-size', '96',
                      '--vetting-fields', '6', '--no-progress', '--no-real'])
    card = json.loads(card_path.read_text())
    # The vetting stage was fitted and named in the network's card.
    assert card['vetting'] == 'starfinder_vetting.onnx'
    vet = json.loads((tmp_path / 'models' / 'starfinder_vetting.json')
                     .read_text())
    assert vet['onnx_parity_max_abs_diff'] < 1e-3
    assert vet['training_command'] == card['training_command']
    assert card['training_command'].endswith('--vetting-fields 6')
    for key in ('sha256', 'calibration', 'metrics', 'training_command',
                'onnx_parity_max_abs_diff'):
        assert key in card
    assert card['onnx_parity_max_abs_diff'] < 1e-4
    assert card['halo'] == 64 and card['version'] == '1.1.0'
    assert card['training']['device'] == ('cuda' if torch.cuda.is_available()
                                          else 'cpu')
    assert (tmp_path / 'run' / 'best.pt').exists()
    onnx_path = tmp_path / 'models' / 'starfinder.onnx'
    finder = CNNStarFinder(3.0, 3.0, model=onnx_path)
    heat = finder.heatmap(np.random.default_rng(0).normal(0, 1, (40, 50)))
    assert heat.shape == (40, 50)


def test_matched_filter_model_runs_tiled_like_full_pass(tmp_path,
                                                        monkeypatch):
    """A 3-channel (matched-filter) model: the finder feeds it the extra
    channel and its wider halo keeps tiled output equal to a full pass."""
    import json as _json

    from cnnfind.runtime import load_model
    from cnnfind.training.export import write_card
    from cnnfind.training.starfinder import _halo, export_starnet
    torch.manual_seed(1)
    net = StarNet(in_channels=3)
    path = tmp_path / 'mf.onnx'
    assert export_starnet(net, path, 3) < 1e-4
    card = {k: v for k, v in load_model(None, 'starfinder').card.items()
            if k not in ('calibration', 'sha256', 'file', 'vetting')}
    card.update(name='starfinder-mf', halo=_halo(3))
    write_card(path, card)
    assert _json.loads(path.with_suffix('.json').read_text())['halo'] == 80
    img = np.random.default_rng(3).normal(0, 1, (200, 230)).astype(np.float32)
    img[100:104, 60:64] += 40.0
    full = CNNStarFinder(3.0, 6.0, model=path, tile_size=1024).heatmap(img)
    tiled = CNNStarFinder(3.0, 6.0, model=path, tile_size=64).heatmap(img)
    np.testing.assert_allclose(tiled, full, atol=1e-5)
    # The matched-filter channel is really fed: blanking it changes the
    # output.
    from cnnfind.detection import finder as finder_module
    real = finder_module._network_input

    def blank_third(*args, **kwargs):
        out = real(*args, **kwargs)
        out[2:] = 0.0
        return out

    monkeypatch.setattr(finder_module, '_network_input', blank_third)
    blank = CNNStarFinder(3.0, 6.0, model=path).heatmap(img)
    assert np.abs(blank - full).max() > 1e-3


def test_training_command_records_non_default_options():
    from cnnfind.training.starfinder import _training_command, build_parser
    default = _training_command(build_parser().parse_args([]))
    assert default == ('python -m cnnfind.training.starfinder --out '
                       'cnnfind/models --steps 4000 --seed 0')
    cmd = _training_command(build_parser().parse_args(
        ['--steps', '10', '--channels', '24', '48', '64',
         '--sky-jitter', '0.1']))
    assert cmd.endswith('--steps 10 --seed 0 --channels 24 48 64 '
                        '--sky-jitter 0.1')
    # The recorded command parses back to the same options.
    again = build_parser().parse_args(cmd.split()[3:])
    assert list(again.channels) == [24, 48, 64]
    assert again.sky_jitter == 0.1 and again.noise_jitter == 0.15
    # Batch size, patch, learning rate and the calibration are part of
    # the recipe too (a GPU run with a larger batch must say so).
    cmd = _training_command(build_parser().parse_args(
        ['--batch-size', '32', '--lr', '0.001', '--calib-fields', '8',
         '--no-real', '--workers', '6', '--device', 'cpu']))
    assert cmd.endswith('--batch-size 32 --lr 0.001 --calib-fields 8 '
                        '--no-real')
    again = build_parser().parse_args(cmd.split()[3:])
    assert (again.batch_size, again.lr, again.calib_fields) == (32, 0.001, 8)
    assert again.no_real and again.patch == 128


def test_patch_jitter_options():
    """Without jitter the network sees the estimated sky and noise: the
    normalised sky is centred on zero."""
    from cnnfind.training.data import make_patch
    offsets = []
    for k in range(6):
        rng = np.random.default_rng((11, k))
        x, *_ = make_patch(rng, 64, (), sky_jitter=0.0, noise_jitter=0.0)
        offsets.append(np.median(x[0][x[1] > 0]))
    jittered = []
    for k in range(6):
        rng = np.random.default_rng((11, k))
        x, *_ = make_patch(rng, 64, (), sky_jitter=1.0, noise_jitter=0.0)
        jittered.append(np.median(x[0][x[1] > 0]))
    assert np.max(np.abs(offsets)) < 0.1
    assert np.max(np.abs(jittered)) > 0.1


def test_unlisted_peaks_of_real_frames_are_excluded():
    """Stars a real frame's catalogue misses are left out of the loss
    (not taught as negatives); noise and listed stars are not."""
    pytest.importorskip('photutils')
    from cnnfind.simulation.psf import render_profiles
    from cnnfind.training.data import _unlisted_exclusion
    rng = np.random.default_rng(8)
    img = rng.normal(100.0, 5.0, (200, 200))
    xs = np.array([40.0, 120.0, 160.0, 60.0])
    ys = np.array([50.0, 70.0, 150.0, 160.0])
    # Amplitudes giving matched-filter SNR ~ 15 with FWHM 2.5.
    render_profiles(img, xs, ys, np.full(4, 5.0 * 15 * 2.5), 2.5,
                    kind='gaussian')
    listed = [0, 1]
    excl = _unlisted_exclusion(img.astype(np.float32), xs[listed],
                               ys[listed], 5.0)
    for k in range(4):
        hit = excl[int(ys[k]), int(xs[k])]
        assert hit == (k not in listed)
    # Only the two unlisted stars' discs (radius 3.75 px), no noise peaks.
    assert excl.sum() < 2 * np.pi * 4.5**2
    # Correlated noise is measured in its own units: a smoothed pure-noise
    # frame gets (almost) nothing excluded.
    from scipy import ndimage
    smooth = ndimage.gaussian_filter(rng.normal(0, 5.0, (200, 200)), 0.8)
    assert _unlisted_exclusion(smooth.astype(np.float32), np.zeros(0),
                               np.zeros(0), 5.0).mean() < 0.002


def test_no_sharp_artefacts_option(monkeypatch):
    """--no-sharp-artefacts: the simulated fields get no cosmic rays or
    hot pixels, and the card's command says so."""
    from cnnfind.training import data
    from cnnfind.training.starfinder import _training_command, build_parser
    seen = []
    real = data.simulate_field

    def spy(shape, cfg, *args, **kwargs):
        seen.append((cfg.n_cosmic, cfg.n_hot))
        return real(shape, cfg, *args, **kwargs)

    monkeypatch.setattr(data, 'simulate_field', spy)
    for k in range(12):
        data.make_patch(np.random.default_rng((3, k)), 64, ())
    assert any(c or h for c, h in seen)
    seen.clear()
    for k in range(12):
        data.make_patch(np.random.default_rng((3, k)), 64, (),
                        sharp_artefacts=False)
    assert seen and not any(c or h for c, h in seen)
    args = build_parser().parse_args(['--no-sharp-artefacts'])
    assert _training_command(args).endswith('--no-sharp-artefacts')


def test_mesh_sky_option_follows_gradients():
    """--mesh-sky: the patch's background mesh is subtracted, as the
    finder does, so a sky gradient leaves no offset between the patch's
    quadrants; the card's command says so."""
    from cnnfind.training.starfinder import _training_command, build_parser

    def quadrant_spread(x):
        q = [np.median(x[0][s, t][x[1][s, t] > 0])
             for s in (slice(0, 64), slice(64, 128))
             for t in (slice(0, 64), slice(64, 128))]
        return np.ptp(q)

    spread = {False: [], True: []}
    for k in range(8):
        for mesh in (False, True):
            x, *_ = make_patch(np.random.default_rng((21, k)), 128, (),
                               sky_jitter=0.0, noise_jitter=0.0,
                               mesh_sky=mesh)
            spread[mesh].append(quadrant_spread(x))
    # Same fields either way: only the subtracted background differs.
    # (8 patches: spreads 12.8 in total without the mesh, 6.9 with it;
    # nebulosity and FWHM above 8 px, whose 144-px box is one mesh value
    # on a 128-px patch, keep some.)
    assert sum(spread[False]) > 5.0
    assert sum(spread[True]) < 0.7 * sum(spread[False])
    assert np.all(np.array(spread[True]) < np.array(spread[False]) + 0.1)
    args = build_parser().parse_args(['--mesh-sky'])
    assert _training_command(args).endswith('--mesh-sky')


def test_workers_must_be_positive(capsys):
    from cnnfind.training.starfinder import main
    with pytest.raises(SystemExit):
        main(['--workers', '0'])
    assert '--workers must be at least 1' in capsys.readouterr().err


def test_default_workers_follow_the_device(monkeypatch):
    from cnnfind.training import starfinder
    assert starfinder._n_workers(None, 'cpu') == 1
    assert starfinder._n_workers(3, 'cpu') == 3
    # As if torch saw a GPU: one process per spare core, at most 8.
    monkeypatch.setattr(starfinder, 'training_device',
                        lambda device: torch.device('cuda'))
    for cores, expected in ((16, 8), (4, 3), (1, 1), (None, 1)):
        monkeypatch.setattr(starfinder.os, 'cpu_count', lambda c=cores: c)
        assert starfinder._n_workers(None, 'auto') == expected
    assert starfinder._n_workers(2, 'auto') == 2


# torch warns when the workers outnumber the cores (CI has two).
@pytest.mark.filterwarnings('ignore:This DataLoader will create:UserWarning')
@pytest.mark.parametrize('workers', [2, 3])
def test_patch_stream_same_batches_for_any_number_of_workers(workers):
    # --workers only changes which process simulates a batch, never the
    # batches or their order, so a GPU run reproduces a CPU run's data.
    from cnnfind.training.loop import PatchStream
    from cnnfind.training.starfinder import _Example

    maker = _Example(32, None, use_real=False)
    stream = PatchStream(maker, 2, seed=5, setup=maker.setup)
    serial = iter(stream)
    loader = iter(torch.utils.data.DataLoader(stream, batch_size=None,
                                              num_workers=workers))
    for _ in range(2 * workers + 1):
        a, b = next(serial), next(loader)
        assert len(a) == len(b)
        for ta, tb in zip(a, b, strict=True):
            assert torch.equal(ta, tb)
