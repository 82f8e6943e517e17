"""
Train, export, calibrate and document the CNNStarFinder network.

The shipped model ``cnnfind/models/starfinder.onnx`` (and its card
``starfinder.json``) is produced by::

    python -m cnnfind.training.starfinder --out cnnfind/models

(equivalently ``cnnfind train starfinder --out cnnfind/models``).
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cnnfind.detection._input import MAX_KERNEL_RADIUS
from cnnfind.training._command import non_default_options
from cnnfind.training._device import add_device_argument, training_device
from cnnfind.training.data import (
    ASINH_SCALE,
    FWHM_REF,
    N_CHANNELS,
    load_backgrounds,
    make_patch,
)
from cnnfind.training.export import check_parity, export_onnx, write_card
from cnnfind.training.loop import PatchStream, masked_bce, train
from cnnfind.training.nets import ExportStarNet, StarNet

__all__ = ['main', 'build_parser', 'export_starnet']

MODEL_NAME = 'starfinder'
MODEL_VERSION = '1.1.0'

#: Receptive-field radius of `StarNet` in pixels.
RECEPTIVE_FIELD_RADIUS = 62


def _image_contract(n_in):
    """The card's description of the image input."""
    text = (f'float32 (N, {n_in}, H, W): asinh((data - sky) / (noise * '
            'asinh_scale)) with invalid pixels set to 0, and a validity '
            'channel (1 valid, 0 masked/NaN)')
    if n_in == 3:
        text += ('; then asinh(snr / asinh_scale), snr being the '
                 'matched-filter SNR map: (data - sky) / noise (0 at '
                 'invalid pixels) correlated with a unit-sum circular '
                 'Gaussian of the user FWHM (half-width min(4 sigma, '
                 f'{MAX_KERNEL_RADIUS}) px, zero outside the image) and '
                 'divided by the root sum of squares of that kernel')
    return text


def _halo(n_in):
    """Tile halo: the receptive field, plus the matched filter's reach."""
    reach = RECEPTIVE_FIELD_RADIUS + (MAX_KERNEL_RADIUS if n_in == 3 else 0)
    return int(-(-reach // StarNet.stride) * StarNet.stride)


def export_starnet(model, onnx_path, n_channels):
    """
    Export a `StarNet` to ONNX (dynamic batch and image size), in its
    `~cnnfind.training.nets.ExportStarNet` form, and return the largest
    absolute difference between the ONNX and the torch `StarNet` outputs.
    """
    example = (torch.randn(1, n_channels, 64, 96), torch.zeros(1, 1, 1, 1))
    export_onnx(ExportStarNet(model), example, onnx_path,
                input_names=('image', 'fwhm'), output_names=('logits',),
                dynamic_axes={'image': {0: 'batch', 2: 'height', 3: 'width'},
                              'fwhm': {0: 'batch'},
                              'logits': {0: 'batch', 2: 'height',
                                         3: 'width'}})
    return check_parity(model, onnx_path,
                        (torch.randn(2, n_channels, 128, 160),
                         torch.full((2, 1, 1, 1), 0.3)))


def _forward(model, batch):
    x, fwhm, target, weight = batch
    logits = model(x, fwhm.view(-1, 1, 1, 1))[:, 0]
    return masked_bce(logits, target, weight)


class _Example:
    """Picklable example maker (for the DataLoader worker).

    ``patch_options`` are passed to `~cnnfind.training.data.make_patch`.
    """

    def __init__(self, patch, data_dir, use_real=True, unlisted_snr=None,
                 **patch_options):
        self.patch = patch
        self.data_dir = data_dir
        self.use_real = use_real
        self.unlisted_snr = unlisted_snr
        self.patch_options = patch_options

    def setup(self):
        """The real backgrounds (none with ``use_real=False``)."""
        return (load_backgrounds(self.data_dir,
                                 unlisted_snr=self.unlisted_snr)
                if self.use_real else [])

    def __call__(self, rng, context):
        return make_patch(rng, self.patch, context or (),
                          **self.patch_options)


def build_parser():
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog='python -m cnnfind.training.starfinder',
        description='Train the CNNStarFinder network and write the ONNX '
                    'model and its card.')
    p.add_argument('--out', default='cnnfind/models',
                   help='folder for starfinder.onnx and starfinder.json')
    p.add_argument('--workdir', default='runs/starfinder',
                   help='checkpoints and logs')
    p.add_argument('--steps', type=int, default=4000)
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--patch', type=int, default=128)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--input-channels', type=int, choices=(2, 3),
                   default=N_CHANNELS,
                   help='2: image and validity (the shipped model); 3: '
                        'also a matched-filter SNR channel (an experiment: '
                        'measured no better, see the training docs)')
    p.add_argument('--channels', type=int, nargs=3, default=(16, 32, 48),
                   metavar=('C0', 'C1', 'C2'),
                   help='feature channels at the three encoder levels')
    p.add_argument('--sky-jitter', type=float, default=0.3,
                   help='error of the sky level given to the network, in '
                        'units of the noise (standard deviation)')
    p.add_argument('--noise-jitter', type=float, default=0.15,
                   help='log-normal error of the noise given to the '
                        'network (standard deviation of its log)')
    p.add_argument('--unlisted-snr', type=float, default=None,
                   help='leave out of the loss the peaks of the real '
                        'backgrounds above this significance that their '
                        'catalogues do not list (default: they are '
                        'negatives)')
    p.add_argument('--no-sharp-artefacts', action='store_true',
                   help='simulate no cosmic rays or hot pixels (an '
                        'experiment: what rejecting them costs faint stars)')
    p.add_argument('--mesh-sky', action='store_true',
                   help="subtract the finder's background mesh from each "
                        'patch (as CNNStarFinder does) instead of its '
                        'global sky')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--data-dir', default=None,
                   help='shared data folder (default: ../shared/data)')
    p.add_argument('--no-real', action='store_true',
                   help='do not use real backgrounds')
    p.add_argument('--init', default=None,
                   help='start from these weights (a .pt state dict), to '
                        'fine-tune')
    p.add_argument('--skip-training', action='store_true',
                   help='export/calibrate workdir/best.pt without training')
    p.add_argument('--calib-fields', type=int, default=48,
                   help='simulated fields used to calibrate probabilities')
    p.add_argument('--vetting-fields', type=int, default=300,
                   help='simulated fields the vetting trees are fitted on '
                        '(0: no vetting stage)')
    p.add_argument('--metric-size', type=int, default=512,
                   help='size of the scenario fields measured for the card')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--workers', type=int, default=None,
                   help='processes that simulate the training patches '
                        '(the batches are the same for any number; '
                        'default: 1 on the CPU, up to 8 on a GPU, which '
                        'one process cannot keep busy)')
    add_device_argument(p)
    p.add_argument('--no-progress', action='store_true')
    return p


