# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Is elliptical-vs-spiral accuracy limited by the network or by the labels?

An experiment for a GPU, outside the package: a ResNet (2.8 M weights at
``--width 32``, 6.3 M at 48, against 0.27 M for the bundled morphology
network) is trained on the Galaxy Zoo 1 galaxies of ``../shared/data/gz1``
at twice the bundled input resolution, with the bundled split (the same
training, validation and test objects, `cnnfind.training.morph_data`),
and scored on elliptical against spiral only.

* ``--prepare FILE``: cut the central 0.6 of every cutout, resample it to
  128 x 128 and store it (JPEG, quality 93) with labels and split in an
  ``.npz`` file (21 MB), small enough to travel to a GPU machine.
* ``--data FILE``: train on it (random 87.5 % crops, the eight
  rotations/flips, per-band gain and gamma, class-weighted loss, one-cycle
  AdamW, weight averaging; the epoch with the best validation accuracy is
  kept) and print the test accuracy at the probability cut that is best on
  the validation set, with and without the eight-fold test-time
  augmentation, and the best accuracy any cut reaches on the test set
  itself.

Examples
--------
::

    python benchmarks/morph_large_cnn.py --prepare runs/gz1_128.npz
    python benchmarks/morph_large_cnn.py --data runs/gz1_128.npz \\
        --size 128 --width 32 --epochs 60 --out runs/morph_r128.json
