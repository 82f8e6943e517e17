"""
Train, calibrate, evaluate and export the galaxy-morphology classifier.

Reproduce the bundled model with::

    python -m cnnfind.training.morphology --out cnnfind/models

which caches the training images under ``runs/morphology`` (2 minutes),
trains for the default number of epochs on the CPU, fits a temperature
on the validation set, exports ``galaxymorph.onnx`` and writes its card
with the held-out test metrics.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cnnfind.morphology._prepare import DISPLAY
from cnnfind.training._command import non_default_options
from cnnfind.training._device import (
    add_device_argument,
    autocast,
    backward_step,
    grad_scaler,
    training_device,
)
from cnnfind.training.export import check_parity, export_onnx, write_card
from cnnfind.training.morph_data import (
    CLASSES,
    STAMP_SCALE,
    STORE_CROP,
    STORE_SIZE,
    load_gz1,
    no_galaxy_stamps,
    read_jpeg,
    split_gz1,
    store_image,
)

__all__ = ['MorphNet', 'build_cache', 'train', 'export_model',
           'evaluate_onnx', 'main']

INPUT_SIZE = 64
#: Peak learning rate of the bundled recipe.
LR = 2e-3
CROP = 0.5
#: Fraction of the galaxy (and colour no-galaxy) training images shown
#: in grey, so that single-band data are in the training distribution;
#: single-band frames are always grey, so the no-galaxy colour images
#: get a lower rate and both classes end up about half grey.
GREY_P = {'galaxy': 0.5, 'no_galaxy_colour': 0.25}


class MorphNet(nn.Module):
    """
    A small VGG-style classifier: four conv stages (24, 48, 96, 128
    channels) with batch norm, global average pooling and dropout.
    Input ``(N, 3, 64, 64)`` display values in [0, 1]; output logits.
    """

    def __init__(self, n_classes=3, widths=(24, 48, 96, 128), dropout=0.3):
        super().__init__()
        layers, cin = [], 3
        for k, w in enumerate(widths):
            n_conv = 1 if k == len(widths) - 1 else 2
            for _ in range(n_conv):
                layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False),
                           nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                cin = w
            if k < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, n_classes)

    def forward(self, x):
        x = self.features((x - 0.1) / 0.2)
        x = x.mean(dim=(2, 3))
        return self.head(self.dropout(x))


class _Probabilities(nn.Module):
    """
    The exported graph: softmax of the logits plus class offsets,
    divided by a temperature.
    """

    def __init__(self, net, temperature, offsets=None):
        super().__init__()
        self.net = net
        self.register_buffer('t', torch.tensor(float(temperature)))
        offsets = torch.zeros(len(CLASSES)) if offsets is None else \
            torch.as_tensor(offsets, dtype=torch.float32)
        self.register_buffer('offsets', offsets)

    def forward(self, x):
        return torch.softmax((self.net(x) + self.offsets) / self.t, dim=1)


def build_cache(cache_dir, *, data_dir=None, seed=0, limit=None):
    """
    Stored training images: ``(images uint8 (N, S, S, 3), labels,
    is_grey, split)`` for GZ1 galaxies and no-galaxy stamps, cached in
    ``cache_dir`` (one file per seed, limit and ``STAMP_SCALE``). The
    test galaxies are not stored: they are evaluated end to end from their
    JPEG files.
    """
    cache = Path(cache_dir) / (f'cache_seed{seed}_limit{limit}_'
                               f'scale{STAMP_SCALE}.npz')
    if cache.exists():
        z = np.load(cache)
        return z['images'], z['labels'], z['grey'], z['split']
    ids, paths, labels = load_gz1(data_dir)
    split = split_gz1(ids, seed=seed)
    keep = split != 'test'
    if limit is not None:
        keep &= np.cumsum(keep) <= limit
    images, labs, grey, roles = [], [], [], []
    for path, lab, role in zip(np.array(paths, object)[keep], labels[keep],
                               split[keep], strict=True):
        disp = read_jpeg(path).astype(np.float32) / 255.0
        images.append(store_image(disp))
        labs.append(lab)
        grey.append(False)
        roles.append(role)
    for role in ('train', 'val'):
        stamps = no_galaxy_stamps(role, data_dir=data_dir, seed=seed)
        if limit is not None:
            stamps = stamps[:max(limit // 4, 8)]
        for s in stamps:
            images.append(np.repeat(s, 3, axis=-1) if s.shape[-1] == 1 else s)
            labs.append(2)
            grey.append(s.shape[-1] == 1)
            roles.append(role)
    out = (np.stack(images), np.array(labs), np.array(grey),
           np.array(roles))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, images=out[0], labels=out[1], grey=out[2], split=out[3])
    return out


def _central_window():
    """Pixel width of the network's crop inside a stored image."""
    return STORE_SIZE * CROP / STORE_CROP