def _training_command(args):
    """The command line that reproduces this run (non-default options)."""
    cmd = ['python -m cnnfind.training.starfinder --out cnnfind/models',
           f'--steps {args.steps}', f'--seed {args.seed}']
    cmd += non_default_options(args, build_parser(), (
        'batch_size', 'patch', 'lr', 'input_channels', 'channels',
        'sky_jitter', 'noise_jitter', 'unlisted_snr', 'calib_fields', 'init',
        'no_real', 'no_sharp_artefacts', 'mesh_sky', 'vetting_fields'))
    return ' '.join(cmd)


def _n_workers(workers, device):
    """
    Patch-simulating processes: as asked, else 1 on the CPU (the network
    needs the other cores) and, on a GPU, one per spare core up to 8.
    """
    if workers is not None:
        return workers
    if training_device(device).type == 'cpu':
        return 1
    return int(np.clip((os.cpu_count() or 2) - 1, 1, 8))


def main(argv=None):
    """Run the whole pipeline; returns the path of the model card."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error('--workers must be at least 1')
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = open(workdir / 'train.log', 'a')  # noqa: SIM115

    def log(msg):
        print(msg, flush=True)
        log_file.write(msg + '\n')
        log_file.flush()

    n_in = args.input_channels
    model = StarNet(channels=tuple(args.channels), in_channels=n_in)
    if args.init:
        model.load_state_dict(torch.load(args.init))
    history = None
    if not args.skip_training:
        maker = _Example(args.patch, args.data_dir, use_real=not args.no_real,
                         unlisted_snr=args.unlisted_snr, n_channels=n_in,
                         sky_jitter=args.sky_jitter,
                         noise_jitter=args.noise_jitter,
                         sharp_artefacts=not args.no_sharp_artefacts,
                         mesh_sky=args.mesh_sky)
        stream = PatchStream(maker, args.batch_size, args.seed,
                             setup=maker.setup)
        loader = torch.utils.data.DataLoader(
            stream, batch_size=None,
            num_workers=_n_workers(args.workers, args.device),
            prefetch_factor=4,
            persistent_workers=True)
        backgrounds = maker.setup()
        log(f'real backgrounds: {[b[0] for b in backgrounds]}')
        val_stream = iter(PatchStream(maker, args.batch_size,
                                      args.seed + 10_000,
                                      setup=lambda: backgrounds))
        val_batches = [next(val_stream) for _ in range(6)]
        history = train(model, loader, _forward, val_batches,
                        steps=args.steps, lr=args.lr, outdir=workdir,
                        progress=not args.no_progress, seed=args.seed,
                        device=args.device, log=log)
    else:
        model.load_state_dict(torch.load(workdir / 'best.pt'))
        hist_path = workdir / 'history.json'
        if hist_path.exists():
            history = json.loads(hist_path.read_text())

    out = Path(args.out)
    onnx_path = out / f'{MODEL_NAME}.onnx'
    parity = export_starnet(model, onnx_path, n_in)
    log(f'ONNX parity max |diff| = {parity:.2e}')

    card = {
        'name': MODEL_NAME,
        'version': MODEL_VERSION,
        'task': 'star centre heatmap for CNNStarFinder',
        'inputs': {
            'image': _image_contract(n_in),
            'fwhm': 'float32 (N, 1, 1, 1): log(fwhm / fwhm_ref)',
        },
        'outputs': {'logits': 'float32 (N, 1, H, W) centre logits'},
        'normalization': {'sky': 'sigma-clipped median',
                          'noise': 'clipped std of adjacent-pixel '
                                   'differences / sqrt(2)',
                          'asinh_scale': ASINH_SCALE,
                          'fwhm_ref': FWHM_REF},
        'size_multiple': StarNet.stride,
        # The tile halo covers the receptive field (plus the matched
        # filter's half-width), so tiled output equals a full pass.
        'halo': _halo(n_in),
        'receptive_field_radius': RECEPTIVE_FIELD_RADIUS,
        'training_command': _training_command(args),
        'training_data': (
            'On-the-fly simulated 128x128 patches: Moffat/Gaussian PSFs '
            'with FWHM 1.3-9 px, axis ratio 0.7-1, power-law SNR from 1, '
            'densities 30-8000 per Mpix, cosmic rays, hot pixels, Sersic '
            'galaxies, saturation with bleed trails, gradients, '
            'nebulosity, bad columns and NaN regions; 30 % of patches '
            'inject stars into real frames of ../shared/data/real '
            '(HorseHead, SDSS r, ISAAC, SAAO, UKIDSS K, M51, Spitzer, '
            'DSS test) with their SExtractor sources excluded from the '
            'loss. M67 and the SEP frame are held out for evaluation.'),
        'training': {'steps': args.steps, 'batch_size': args.batch_size,
                     'patch': args.patch, 'lr': args.lr, 'seed': args.seed,
                     'channels': list(args.channels),
                     'sky_jitter': args.sky_jitter,
                     'noise_jitter': args.noise_jitter,
                     'unlisted_snr': args.unlisted_snr,
                     'sharp_artefacts': not args.no_sharp_artefacts,
                     'history': history, 'torch': torch.__version__,
                     # a GPU run takes another numerical path (mixed
                     # precision): say where the weights were trained
                     'device': (None if args.skip_training
                                else training_device(args.device).type),
                     'python': platform.python_version()},
        'onnx_parity_max_abs_diff': parity,
        'created': time.strftime('%Y-%m-%d'),
    }
    from cnnfind.training.calibrate import calibrate_starfinder
    card.update(calibrate_starfinder(onnx_path, card, n_fields=args.calib_fields,
                                     seed=args.seed + 20_000,
                                     metric_size=args.metric_size, log=log))
    if args.vetting_fields:
        # The second stage: trees on the candidates' features, fitted to
        # this network's heatmap; the card's metrics are then re-measured
        # with it.
        from cnnfind.training.calibrate import scenario_metrics
        from cnnfind.training.vetting import attach_vetting, fit_vetting
        fit_vetting(onnx_path, n_fit=args.vetting_fields,
                    n_calib=max(args.vetting_fields // 3, 4),
                    seed=args.seed + 30_000,
                    training_command=card['training_command'], log=log,
                    data_dir=args.data_dir,
                    p_real=0.0 if args.no_real else 0.3)
        card = attach_vetting(card)
        write_card(onnx_path, card)
        card['metrics'] = scenario_metrics(onnx_path, seed=args.seed + 20_001,
                                           metric_size=args.metric_size,
                                           log=log)
    card_path = write_card(onnx_path, card)
    log(f'wrote {onnx_path} and {card_path}')
    log_file.close()
    return card_path


if __name__ == '__main__':
    main(sys.argv[1:])