"""

import argparse
import io
import json
import sys
import time

import numpy as np


def prepare(path, data_dir=None, side=128, crop=0.6):
    """Store the central ``crop`` of every galaxy cutout at ``side`` px."""
    from PIL import Image

    from cnnfind.training.morph_data import load_gz1, split_gz1
    ids, paths, labels = load_gz1(data_dir)
    blobs = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert('RGB')
            c = int(round(im.size[0] * crop))
            o = (im.size[0] - c) // 2
            im = im.crop((o, o, o + c, o + c)).resize((side, side),
                                                      Image.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, 'JPEG', quality=93)
            blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    np.savez(path, data=np.concatenate(blobs), off=offsets, labels=labels,
             split=split_gz1(ids, seed=0), ids=ids)
    print(f'{len(blobs)} galaxies, {offsets[-1] / 1e6:.1f} MB -> {path}')


def _load(path, size):
    from PIL import Image
    z = np.load(path)
    images = []
    for i in range(len(z['labels'])):
        raw = z['data'][z['off'][i]:z['off'][i + 1]].tobytes()
        with Image.open(io.BytesIO(raw)) as im:
            im = im.convert('RGB')
            if im.size[0] != size:
                im = im.resize((size, size), Image.LANCZOS)
            images.append(np.asarray(im))
    return np.stack(images), z['labels'], z['split']


def _resnet(width):
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, n_in, n_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(n_in, n_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(n_out)
            self.conv2 = nn.Conv2d(n_out, n_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(n_out)
            self.skip = None
            if n_in != n_out or stride != 1:
                self.skip = nn.Sequential(
                    nn.Conv2d(n_in, n_out, 1, stride, bias=False),
                    nn.BatchNorm2d(n_out))

        def forward(self, x):
            h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(h + (x if self.skip is None else self.skip(x)))

    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        Block(w, w, 1), Block(w, w, 1), Block(w, 2 * w, 2),
        Block(2 * w, 2 * w, 1), Block(2 * w, 4 * w, 2),
        Block(4 * w, 4 * w, 1), Block(4 * w, 8 * w, 2),
        Block(8 * w, 8 * w, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(0.2), nn.Linear(8 * w, 2))


def _scores(p_val, p_test, y_val, y_test):
    """Test accuracy at the validation-best cut on P(spiral), and more."""
    cuts = np.linspace(0.02, 0.98, 97)
    cut = cuts[int(np.argmax([((p_val > c) == y_val).mean() for c in cuts]))]
    spiral = p_test > cut
    return {'cut': float(cut),
            'accuracy': float((spiral == y_test).mean()),
            'best_cut_on_test': float(max(((p_test > c) == y_test).mean()
                                          for c in cuts)),
            'recall_elliptical': float((~spiral[y_test == 0]).mean()),
            'recall_spiral': float(spiral[y_test == 1].mean())}


def train(args):
    import torch
    import torch.nn.functional as F

    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images, labels, split = _load(args.data, args.size)
    X = torch.tensor(images).permute(0, 3, 1, 2).float().div(255).to(dev)
    y = torch.tensor(labels).long().to(dev)
    idx = {s: np.nonzero(split == s)[0] for s in ('train', 'val', 'test')}
    side = int(round(args.size * args.crop))
    last = torch.channels_last

    net = _resnet(args.width).to(dev).to(memory_format=last)
    ema = torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.995))
    batch = 128
    steps = len(idx['train']) // batch
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, 2e-3, total_steps=args.epochs * steps)
    counts = np.bincount(labels[idx['train']])
    class_weight = torch.tensor(len(idx['train']) / (2 * counts),
                                dtype=torch.float32, device=dev)

    def dihedral(x, k):
        x = torch.rot90(x, k % 4, (2, 3))
        return torch.flip(x, (3,)) if k >= 4 else x

    def augment(xb):
        n, room = xb.shape[0], args.size - side
        ox = torch.randint(0, room + 1, (n,))
        oy = torch.randint(0, room + 1, (n,))
        out = torch.stack([xb[i, :, oy[i]:oy[i] + side, ox[i]:ox[i] + side]
                           for i in range(n)])
        out = dihedral(out, int(rng.integers(8)))
        gain = torch.exp(torch.randn(n, 3, 1, 1, device=dev) * 0.08)
        gamma = torch.exp(torch.randn(n, 1, 1, 1, device=dev) * 0.1)
        return (out.clamp(0, 1) ** gamma * gain).contiguous(memory_format=last)

    @torch.no_grad()
    def p_spiral(model, rows, tta=False):
        model.eval()
        o = (args.size - side) // 2
        out = []
        for s in range(0, len(rows), 256):
            xb = X[rows[s:s + 256]][:, :, o:o + side, o:o + side]
            ks = range(8) if tta else [0]
            with torch.autocast(dev, torch.bfloat16):
                p = sum(F.softmax(model(dihedral(xb, k).contiguous(
                    memory_format=last)).float(), 1) for k in ks) / len(ks)
            out.append(p[:, 1].cpu())
        return torch.cat(out).numpy()

    y_val, y_test = labels[idx['val']], labels[idx['test']]
    best_acc, best_state, best_epoch = -1.0, None, None
    t0 = time.time()
    for epoch in range(args.epochs):
        net.train()
        order = idx['train'][rng.permutation(len(idx['train']))]
        for s in range(steps):
            b = order[s * batch:(s + 1) * batch]
            with torch.autocast(dev, torch.bfloat16):
                loss = F.cross_entropy(net(augment(X[b])).float(), y[b],
                                       weight=class_weight,
                                       label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema.update_parameters(net)
        if epoch < args.epochs // 3:
            continue
        # The averaged weights need their own batch-norm statistics.
        torch.optim.swa_utils.update_bn(
            ((augment(X[idx['train'][k:k + batch]]),)
             for k in range(0, len(idx['train']), batch)), ema)
        p = p_spiral(ema, idx['val'])
        acc = _scores(p, p, y_val, y_val)['accuracy']
        if acc > best_acc:
            best_epoch, best_acc = epoch, acc
            best_state = {k: v.detach().clone()
                          for k, v in ema.state_dict().items()}
    ema.load_state_dict(best_state)
    result = {'args': vars(args),
              'parameters': sum(q.numel() for q in net.parameters()),
              'best_epoch': best_epoch, 'val_accuracy': best_acc,
              'seconds': time.time() - t0, 'device': dev}
    for tta in (False, True):
        result['tta' if tta else 'plain'] = _scores(
            p_spiral(ema, idx['val'], tta), p_spiral(ema, idx['test'], tta),
            y_val, y_test)
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--prepare', metavar='FILE',
                   help='write the 128-px galaxy stamps to FILE and stop')
    p.add_argument('--data-dir', default=None,
                   help='shared data folder (default: ../shared/data)')
    p.add_argument('--data', metavar='FILE', help='stamps from --prepare')
    p.add_argument('--size', type=int, default=128,
                   help='stamp side the network sees before cropping')
    p.add_argument('--crop', type=float, default=0.875)
    p.add_argument('--width', type=int, default=32)
    p.add_argument('--epochs', type=int, default=60)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=None, help='write the result as JSON')
    args = p.parse_args(argv)
    if args.prepare:
        prepare(args.prepare, args.data_dir)
    elif args.data:
        train(args)
    else:
        p.error('give --prepare FILE or --data FILE')


if __name__ == '__main__':
    main(sys.argv[1:])
