"""
A small, seeded training loop with validation, early stopping,
checkpoints and a tqdm progress bar (torch).
"""

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from cnnfind.training._device import (
    autocast,
    backward_step,
    grad_scaler,
    to_device,
    training_device,
)

__all__ = ['PatchStream', 'masked_bce', 'train']


class PatchStream(torch.utils.data.IterableDataset):
    """
    An endless, reproducible stream of batches from ``make_example``.

    Batch ``k`` is generated from ``numpy.random.default_rng((seed, k))``
    so the stream is the same whatever process produces it. In a
    `torch.utils.data.DataLoader` with ``num_workers=n``, worker ``w``
    makes batches ``w, w + n, w + 2n, ...``; the loader takes the workers
    in turn, so it yields batches ``0, 1, 2, ...`` in order for any ``n``.
    """

    def __init__(self, make_example, batch_size, seed, setup=None):
        super().__init__()
        self.make_example = make_example
        self.batch_size = batch_size
        self.seed = seed
        self.setup = setup

    def __iter__(self):
        context = self.setup() if self.setup is not None else None
        info = torch.utils.data.get_worker_info()
        k, stride = (0, 1) if info is None else (info.id, info.num_workers)
        while True:
            rng = np.random.default_rng((self.seed, k))
            items = [self.make_example(rng, context)
                     for _ in range(self.batch_size)]
            yield tuple(torch.from_numpy(np.stack(a)) for a in zip(*items,
                                                                  strict=True))
            k += stride


def masked_bce(logits, target, weight):
    """Binary cross-entropy with soft targets, weighted per pixel."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, reduction='none')
    return (loss * weight).sum() / weight.sum().clamp_min(1.0)


def _dihedral(tensors, k):
    """Apply one of the 8 rotations/flips to the last two axes."""
    out = []
    for t in tensors:
        if t.ndim >= 3:
            t = torch.rot90(t, k % 4, dims=(-2, -1))
            if k >= 4:
                t = torch.flip(t, dims=(-1,))
        out.append(t.contiguous())
    return out


def train(model, stream, forward, val_batches, *, steps, lr=2e-3,
          outdir, eval_every=250, patience=8, reuse=2, progress=True,
          seed=0, device='cpu', log=print):
    """
    Train ``model`` and keep the checkpoint with the best validation loss.

    Parameters
    ----------
    model : `torch.nn.Module`
        The network.
    stream : iterable of batches
        Training batches (tuples of tensors).
    forward : callable
        ``forward(model, batch) -> loss``.
    val_batches : list of batches
        Fixed validation set.
    steps : int
        Maximum number of optimiser steps.
    lr : float
        Peak learning rate (cosine decay to 5 % of it).
    outdir : path
        Where ``best.pt``, ``last.pt`` and ``history.json`` are written.
    eval_every, patience : int
        Validation period and early-stopping patience (in evaluations).
    reuse : int
        Each generated batch is used this many times, under different
        rotations/flips.
    progress : bool
        Show a tqdm progress bar.
    seed : int
        Seed for torch.
    device : {'cpu', 'auto', 'cuda'}
        Where to train. On a GPU the forward passes run in mixed
        precision (bfloat16, or float16 with gradient scaling); the
        model is returned on the CPU either way.

    Returns
    -------
    history : dict
        Losses and the best step.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    device = training_device(device)
    model.to(device)
    scaler = grad_scaler(device)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    history = {'train': [], 'val': [], 'best_step': None, 'best_val': None}
    best, bad = math.inf, 0
    it = iter(stream)
    bar = tqdm(total=steps, disable=not progress, desc='training')
    running, n_run, t0 = 0.0, 0, time.time()
    step = 0
    while step < steps:
        batch = to_device(next(it), device)
        for r in range(reuse):
            if step >= steps:
                break
            model.train()
            k = (step * 3 + r) % 8
            with autocast(device):
                loss = forward(model, _dihedral(batch, k))
            opt.zero_grad(set_to_none=True)
            backward_step(loss, opt, scaler, max_grad_norm=5.0)
            sched.step()
            running += loss.item()
            n_run += 1
            step += 1
            bar.update(1)
            if step % eval_every == 0 or step == steps:
                model.eval()
                with torch.no_grad(), autocast(device):
                    val = float(np.mean([
                        forward(model, to_device(b, device)).item()
                        for b in val_batches]))
                history['train'].append((step, running / max(n_run, 1)))
                history['val'].append((step, val))
                running, n_run = 0.0, 0
                log(f'step {step}: train {history["train"][-1][1]:.5f} '
                    f'val {val:.5f} ({time.time() - t0:.0f} s)')
                torch.save(model.state_dict(), outdir / 'last.pt')
                if val < best:
                    best, bad = val, 0
                    history['best_step'], history['best_val'] = step, val
                    torch.save(model.state_dict(), outdir / 'best.pt')
                else:
                    bad += 1
                bar.set_postfix(val=f'{val:.4f}', best=f'{best:.4f}')
                (outdir / 'history.json').write_text(json.dumps(history))
                if bad >= patience:
                    log(f'early stop at step {step}')
                    steps = step
                    break
    bar.close()
    history['elapsed_s'] = time.time() - t0
    (outdir / 'history.json').write_text(json.dumps(history))
    model.to('cpu')
    model.load_state_dict(torch.load(outdir / 'best.pt', map_location='cpu'))
    return history
