"""
Fine-tune the CNNStarFinder network on survey training files (torch).

The files are those written by `cnnfind.training.survey` (one FITS file
per field with ``IMAGE``, ``CATALOG``, ``TARGET`` and ``WEIGHT`` HDUs).
Training starts from the weights of an ONNX model (by default the
shipped ``starfinder.onnx``), read back into
`~cnnfind.training.nets.StarNet` with `starnet_from_onnx`, and writes a
new ONNX model with its card::

    python -m cnnfind.training.finetune SETDIR --out my_model.onnx --steps 300

The result is used like the shipped model:
``CNNStarFinder(threshold, fwhm, model='my_model.onnx')``.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cnnfind.detection._input import _network_input
from cnnfind.runtime.normalize import robust_sky_noise, valid_pixel_mask
from cnnfind.runtime.registry import load_model
from cnnfind.training._device import add_device_argument
from cnnfind.training.export import write_card
from cnnfind.training.loop import PatchStream, masked_bce, train
from cnnfind.training.nets import StarNet, unfold_stem_weight
from cnnfind.training.starfinder import export_starnet
from cnnfind.training.survey import read_field

__all__ = ['onnx_state_dict', 'starnet_from_onnx', 'FieldPatches', 'main',
           'build_parser']


def onnx_state_dict(path):
    """
    The weights of an ONNX model as a torch state dict.

    Initializers are named after the torch parameters they were
    exported from (``stem.weight``, ``enc1.0.0.bias``...), so the
    state dict can be loaded into the network class that produced the
    file.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file.

    Returns
    -------
    state : dict of str to `torch.Tensor`
    """
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(path))
    return {init.name: torch.from_numpy(numpy_helper.to_array(init).copy())
            for init in model.graph.initializer}


def starnet_from_onnx(path):
    """
    A `~cnnfind.training.nets.StarNet` with the weights of a star-finder
    ONNX model.

    The channel widths (and, where `StarNet` supports it, the number of
    input channels) are read from the weight shapes.

    Raises
    ------
    ValueError
        If the file's weights do not fit `StarNet` (a different
        architecture): then fine-tune from the torch checkpoint with
        ``python -m cnnfind.training.starfinder --init CHECKPOINT``.
    """
    state = onnx_state_dict(path)
    if 'stem.weight' in state and state['stem.weight'].shape[-1] == 6:
        # Exported with the unshuffle folded into the stem (ExportStarNet).
        state['stem.weight'] = unfold_stem_weight(state['stem.weight'])
    try:
        channels = (state['stem.weight'].shape[0],
                    state['enc1.0.0.weight'].shape[0],
                    state['enc2.0.0.weight'].shape[0])
        in_channels = state['stem.weight'].shape[1] // 4
    except KeyError as exc:
        msg = (f'{path} does not hold StarNet weights (no {exc}); it cannot '
               'be fine-tuned from ONNX')
        raise ValueError(msg) from exc
    try:
        net = StarNet(channels, in_channels=in_channels)
    except TypeError:  # a StarNet with a fixed 2-channel input
        net = StarNet(channels)
    own = net.state_dict()
    extra = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if extra or missing or wrong:
        msg = (f'the weights in {path} do not fit StarNet: missing '
               f'{missing}, unexpected {extra}, wrong shape {wrong}')
        raise ValueError(msg)
    net.load_state_dict({k: state[k] for k in own})
    return net


class FieldPatches:
    """
    Random training patches from survey training files.

    Each example is a ``patch`` x ``patch`` crop of one field (fields
    drawn in proportion to their area; fields smaller than the patch are
    zero-padded with zero weight), normalised with the whole field's
    sky and noise, with its ``TARGET`` and ``WEIGHT`` crops and the
    FWHM input from the file's ``FWHM`` keyword.

    Parameters
    ----------
    paths : list of path
        Training files.
    patch : int
        Patch side (a multiple of the network's 16).
    asinh_scale, fwhm_ref : float
        The model's input normalisation (from its card).
    n_channels : int
        Channels of the model's image input.
    """

    def __init__(self, paths, patch, *, asinh_scale, fwhm_ref, n_channels):
        if patch % StarNet.stride:
            msg = f'patch must be a multiple of {StarNet.stride}'
            raise ValueError(msg)
        self.patch = int(patch)
        self.fields = []
        for p in paths:
            f = read_field(p)
            valid = valid_pixel_mask(f['image'])
            if not valid.any():
                continue
            sky, noise = robust_sky_noise(f['image'], valid)
            fwhm = float(f['header'].get('FWHM', 3.0))
            x = _network_input(f['image'], valid, sky, noise, asinh_scale,
                               fwhm, n_channels)
            self.fields.append((x, f['target'], f['weight'],
                                np.float32(np.log(fwhm / fwhm_ref))))
        if not self.fields:
            msg = 'no usable training file'
            raise ValueError(msg)
        area = np.array([t.size for _, t, _, _ in self.fields], float)
        self.p = area / area.sum()

    def __call__(self, rng, context=None):
        x, t, w, fwhm_in = self.fields[rng.choice(len(self.fields), p=self.p)]
        s = self.patch
        ny, nx = t.shape
        y0 = int(rng.integers(0, max(ny - s, 0) + 1))
        x0 = int(rng.integers(0, max(nx - s, 0) + 1))
        cy, cx = min(s, ny), min(s, nx)
        xo = np.zeros((x.shape[0], s, s), np.float32)
        to = np.zeros((s, s), np.float32)
        wo = np.zeros((s, s), np.float32)
        xo[:, :cy, :cx] = x[:, y0:y0 + cy, x0:x0 + cx]
        to[:cy, :cx] = t[y0:y0 + cy, x0:x0 + cx]
        wo[:cy, :cx] = w[y0:y0 + cy, x0:x0 + cx]
        return xo, fwhm_in, to, wo


def _forward(model, batch):
    x, fwhm, target, weight = batch
    logits = model(x, fwhm.view(-1, 1, 1, 1))[:, 0]
    return masked_bce(logits, target, weight)


def build_parser():
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog='python -m cnnfind.training.finetune',
        description='Fine-tune the CNNStarFinder network on survey '
                    'training files and write an ONNX model and its card.')
    p.add_argument('setdir', help='folder of training files (*.fits) '
                                  'from cnnfind.training.survey')
    p.add_argument('--out', required=True, help='the new .onnx file')
    p.add_argument('--base', default='starfinder',
                   help='model to start from (bundled name or .onnx path)')
    p.add_argument('--steps', type=int, default=300)
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--patch', type=int, default=64)
    p.add_argument('--lr', type=float, default=3e-4)
    p.add_argument('--val-fraction', type=float, default=0.2,
                   help='fraction of the files held out for validation')
    p.add_argument('--eval-every', type=int, default=50)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--workdir', default=None,
                   help='checkpoints and history (default: beside --out)')
    p.add_argument('--threads', type=int, default=1)
    add_device_argument(p)
    p.add_argument('--no-progress', action='store_true')
    return p


def main(argv=None):
    """Fine-tune; returns the path of the new model's card."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(int(args.threads), 1))
    out = Path(args.out)
    if out.suffix != '.onnx':
        msg = '--out must name an .onnx file'
        raise SystemExit(msg)
    paths = sorted(Path(args.setdir).glob('*.fits'))
    if not paths:
        msg = f'no .fits training files in {args.setdir}'
        raise SystemExit(msg)
    base = load_model(args.base, 'starfinder',
                      required_keys=('normalization', 'size_multiple', 'halo'))
    norm = base.card['normalization']
    model = starnet_from_onnx(base.path)
    n_channels = model.stem.in_channels // 4
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(paths))
    n_val = int(round(args.val_fraction * len(paths))) if len(paths) > 1 else 0
    val_paths = [paths[i] for i in order[:n_val]]
    train_paths = [paths[i] for i in order[n_val:]]
    kw = {'asinh_scale': norm['asinh_scale'], 'fwhm_ref': norm['fwhm_ref'],
          'n_channels': n_channels}
    maker = FieldPatches(train_paths, args.patch, **kw)
    val_maker = FieldPatches(val_paths, args.patch, **kw) if val_paths else maker
    stream = PatchStream(maker, args.batch_size, args.seed)
    val_stream = iter(PatchStream(val_maker, args.batch_size,
                                  args.seed + 10_000))
    val_batches = [next(val_stream) for _ in range(4)]
    workdir = (Path(args.workdir) if args.workdir
               else out.parent / f'{out.stem}_work')
    with torch.no_grad():
        base_val = float(np.mean([_forward(model.eval(), b).item()
                                  for b in val_batches]))
    print(f'base model validation loss {base_val:.5f}', flush=True)
    t0 = time.time()
    history = train(model, stream, _forward, val_batches, steps=args.steps,
                    lr=args.lr, outdir=workdir,
                    eval_every=min(args.eval_every, args.steps),
                    progress=not args.no_progress, seed=args.seed,
                    device=args.device)
    elapsed = time.time() - t0

    parity = export_starnet(model, out, n_channels)
    card = {k: v for k, v in base.card.items()
            if k not in ('sha256', 'file', 'metrics', 'calibration',
                         'default_min_probability', 'training', 'created',
                         'onnx_parity_max_abs_diff', 'note', 'vetting',
                         'exported')}
    card.update({
        'name': out.stem,
        'version': f'{base.card.get("version", "0")}+finetuned',
        'task': base.card.get('task', 'star centre heatmap for CNNStarFinder')
        + ' (fine-tuned)',
        'fine_tuned_from': {'name': base.name,
                            'version': base.card.get('version'),
                            'sha256': base.card.get('sha256'),
                            'file': str(base.path.name)},
        'training_command': ('python -m cnnfind.training.finetune '
                             f'{args.setdir} --out {args.out} '
                             f'--base {args.base} --steps {args.steps} '
                             f'--seed {args.seed}'),
        'training_data': (
            f'{len(train_paths)} survey training files from {args.setdir} '
            '(cnnfind.training.survey: image, catalogue, magnitude-sized '
            f'target and weight HDUs), {len(val_paths)} more held out for '
            f'validation; {args.patch}x{args.patch} random crops. Base '
            f'model trained on: {base.card.get("training_data", "?")}'),
        'training_files': [p.name for p in train_paths],
        'validation_files': [p.name for p in val_paths],
        'training': {'steps': args.steps, 'batch_size': args.batch_size,
                     'patch': args.patch, 'lr': args.lr, 'seed': args.seed,
                     'base_validation_loss': base_val,
                     'history': history, 'elapsed_s': elapsed,
                     'torch': torch.__version__,
                     'python': platform.python_version()},
        'calibration_note': ('not calibrated: the base model\'s probability '
                             'calibration and vetting stage (fitted to its '
                             'heatmap) were dropped; CNNStarFinder uses the '
                             'raw sigmoid. python -m cnnfind.training.vetting '
                             f'--model {out} fits a vetting stage for it'),
        'onnx_parity_max_abs_diff': parity,
        'created': time.strftime('%Y-%m-%d'),
    })
    if history['best_val'] is not None and history['best_val'] >= base_val:
        note = (f'fine-tuning did not lower the validation loss of the base '
                f'model ({base_val:.5f} -> {history["best_val"]:.5f}): '
                'more or larger fields, fewer steps or a lower --lr may help')
        card['warning'] = note
        print(f'WARNING: {note}', flush=True)
    card_path = write_card(out, card)
    print(f'wrote {out} and {card_path} (validation loss {base_val:.5f} '
          f'-> {history["best_val"]:.5f})', flush=True)
    return card_path


if __name__ == '__main__':
    main(sys.argv[1:])
