"""
Where training runs: the CPU, or a CUDA GPU with mixed precision.
"""

import contextlib

import torch

__all__ = ['training_device', 'autocast', 'grad_scaler', 'to_device',
           'backward_step', 'add_device_argument']

_CHOICES = ('auto', 'cpu', 'cuda')


def training_device(device='auto'):
    """
    The `torch.device` to train on.

    Parameters
    ----------
    device : {'auto', 'cpu', 'cuda'} or `torch.device`
        ``'auto'`` takes the first CUDA GPU when torch sees one and the
        CPU otherwise.

    Returns
    -------
    device : `torch.device`

    Raises
    ------
    ValueError
        For an unknown name, or ``'cuda'`` when torch sees no GPU.
    """
    if isinstance(device, torch.device):
        device = device.type
    if device not in _CHOICES:
        msg = f'device must be one of {_CHOICES}, not {device!r}'
        raise ValueError(msg)
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda' and not torch.cuda.is_available():
        msg = ("device='cuda' was asked for but torch sees no CUDA GPU "
               "(this torch build or machine has none); use 'cpu' or "
               "'auto'")
        raise ValueError(msg)
    return torch.device(device)


def _half_dtype(device):
    """bfloat16 where the GPU supports it, else float16; None on the CPU."""
    if device.type != 'cuda':
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device):
    """
    Mixed precision on a GPU (bfloat16, or float16 on older GPUs); a
    no-op context on the CPU, where training stays in float32.
    """
    dtype = _half_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type='cuda', dtype=dtype)


def grad_scaler(device):
    """
    A gradient scaler, active only for float16 training (bfloat16 and
    float32 need none).
    """
    return torch.amp.GradScaler('cuda',
                                enabled=_half_dtype(device) == torch.float16)


def backward_step(loss, opt, scaler, max_grad_norm=None):
    """
    Back-propagate ``loss`` and take an optimiser step through
    ``scaler`` (a no-op scaler on the CPU), optionally clipping the
    gradient norm of the optimised parameters first.
    """
    scaler.scale(loss).backward()
    if max_grad_norm is not None:
        scaler.unscale_(opt)
        params = [p for group in opt.param_groups for p in group['params']]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    scaler.step(opt)
    scaler.update()


def to_device(batch, device):
    """Move a tuple or list of tensors to ``device``."""
    return type(batch)(t.to(device, non_blocking=True) for t in batch)


def add_device_argument(parser):
    """The ``--device`` option of the training commands."""
    parser.add_argument('--device', choices=_CHOICES, default='auto',
                        help='train on the CPU or a CUDA GPU (mixed '
                             'precision); auto: the GPU when torch sees '
                             'one (default)')
