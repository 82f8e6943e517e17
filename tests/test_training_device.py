"""
Training device selection and mixed precision (``cnnfind.training``).

The CUDA branches run only where torch sees a GPU; on the CPU the
training stays in float32 and the same loop is used.
"""

import argparse

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from cnnfind.training._device import (  # noqa: E402
    add_device_argument,
    autocast,
    grad_scaler,
    to_device,
    training_device,
)
from cnnfind.training.loop import train  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def test_training_device_names():
    assert training_device('cpu') == torch.device('cpu')
    assert training_device(torch.device('cpu')) == torch.device('cpu')
    expected = 'cuda' if HAS_CUDA else 'cpu'
    assert training_device('auto').type == expected
    with pytest.raises(ValueError, match='device must be one of'):
        training_device('gpu')


@pytest.mark.skipif(HAS_CUDA, reason='a GPU is present')
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match='sees no CUDA GPU'):
        training_device('cuda')


def test_cpu_stays_float32_without_scaling():
    cpu = torch.device('cpu')
    a = torch.ones(4, 4)
    with autocast(cpu):
        assert (a @ a).dtype == torch.float32
    assert not grad_scaler(cpu).is_enabled()


@pytest.mark.skipif(not HAS_CUDA, reason='needs a CUDA GPU')
def test_cuda_runs_in_half_precision():
    gpu = torch.device('cuda')
    a = torch.ones(4, 4, device=gpu)
    with autocast(gpu):
        assert (a @ a).dtype in (torch.bfloat16, torch.float16)


def test_to_device_keeps_the_container():
    batch = (torch.zeros(2), torch.ones(3))
    moved = to_device(batch, torch.device('cpu'))
    assert isinstance(moved, tuple) and len(moved) == 2
    assert isinstance(to_device(list(batch), 'cpu'), list)


def test_device_option():
    p = argparse.ArgumentParser()
    add_device_argument(p)
    assert p.parse_args([]).device == 'auto'
    assert p.parse_args(['--device', 'cpu']).device == 'cpu'
    with pytest.raises(SystemExit):
        p.parse_args(['--device', 'tpu'])


@pytest.mark.parametrize('device', ['cpu', 'auto'])
def test_loop_trains_and_returns_a_cpu_model(tmp_path, device):
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    rng = np.random.default_rng(0)

    def batches():
        while True:
            x = torch.from_numpy(rng.normal(size=(4, 1, 8, 8))
                                 .astype(np.float32))
            yield (x, 2.0 * x)

    def forward(m, batch):
        x, y = batch
        return torch.mean((m(x) - y) ** 2)

    val = [next(batches())]
    history = train(model, batches(), forward, val, steps=40, lr=0.05,
                    outdir=tmp_path, eval_every=10, patience=10,
                    progress=False, device=device, log=lambda m: None)
    assert history['val'][-1][1] < history['val'][0][1]
    assert next(model.parameters()).device.type == 'cpu'


def _cpu_bfloat16(device):
    """Mixed precision on the CPU, standing in for the GPU's."""
    return torch.autocast('cpu', dtype=torch.bfloat16)


def test_loop_under_mixed_precision(tmp_path, monkeypatch):
    # The GPU branch's autocast, exercised on the CPU with bfloat16.
    from cnnfind.training import loop
    monkeypatch.setattr(loop, 'autocast', _cpu_bfloat16)
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.randn(4, 1, 8, 8)
    seen = []

    def forward(m, batch):
        out = m(batch[0])
        seen.append(out.dtype)
        return torch.mean((out.float() - 2.0 * batch[0]) ** 2)

    history = train(model, iter(lambda: (x,), None), forward, [(x,)],
                    steps=30, lr=0.05, outdir=tmp_path, eval_every=10,
                    patience=10, progress=False, device='cpu',
                    log=lambda m: None)
    assert torch.bfloat16 in seen
    assert history['val'][-1][1] < history['val'][0][1]
    assert next(model.parameters()).dtype == torch.float32


def test_morphology_training_under_mixed_precision(monkeypatch):
    from cnnfind.training import morphology
    monkeypatch.setattr(morphology, 'autocast', _cpu_bfloat16)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (24, 96, 96, 3)).astype(np.uint8)
    labels = np.arange(24) % 3
    split = np.where(np.arange(24) < 18, 'train', 'val')
    net, calibration, history = morphology.train(
        images, labels, np.zeros(24, bool), split, epochs=2, batch_size=6,
        log=lambda m: None)
    assert len(history) == 2 and np.isfinite(history[-1][1])
    assert calibration[0] > 0
    assert next(net.parameters()).dtype == torch.float32
