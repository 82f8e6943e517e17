"""
Training the galaxy-morphology classifier: data split, augmentation,
a tiny end-to-end run, ONNX export and parity.
"""

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from cnnfind.morphology import GalaxyMorphClassifier  # noqa: E402
from cnnfind.training.morph_data import (  # noqa: E402
    STORE_SIZE,
    split_gz1,
    store_image,
)
from cnnfind.training.morphology import (  # noqa: E402
    INPUT_SIZE,
    LR,
    MorphNet,
    _augment,
    _card,
    _ema_update,
    export_model,
    train,
)


def _synthetic_set(n_per_class, seed=0):
    """Round blobs, elongated discs and empty sky as stored images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:160, :160] - 79.5
    images, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            noise = rng.normal(0.02, 0.01, (160, 160))
            if label == 0:
                r = np.hypot(xx, yy / rng.uniform(0.8, 1.0))
                img = 0.6 * np.exp(-(r / 12) ** 0.5 * 2)
            elif label == 1:
                r = np.hypot(xx, yy / rng.uniform(0.15, 0.3))
                img = 0.5 * np.exp(-r / 12)
            else:
                img = 0.0
            disp = np.clip(img + noise, 0, 1)[..., None].repeat(3, -1)
            images.append(store_image(disp.astype(np.float32)))
            labels.append(label)
    return np.stack(images), np.array(labels)


def test_split_is_by_object_and_deterministic():
    ids = np.array([5, 7, 5, 9, 11, 7] * 50 + list(range(1000, 1400)))
    a = split_gz1(ids, seed=0)
    b = split_gz1(ids, seed=0)
    assert np.array_equal(a, b)
    for i in np.unique(ids):
        assert len(set(a[ids == i])) == 1
    frac = {r: np.mean(a[ids >= 1000] == r) for r in ('train', 'val', 'test')}
    assert 0.6 < frac['train'] < 0.85
    assert 0.1 < frac['test'] < 0.22


def test_store_image_shape_and_fill():
    disp = np.full((200, 200, 3), 0.5, np.float32)
    disp[:50] = np.nan
    img = store_image(disp)
    assert img.shape == (STORE_SIZE, STORE_SIZE, 3)
    assert img.dtype == np.uint8
    assert img[STORE_SIZE // 2, STORE_SIZE // 2, 0] == 128


def test_augment_shapes_range_and_grey():
    images, labels = _synthetic_set(4)
    grey = np.zeros(len(labels), bool)
    gen = torch.Generator().manual_seed(0)
    x = _augment(images, labels, grey, gen)
    assert x.shape == (len(labels), 3, INPUT_SIZE, INPUT_SIZE)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # Grey-flagged images stay grey (no per-band gain).
    x = _augment(images, labels, np.ones(len(labels), bool), gen)
    np.testing.assert_allclose(x[:, 0], x[:, 1], atol=1e-6)


def test_ema_update_averages_floats_and_copies_counters():
    net = MorphNet()
    ema = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    _ema_update(ema, net, 0.75)
    state = net.state_dict()
    w = 'head.weight'
    torch.testing.assert_close(ema[w], 0.25 * state[w])
    counter = [k for k in state if k.endswith('num_batches_tracked')][0]
    state[counter].fill_(7)
    _ema_update(ema, net, 0.75)
    assert int(ema[counter]) == 7
    _ema_update(ema, net, 0.0)
    torch.testing.assert_close(ema[w], state[w])


@pytest.mark.parametrize('size,ema_decay', [(INPUT_SIZE, 0.995), (48, 0.0)])
def test_tiny_training_exports_a_working_model(tmp_path, size, ema_decay):
    torch.set_num_threads(1)
    images, labels = _synthetic_set(24)
    split = np.where(np.arange(len(labels)) % 4 == 0, 'val', 'train')
    grey = np.zeros(len(labels), bool)
    net, calibration, history = train(images, labels, grey, split, epochs=4,
                                      batch_size=16, lr=1e-2,
                                      input_size=size, ema_decay=ema_decay,
                                      log=lambda m: None)
    assert len(history) == 4
    assert history[-1][1] < history[0][1]  # the loss went down
    assert calibration[0] > 0
    assert len(calibration[1]) == 3
    card = {'name': 'tiny', 'classes': ['elliptical', 'spiral', 'no_galaxy'],
            'input_size': size, 'crop': 0.5, 'stamp_scale': 5.8}
    path = tmp_path / 'tiny.onnx'
    parity = export_model(net, calibration, path, card)
    assert parity < 1e-5
    clf = GalaxyMorphClassifier(path, device='cpu')
    # The exported model classifies the training patterns.
    yy, xx = np.mgrid[:320, :320] - 159.5
    disc = 0.5 * np.exp(-np.hypot(xx, yy / 0.2) / 24)
    rng = np.random.default_rng(9)
    sky = rng.normal(0.02, 0.01, (320, 320))
    cut = np.clip(np.stack([disc + sky, sky]), 0, 1)
    tbl = GalaxyMorphClassifier(path, stretch='none', device='cpu')(cut)
    assert tbl['p_no_galaxy'][1] > tbl['p_no_galaxy'][0]
    assert tbl['label'][1] == 'no_galaxy'
    assert clf.classes == ('elliptical', 'spiral', 'no_galaxy')


def test_morphnet_is_small_and_fully_pooled():
    net = MorphNet()
    n = sum(p.numel() for p in net.parameters())
    assert n < 400_000
    out = net(torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE))
    assert out.shape == (2, 3)


def test_card_records_device_and_non_default_learning_rate():
    from types import SimpleNamespace
    args = SimpleNamespace(input_size=INPUT_SIZE, epochs=3, ema_decay=0.995,
                           seed=1, lr=LR, device='cpu')
    card = _card(args, [], (1.0, [0.0, 0.0, 0.0]), 10, [1, 2, 3])
    assert card['training']['device'] == 'cpu'
    assert card['training_command'].endswith('--ema-decay 0.995 --seed 1')
    args.lr = 1e-3
    card = _card(args, [], (1.0, [0.0, 0.0, 0.0]), 10, [1, 2, 3])
    assert card['training_command'].endswith('--seed 1 --lr 0.001')