def _augment(batch, labels, grey, gen, size=INPUT_SIZE):
    """
    Random framing (scale 0.85-1.15, shift), dihedral transform, grey
    conversion, gain and gamma of a uint8 ``(B, S, S, 3)`` batch.
    """
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    b = x.shape[0]
    scale = torch.exp(torch.empty(b).uniform_(-0.15, 0.15, generator=gen))
    width = _central_window() * scale
    half = STORE_SIZE / 2
    max_shift = (STORE_SIZE - width) / 2
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * torch.clamp(
        max_shift, max=0.06 * _central_window())[:, None]
    # Affine grid: output [-1, 1] -> input window.
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = width / STORE_SIZE
    theta[:, 1, 1] = width / STORE_SIZE
    theta[:, :, 2] = shift / half
    # Anti-alias before sampling a window wider than the output.
    sigma = 0.5 * max(float(width.max()) / size - 1.0, 0.0)
    if sigma > 0.2:
        k = torch.arange(-2, 3, dtype=torch.float32)
        w = torch.exp(-0.5 * (k / sigma) ** 2)
        w = (w / w.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
        x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode='replicate'), w, groups=3)
        x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode='replicate'),
                     w.transpose(2, 3), groups=3)
    grid = F.affine_grid(theta, (b, 3, size, size),
                         align_corners=False)
    x = F.grid_sample(x, grid, mode='bilinear', padding_mode='border',
                      align_corners=False)
    k = int(torch.randint(4, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(2, 3))
    if torch.rand(1, generator=gen) < 0.5:
        x = torch.flip(x, dims=(3,))
    p = torch.where(torch.as_tensor(labels) == 2,
                    GREY_P['no_galaxy_colour'], GREY_P['galaxy'])
    to_grey = (torch.rand(b, generator=gen) < p) & ~torch.as_tensor(grey)
    lum = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    x = torch.where(to_grey[:, None, None, None], lum, x)
    gain = torch.exp(torch.randn(b, 1, 1, 1, generator=gen) * 0.15)
    band = torch.exp(torch.randn(b, 3, 1, 1, generator=gen) * 0.05)
    band = torch.where(to_grey[:, None, None, None] | torch.as_tensor(
        grey)[:, None, None, None], torch.ones_like(band), band)
    gamma = torch.exp(torch.randn(b, 1, 1, 1, generator=gen) * 0.15)
    x = torch.clamp(x * gain * band, 0, 1) ** gamma
    return x


def _centre(batch, size=INPUT_SIZE):
    """The network's central view of stored images (no augmentation)."""
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    w = _central_window()
    theta = torch.zeros(len(batch), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = w / STORE_SIZE
    grid = F.affine_grid(theta, (len(batch), 3, size, size),
                         align_corners=False)
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='border',
                         align_corners=False)


def _logits(net, images, batch=256, size=INPUT_SIZE):
    """Float32 CPU logits of stored images, on the network's device."""
    net.eval()
    device = next(net.parameters()).device
    with torch.no_grad(), autocast(device):
        return torch.cat([net(_centre(images[s:s + batch], size).to(
            device, memory_format=torch.channels_last)).float().cpu()
                          for s in range(0, len(images), batch)])


def _fit_calibration(logits, labels):
    """
    Temperature and spiral-logit offset minimising the validation NLL
    (grid search).

    Training samples the classes evenly, so the raw probabilities assume
    equal priors; the offset restores the elliptical:spiral ratio of the
    Galaxy Zoo sample (the validation set has it), and the temperature
    calibrates the confidence.
    """
    y = torch.as_tensor(labels)
    ts = np.exp(np.linspace(np.log(0.3), np.log(5), 60))
    bs = np.linspace(-2.0, 2.0, 41)
    best = (np.inf, 1.0, 0.0)
    for b in bs:
        shifted = logits + torch.tensor([0.0, float(b), 0.0])
        for t in ts:
            nll = float(F.cross_entropy(shifted / t, y))
            if nll < best[0]:
                best = (nll, float(t), float(b))
    return best[1], [0.0, best[2], 0.0]


def _ema_update(ema, net, decay):
    """Move the averaged weights (and batch-norm statistics) toward ``net``."""
    with torch.no_grad():
        for key, value in net.state_dict().items():
            if value.dtype.is_floating_point:
                ema[key].mul_(decay).add_(value, alpha=1.0 - decay)
            else:
                ema[key].copy_(value)


def train(images, labels, grey, split, *, epochs=30, batch_size=64, lr=LR,
          seed=0, input_size=INPUT_SIZE, ema_decay=0.995, device='cpu',
          log=print):
    """
    Train `MorphNet` with class-balanced sampling and an exponential
    moving average of the weights (``ema_decay``, 0 to switch it off);
    keep the epoch whose averaged weights give the best validation
    balanced accuracy. While the learning rate is high the averaged
    weights and batch-norm statistics disagree and can score poorly;
    they settle as the one-cycle schedule anneals. ``device`` is
    ``'cpu'``, ``'cuda'`` or ``'auto'``; on a GPU the forward passes run
    in mixed precision. The returned network is on the CPU.

    Returns
    -------
    net, (temperature, offsets), history
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    tr = np.nonzero(split == 'train')[0]
    va = np.nonzero(split == 'val')[0]
    # Smoke runs (--limit) may have fewer training images than a batch.
    batch_size = max(1, min(batch_size, len(tr)))
    counts = np.bincount(labels[tr], minlength=len(CLASSES))
    weights = torch.as_tensor(1.0 / counts[labels[tr]], dtype=torch.double)
    sampler = torch.utils.data.WeightedRandomSampler(
        weights, num_samples=len(tr), replacement=True, generator=gen)
    # channels_last: 0.48 s instead of 0.62 s per batch of 64 on 2 CPU cores.
    device = training_device(device)
    net = MorphNet(len(CLASSES)).to(device, memory_format=torch.channels_last)
    averaged = MorphNet(len(CLASSES)).to(device,
                                         memory_format=torch.channels_last)
    ema = {k: v.clone() for k, v in net.state_dict().items()}
    scaler = grad_scaler(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(tr) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr,
                                                total_steps=max(steps, 1))
    best, best_state, history = -1.0, None, []
    for epoch in range(epochs):
        net.train()
        order = tr[np.fromiter(sampler, int)]
        t0, losses = time.time(), []
        for s in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[s:s + batch_size]
            x = _augment(images[idx], labels[idx], grey[idx], gen,
                         input_size).to(device,
                                        memory_format=torch.channels_last)
            with autocast(device):
                loss = F.cross_entropy(
                    net(x), torch.as_tensor(labels[idx], device=device),
                    label_smoothing=0.05)
            opt.zero_grad()
            backward_step(loss, opt, scaler)
            sched.step()
            _ema_update(ema, net, ema_decay)
            losses.append(loss.item())
        averaged.load_state_dict(ema)
        pred = _logits(averaged, images[va], size=input_size).argmax(1)
        pred = pred.numpy()
        recall = [np.mean(pred[labels[va] == c] == c)
                  for c in range(len(CLASSES))]
        bacc = float(np.mean(recall))
        history.append([epoch + 1, float(np.mean(losses)), bacc])
        log(f'epoch {epoch + 1}/{epochs} loss {np.mean(losses):.4f} '
            f'val balanced acc {bacc:.4f} recalls '
            f'{np.round(recall, 3).tolist()} ({time.time() - t0:.0f} s)')
        if bacc >= best:
            best = bacc
            best_state = {k: v.clone() for k, v in ema.items()}
    net.load_state_dict(best_state)
    net = net.to('cpu', memory_format=torch.contiguous_format)
    temperature, offsets = _fit_calibration(
        _logits(net, images[va], size=input_size), labels[va])
    log(f'best val balanced acc {best:.4f}, temperature {temperature:.3f}, '
        f'offsets {offsets}')
    return net, (temperature, offsets), history


def export_model(net, calibration, onnx_path, card):
    """
    Export ``net`` with its calibrated softmax (``calibration`` =
    ``(temperature, offsets)``) to ONNX, check torch/onnxruntime parity
    and write ``card`` beside it.

    Returns the maximum absolute parity difference.
    """
    wrapped = _Probabilities(net, *calibration).eval()
    size = int(card['input_size'])
    example = torch.rand(3, 3, size, size,
                         generator=torch.Generator().manual_seed(0))
    export_onnx(wrapped, [example], onnx_path, input_names=['image'],
                output_names=['probabilities'],
                dynamic_axes={'image': {0: 'n'}, 'probabilities': {0: 'n'}})
    parity = check_parity(wrapped, onnx_path, [example], atol=1e-5)
    write_card(onnx_path, card)
    return parity


def _card(args, history, calibration, n_params, counts):
    return {
        'name': 'galaxymorph',
        'version': '1.1.0',
        'task': 'galaxy morphology: elliptical / spiral / no galaxy',
        'classes': list(CLASSES),
        'inputs': {'image': f'float32 (N, 3, {args.input_size}, '
                            f'{args.input_size}) display values in '
                            '[0, 1]: the central half of a Galaxy-Zoo-'
                            'framed cutout, resampled; single-band '
                            'data repeated over the 3 channels'},
        'outputs': {'probabilities': 'float32 (N, 3) calibrated softmax '
                                     '(logit offsets for the GZ1 '
                                     'elliptical:spiral prior, then a '
                                     'temperature; both fitted on the '
                                     'validation set), in the order of '
                                     'classes'},
        'input_size': args.input_size,
        'crop': CROP,
        'stamp_scale': STAMP_SCALE,
        'display_stretch': DISPLAY,
        'bands': 'one model for both: SDSS-like gri colour composites '
                 '(RGB) and single-band data (grey); '
                 f'{GREY_P["galaxy"]:.0%} of training galaxies shown in '
                 'grey',
        'training_command': (
            'python -m cnnfind.training.morphology --out cnnfind/models '
            f'--epochs {args.epochs} --input-size {args.input_size} '
            f'--ema-decay {args.ema_decay} --seed {args.seed}'
            + ''.join(' ' + o for o in non_default_options(
                args, build_parser(), ('lr',)))),
        'training_data': (
            'Galaxy Zoo 1 SDSS colour cutouts of ../shared/data/gz1 '
            '(class 0 elliptical, 1-3 spiral; 4 and 5 dropped), split by '
            'object 75/10/15 % train/validation/test (seeded); no-galaxy '
            'stamps (stars from SExtractor CLASS_STAR >= 0.8, SNR >= 20, '
            'and empty sky) from the NGC 6976 SDSS colour JPEG and its '
            'g, r frames (left two thirds train, right third split '
            'validation/test), and single-band HorseHead, ISAAC, SAAO, '
            'UKIDSS K, Spitzer and DSS frames (train); the M67 plate '
            'and the SEP frame are test only. Train counts per class: '
            f'{dict(zip(CLASSES, counts, strict=True))}'),
        'training': {'epochs': args.epochs, 'batch_size': 64,
                     'ema_decay': args.ema_decay,
                     'lr': args.lr, 'seed': args.seed,
                     'temperature': calibration[0],
                     'logit_offsets': calibration[1],
                     'parameters': n_params,
                     'device': training_device(args.device).type,
                     'history [epoch, loss, val balanced acc]': history},
    }


def evaluate_onnx(onnx_path, *, data_dir=None, seed=0, limit=None):
    """
    End-to-end metrics of an exported model on the held-out test set,
    through `~cnnfind.GalaxyMorphClassifier`: GZ1 test cutouts as the
    JPEG files (colour and grey), no-galaxy test stamps framed as in
    field mode.
    """
    from cnnfind.evaluation.classification import classification_metrics
    from cnnfind.morphology import GalaxyMorphClassifier
    from cnnfind.morphology._prepare import to_network_input

    clf = GalaxyMorphClassifier(onnx_path, device='cpu')
    ids, paths, labels = load_gz1(data_dir)
    test = split_gz1(ids, seed=seed) == 'test'
    tpaths = np.array(paths, object)[test][:limit]
    tlabels = labels[test][:limit]
    cut = np.stack([read_jpeg(p) for p in tpaths])
    p_col = np.column_stack([clf(cut)[f'p_{c}'] for c in CLASSES])
    grey = cut.mean(axis=-1).round().astype(np.uint8)
    p_grey = np.column_stack([clf(grey)[f'p_{c}'] for c in CLASSES])
    stamps = no_galaxy_stamps('test', data_dir=data_dir, seed=seed,
                              full=True)[:limit]
    x = np.stack([to_network_input(s, crop=clf._crop, size=clf._size)[0]
                  for s in stamps])
    p_ng = clf._predict(x).astype(float)
    y3 = np.concatenate([tlabels, np.full(len(p_ng), 2)])
    return {
        'test_counts': {c: int(n) for c, n in zip(
            CLASSES, np.bincount(y3, minlength=3), strict=True)},
        'colour': classification_metrics(np.vstack([p_col, p_ng]), y3,
                                         CLASSES),
        'grey': classification_metrics(np.vstack([p_grey, p_ng]), y3,
                                       CLASSES),
    }


def build_parser():
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog='python -m cnnfind.training.morphology',
        description='Train and export the galaxy-morphology classifier.')
    parser.add_argument('--out', default='cnnfind/models',
                        help='folder for galaxymorph.onnx and its card')
    parser.add_argument('--workdir', default='runs/morphology')
    parser.add_argument('--epochs', type=int, default=30)
    parser.add_argument('--lr', type=float, default=LR)
    parser.add_argument('--input-size', type=int, default=INPUT_SIZE,
                        help='side of the network input in pixels')
    parser.add_argument('--ema-decay', type=float, default=0.995,
                        help='weight averaging per step (0: off)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2)
    add_device_argument(parser)
    parser.add_argument('--limit', type=int, default=None,
                        help='use only this many galaxies (smoke tests)')
    parser.add_argument('--data-dir', default=None)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    t0 = time.time()
    images, labels, grey, split = build_cache(
        work, data_dir=args.data_dir, seed=args.seed, limit=args.limit)
    print(f'cache: {len(images)} images in {time.time() - t0:.0f} s',
          flush=True)
    net, calibration, history = train(
        images, labels, grey, split, epochs=args.epochs, lr=args.lr,
        seed=args.seed, input_size=args.input_size,
        ema_decay=args.ema_decay, device=args.device,
        log=lambda m: print(m, flush=True))
    onnx_path = Path(args.out) / 'galaxymorph.onnx'
    counts = np.bincount(labels[split == 'train'], minlength=3).tolist()
    card = _card(args, history, calibration,
                 sum(p.numel() for p in net.parameters()), counts)
    card['onnx_parity_max_abs_diff'] = export_model(net, calibration,
                                                    onnx_path, card)
    metrics = evaluate_onnx(onnx_path, data_dir=args.data_dir,
                            seed=args.seed, limit=args.limit)
    card['metrics'] = metrics
    card['training']['wall_time_s'] = round(time.time() - t0)
    write_card(onnx_path, card)
    print(json.dumps(metrics, indent=1), flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
