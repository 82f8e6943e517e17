"""Tests of the PSFStarSelector training pipeline (needs torch)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from cnnfind.psfstars import PSFStarSelector  # noqa: E402
from cnnfind.psfstars._features import STAMP  # noqa: E402
from cnnfind.training import psfstars as tp  # noqa: E402
from cnnfind.training.export import check_parity, export_onnx  # noqa: E402


@pytest.fixture(scope='module')
def tiny_data():
    torch.set_num_threads(1)
    return tp.make_dataset(4, seed=3, size=160, p_real=0.0, log=None)


def test_dataset_contract(tiny_data):
    d = tiny_data
    n = len(d['label'])
    assert n > 10
    assert d['stamps'].shape == (n, 3, STAMP, STAMP)
    assert d['stamps'].dtype == np.float32
    assert d['scalars'].shape == (n, 4)
    assert d['label'].dtype == bool
    # Both classes occur, and the validity channel is binary.
    assert 0 < d['label'].sum() < n
    assert set(np.unique(d['stamps'][:, 2])) <= {0.0, 1.0}
    # The network's view is clipped as the card says.
    assert d['stamps'][:, 0].min() >= -2.0
    assert d['stamps'][:, 0].max() <= 5.0
    assert d['snr'].min() >= tp.TRAIN_SNR


def test_tiny_training_and_onnx_parity(tiny_data, tmp_path):
    model, history = tp.train_net(tiny_data, epochs=2, batch_size=64,
                                  channels=(4, 8, 8), log=None)
    assert len(history) == 2 and all(np.isfinite(history))
    path = export_onnx(model, (torch.randn(2, 3, STAMP, STAMP),
                               torch.randn(2, 4)),
                       tmp_path / 'm.onnx', input_names=('stamps', 'scalars'),
                       output_names=('logits',),
                       dynamic_axes={'stamps': {0: 'batch'},
                                     'scalars': {0: 'batch'},
                                     'logits': {0: 'batch'}})
    x = torch.from_numpy(tiny_data['stamps'][:17])
    s = torch.from_numpy(tiny_data['scalars'][:17])
    diff = check_parity(model, path, (x, s))
    assert diff < 1e-4


def test_choose_threshold():
    score = np.array([0.1, 0.6, 0.7, 0.8, 0.95, 0.97])
    label = np.array([0, 0, 1, 0, 1, 1], bool)
    cut, pur, comp = tp.choose_threshold(score, label, np.ones(6, bool))
    assert cut > 0.8 and pur == 1.0
    assert comp == pytest.approx(2 / 3)


def test_main_writes_usable_model(tmp_path):
    card_path = tp.main(['--out', str(tmp_path / 'models'), '--workdir',
                         str(tmp_path / 'work'), '--fields', '6', '--size',
                         '160', '--epochs', '1', '--no-real', '--channels',
                         '4,8,8', '--operating-fields', '0'])
    card = json.loads(card_path.read_text())
    assert card['name'] == 'psfstars'
    assert card['stamp_size'] == STAMP
    assert card['training_command'] == (
        'python -m cnnfind.training.psfstars --out cnnfind/models '
        '--fields 6 --epochs 1 --size 160 --channels 4,8,8 --no-real')
    assert card['onnx_parity_max_abs_diff'] < 1e-4
    assert card['training']['device'] in ('cpu', 'cuda')
    assert 0.0 <= card['default_min_score'] <= 1.0
    # The runtime accepts the new model and its card.
    sel = PSFStarSelector(fwhm=3.0, model=card_path.with_suffix('.onnx'))
    assert sel.min_score == card['default_min_score']


def test_operating_point_rule():
    """
    The default (min_score, min_snr) is the combination that selects the
    most stars among those reaching the purity floor, else the purest.
    """
    from cnnfind.runtime.registry import load_model
    onnx_path = load_model(None, 'psfstars').path
    cut, snr, table = tp.operating_point(onnx_path, seeds=(2000,), size=384,
                                         log=None)
    assert len(table) == len(tp.OPERATING_CUTS) * len(tp.OPERATING_SNRS)
    chosen = next(r for r in table
                  if r['min_score'] == cut and r['min_snr'] == snr)
    pure = [r for r in table
            if r['purity'] is not None and r['purity'] >= 0.985]
    if pure:
        assert chosen['n_selected_per_field'] == max(
            r['n_selected_per_field'] for r in pure)
    else:
        assert chosen['purity'] == max(r['purity'] for r in table
                                       if r['purity'] is not None)
    for r in table:
        assert r['n_selected_per_field'] >= 0
        assert r['purity'] is None or 0.0 <= r['purity'] <= 1.0
        assert r['completeness'] is None or 0.0 <= r['completeness'] <= 1.0
