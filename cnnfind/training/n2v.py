"""
Noise2Void training: learn to denoise from the noisy images themselves.

Blind-spot training (Krull et al. 2019) with the N2V2 changes (Höck et
al. 2022): on a regular grid of hidden pixels (one in ``GRID**2``, at a
random offset) each pixel is replaced by the median of its 5x5
neighbourhood and flagged invalid, the network predicts the mean and
variance of every hidden pixel from its neighbours, and the loss (a
Gaussian negative log-likelihood) is computed on the hidden pixels only.
The network (`~cnnfind.training.n2v_net.N2VNet`) has no full-resolution
skip connection and down-samples by blur-pooling.

The shipped generic model ``cnnfind/models/n2v.onnx`` (and its card
``n2v.json``) is produced by::

    python -m cnnfind.training.n2v --generic --out cnnfind/models \
        --steps 9000 --seed 0 --channels 48 64 96 --n-sim 1600

and a model for your own frames by::

    python -m cnnfind.training.n2v frame1.fits frame2.fits --out my_n2v.onnx

(equivalently ``cnnfind train n2v ...``).
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cnnfind.denoise._prepare import (
    ASINH_SCALE,
    GRID,
    grid_mask,
    median_fill,
    saturated_mask,
    to_net_space,
)
from cnnfind.runtime.normalize import robust_sky_noise, valid_pixel_mask
from cnnfind.training._command import non_default_options
from cnnfind.training._device import add_device_argument, training_device
from cnnfind.training.export import check_parity, export_onnx, write_card
from cnnfind.training.loop import train
from cnnfind.training.n2v_net import N2VNet

__all__ = ['train_n2v', 'main', 'build_parser']

MODEL_NAME = 'n2v'
MODEL_VERSION = '1.1.0'

#: Real frames of ../shared/data/real used to train the generic model.
#: The M67 plate and the SEP frame are held out for evaluation.
GENERIC_REAL_FRAMES = (
    'astropy-data/tutorials_FITS-images_HorseHead.fits',
    'astropy-data/visualization_reprojected_sdss_r.fits.bz2',
    'debian-eso-midas-testdata/ISAAC.2006-04-13T06_32_38.944.fits',
    'pypi-package-testdata/ccdproc_a8280271_saao1m_raw.fits',
    'pypi-package-testdata/astroquery_ukidss_wfcam_K_taurus.fits',
    'photutils-datasets/isophote_M51.fits',
    'astropy-data/photometry_spitzer_example_image.fits',
    'debian-eso-midas-testdata/dss_test1.fits',
)

#: Receptive-field radius of `N2VNet` (pixels), measured by
#: `_receptive_field_radius`, and the tiling halo that covers it.
HALO = 32


def _as_array(image):
    """A 2-D float32 array from a FITS path or an array-like."""
    if isinstance(image, (str, Path)):
        from cnnfind.cli import read_image
        data, mask = read_image(image)[:2]
        data = np.array(data, np.float32)
        if mask is not None:
            data[np.asarray(mask, bool)] = np.nan
        return data
    data = np.array(getattr(image, 'data', image), dtype=np.float32)
    mask = getattr(image, 'mask', None)
    if mask is not None and np.shape(mask) == data.shape:
        data[np.asarray(mask, bool)] = np.nan
    return data


def normalise_frame(image, mask=None, saturation=None):
    """
    A frame in the network's space: ``z`` (invalid pixels 0) and the
    validity map, exactly as `~cnnfind.denoise.N2VDenoiser` prepares it.
    """
    data = np.asarray(image, np.float32)
    if data.ndim != 2:
        msg = f'training images must be 2-D, not {data.ndim}-D'
        raise ValueError(msg)
    valid = valid_pixel_mask(data, mask)
    sky, noise = robust_sky_noise(data, valid)
    valid &= ~saturated_mask(data, valid, sky, noise, saturation)
    z = to_net_space((np.where(valid, data, sky) - sky) / noise)
    z[~valid] = 0.0
    return z, valid


def _simulated_frames(n, size, seed, log=print):
    """``n`` simulated fields spanning skies, PSFs, densities, artefacts."""
    from cnnfind.simulation import simulate_field
    from cnnfind.training.data import _random_config
    rng = np.random.default_rng(seed)
    frames = []
    while len(frames) < n:
        cfg = _random_config(rng, size)
        # More bright stars, galaxies and nebulosity than the finder's
        # recipe: the denoiser must keep their flux.
        if rng.random() < 0.5:
            cfg.n_galaxies = int(rng.poisson(rng.uniform(100, 1500)
                                             * size * size / 1e6))
        if rng.random() < 0.3:
            cfg.nebula = float(rng.uniform(3, 300))
        cfg.snr_max = float(10 ** rng.uniform(2.0, 4.0))
        sim = simulate_field((size, size), cfg, seed=rng)
        img = sim['image']
        if rng.random() < 0.1:  # mildly correlated noise (resampling)
            from scipy import ndimage
            img = ndimage.gaussian_filter(img, rng.uniform(0.3, 0.6))
        try:
            frames.append(normalise_frame(img, sim['mask'], cfg.saturation))
        except ValueError:
            continue
    log(f'{n} simulated {size}x{size} fields')
    return frames


def _real_frames(data_dir=None, log=print):
    """The generic model's real frames (empty if the data are absent)."""
    from cnnfind.training.data import default_data_dir
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    frames = []
    if data_dir is None:
        return frames
    for rel in GENERIC_REAL_FRAMES:
        path = data_dir / 'real' / rel
        if path.exists():
            frames.append(normalise_frame(_as_array(path)))
            log(f'real frame {rel} {frames[-1][0].shape}')
    return frames


def make_batch(frames, rng, batch_size, patch, p_frames=None):
    """
    One training batch of blind-spot patches.

    Returns
    -------
    x : float32 (B, 2, P, P)
        Net-space image with the hidden pixels median-filled, and the
        validity channel (0 for invalid and hidden pixels).
    target : float32 (B, P, P)
        The original net-space image.
    weight : float32 (B, P, P)
        1 on the hidden valid pixels (where the loss is computed), else 0.
    """
    xs = np.zeros((batch_size, 2, patch, patch), np.float32)
    ys = np.zeros((batch_size, patch, patch), np.float32)
    ws = np.zeros((batch_size, patch, patch), np.float32)
    for b in range(batch_size):
        for _ in range(20):
            k = rng.choice(len(frames), p=p_frames)
            z, valid = frames[k]
            ny, nx = z.shape
            if ny < patch or nx < patch:
                continue
            y0 = rng.integers(0, ny - patch + 1)
            x0 = rng.integers(0, nx - patch + 1)
            zc = z[y0:y0 + patch, x0:x0 + patch].copy()
            vc = valid[y0:y0 + patch, x0:x0 + patch].copy()
            if vc.mean() > 0.5:
                break
        if rng.random() < 0.15:  # masked regions (NaN, bad columns)
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.integers(0, patch, 2)
                h, w = rng.integers(1, 16, 2)
                vc[cy:cy + h, cx:cx + w] = False
            zc[~vc] = 0.0
        blind = grid_mask(zc.shape, rng.integers(GRID), rng.integers(GRID))
        zin = zc.copy()
        zin[blind] = median_fill(zc)[blind]
        xs[b, 0] = zin
        xs[b, 1] = vc & ~blind
        ys[b] = zc
        ws[b] = blind & vc
    return xs, ys, ws


def _batches(frames, seed, batch_size, patch, p_frames):
    k = 0
    while True:
        rng = np.random.default_rng((seed, k))
        yield tuple(torch.from_numpy(a) for a in
                    make_batch(frames, rng, batch_size, patch, p_frames))
        k += 1


def nll_loss(model, batch):
    """Gaussian negative log-likelihood on the hidden pixels."""
    x, target, weight = batch
    out = model(x)
    mean, logv = out[:, 0], out[:, 1].clamp(-9.0, 12.0)
    nll = 0.5 * (logv + (target - mean) ** 2 * torch.exp(-logv))
    return (nll * weight).sum() / weight.sum().clamp_min(1.0)


def _receptive_field_radius(model, size=160):
    """Largest distance at which an input pixel changes an output pixel."""
    model = model.eval()
    x = torch.zeros(1, 2, size, size, requires_grad=True)
    out = model(x)
    out[0, :, size // 2, size // 2].sum().backward()
    g = x.grad.abs().sum(dim=(0, 1)) > 0
    iy, ix = torch.nonzero(g, as_tuple=True)
    return int(max((iy - size // 2).abs().max(), (ix - size // 2).abs().max()))


def _export(model, onnx_path, log):
    export_onnx(model, (torch.randn(1, 2, 64, 96),), onnx_path,
                input_names=('image',), output_names=('prediction',),
                dynamic_axes={'image': {0: 'batch', 2: 'height', 3: 'width'},
                              'prediction': {0: 'batch', 2: 'height',
                                             3: 'width'}})
    x = torch.randn(2, 2, 96, 128) * 3
    x[:, 1] = (torch.rand(2, 96, 128) > 0.1).float()
    parity = check_parity(model, onnx_path, (x,))
    log(f'ONNX parity max |diff| = {parity:.2e}')
    return parity


def _base_card(args, history, parity, rf, training_data, command):
    return {
        'name': Path(args.out).stem if str(args.out).endswith('.onnx')
        else MODEL_NAME,
        'version': MODEL_VERSION,
        'task': 'Noise2Void blind-spot denoiser for N2VDenoiser',
        'inputs': {
            'image': 'float32 (N, 2, H, W), H and W multiples of 4: '
                     'z = a*asinh((data - sky) / (noise * a)) with invalid '
                     'and hidden (blind-spot) pixels flagged 0 in the '
                     'validity channel; invalid pixels hold 0, hidden '
                     'pixels the median of their 5x5 neighbourhood',
        },
        'outputs': {'prediction': 'float32 (N, 2, H, W): mean and log '
                                  'variance of each hidden pixel in z'},
        'normalization': {'sky': 'sigma-clipped median',
                          'noise': 'clipped std of lag-3 pixel '
                                   'differences / sqrt(2)',
                          'transform': 'asinh',
                          'asinh_scale': ASINH_SCALE},
        'blind_spot_grid': GRID,
        'size_multiple': N2VNet.stride,
        'receptive_field_radius': rf,
        'halo': HALO,
        'training_command': command,
        'training_data': training_data,
        'training': {'steps': args.steps, 'batch_size': args.batch_size,
                     'patch': args.patch, 'lr': args.lr, 'seed': args.seed,
                     'channels': list(args.channels),
                     'history': history, 'torch': torch.__version__,
                     'python': platform.python_version(),
                     'device': training_device(args.device).type},
        'onnx_parity_max_abs_diff': parity,
        'created': time.strftime('%Y-%m-%d'),
    }


def _options(args, *extra):
    """The non-default training options, for the recorded command."""
    return ''.join(' ' + o for o in non_default_options(
        args, build_parser(), ('batch_size', 'patch', 'lr') + extra))


def _fit(frames, p_frames, args, workdir, log):
    """Train an `N2VNet` on ``frames``; returns (model, history)."""
    torch.manual_seed(args.seed)
    model = N2VNet(channels=tuple(args.channels))
    if args.skip_training:
        model.load_state_dict(torch.load(workdir / 'best.pt'))
        hist = workdir / 'history.json'
        return model, (json.loads(hist.read_text()) if hist.exists()
                       else None)
    val_rng = np.random.default_rng((args.seed, 10_000))
    val = [tuple(torch.from_numpy(a) for a in
                 make_batch(frames, val_rng, args.batch_size, args.patch,
                            p_frames)) for _ in range(8)]
    history = train(model, _batches(frames, args.seed, args.batch_size,
                                    args.patch, p_frames),
                    nll_loss, val, steps=args.steps, lr=args.lr,
                    outdir=workdir, eval_every=max(min(250, args.steps // 4),
                                                   1),
                    patience=6, reuse=2, progress=not args.no_progress,
                    seed=args.seed, device=args.device, log=log)
    return model, history


def train_n2v(images, out, *, masks=None, saturation=None, steps=1500,
              batch_size=16, patch=64, lr=2e-3, seed=0, workdir=None,
              threads=1, progress=False, device='auto', log=None,
              channels=(24, 32, 48)):
    """
    Train a Noise2Void denoiser on your own noisy frames.

    No clean images are needed: the network learns to predict every
    pixel from its neighbours on the frames themselves.

    Parameters
    ----------
    images : list of str, path-like or 2D array-like
        FITS files (the first HDU with 2-D data) or arrays.
    out : str or path-like
        The ``.onnx`` file to write; its card is written beside it.
    masks : list of 2D bool arrays or `None`, optional
        Bad-pixel masks (`True` = bad) for the array inputs.
    saturation : float or `None`, optional
        Saturation level; pixels at or above it are not learned from.
    steps, batch_size, patch, lr, seed : int or float
        Training length, batch size, patch size (a multiple of 4),
        learning rate and seed.
    workdir : path-like, optional
        Checkpoints and log (default: a folder beside ``out``).
    threads : int
        Torch CPU threads.
    progress : bool
        Show a progress bar.
    device : {'auto', 'cpu', 'cuda'}
        Where the training and the returned denoiser run.
    log : callable, optional
        Receives progress messages (default: silent).
    channels : tuple of 3 int
        Feature channels at the network's three levels. Wider networks
        denoise better and train and run slower.

    Returns
    -------
    denoiser : `~cnnfind.denoise.N2VDenoiser`
        A denoiser that uses the new model.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.training.n2v import train_n2v
    >>> rng = np.random.default_rng(0)
    >>> frame = rng.normal(100.0, 5.0, (96, 96)).astype('float32')
    >>> den = train_n2v([frame], 'tmp_n2v/own.onnx', steps=4, patch=32,
    ...                 batch_size=2)  # doctest: +SKIP
    """
    out = Path(out)
    if out.suffix != '.onnx':
        out = out / f'{MODEL_NAME}.onnx'
    argv = ['--out', str(out), '--steps', str(steps), '--batch-size',
            str(batch_size), '--patch', str(patch), '--lr', str(lr),
            '--seed', str(seed), '--threads', str(threads),
            '--device', str(device), '--channels',
            *(str(int(c)) for c in channels)]
    if workdir is not None:
        argv += ['--workdir', str(workdir)]
    if not progress:
        argv.append('--no-progress')
    if saturation is not None:
        argv += ['--saturation', str(saturation)]
    arrays = [_as_array(im) for im in images]
    if masks is not None:
        for a, m in zip(arrays, masks, strict=True):
            if m is not None:
                a[np.asarray(m, bool)] = np.nan
    card_path = _run(build_parser().parse_args(argv), arrays,
                     log=log or (lambda msg: None))
    from cnnfind.denoise.denoiser import N2VDenoiser
    return N2VDenoiser(card_path.with_suffix('.onnx'), device=device)


def build_parser():
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog='python -m cnnfind.training.n2v',
        description='Train a Noise2Void denoiser (no clean images needed) '
                    'and write the ONNX model and its card. Give FITS '
                    'images to train on them, or --generic for the '
                    'bundled generic model.')
    p.add_argument('images', nargs='*', metavar='IMAGE',
                   help='FITS images to train on')
    p.add_argument('--generic', action='store_true',
                   help='train the generic model on simulated fields and '
                        'the real frames of the shared data')
    p.add_argument('--out', default=None,
                   help='output .onnx file, or a folder for n2v.onnx '
                        '(default: cnnfind/models with --generic)')
    p.add_argument('--workdir', default=None,
                   help='checkpoints and logs (default: runs/n2v or '
                        'beside --out)')
    p.add_argument('--steps', type=int, default=None,
                   help='optimiser steps (default 3000 generic, 1500 own)')
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--patch', type=int, default=64)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--channels', type=int, nargs=3, default=[24, 32, 48],
                   metavar='C',
                   help='feature channels at the three levels of the '
                        'network (default: 24 32 48)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--saturation', type=float, default=None,
                   help='saturation level of the images (default: '
                        'plateaus at the image maximum)')
    p.add_argument('--n-sim', type=int, default=400,
                   help='simulated fields for --generic')
    p.add_argument('--data-dir', default=None,
                   help='shared data folder (default: ../shared/data)')
    p.add_argument('--skip-training', action='store_true',
                   help='export workdir/best.pt without training')
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads (default: 1)')
    add_device_argument(p)
    p.add_argument('--no-progress', action='store_true')
    return p


def _run(args, arrays, log):
    torch.set_num_threads(max(int(args.threads), 1))
    if args.steps is None:
        args.steps = 3000 if args.generic else 1500
    if args.patch % N2VNet.stride:
        msg = f'--patch must be a multiple of {N2VNet.stride}'
        raise ValueError(msg)
    if min(args.channels) < 1:
        msg = f'--channels must be positive, not {args.channels}'
        raise ValueError(msg)
    if args.out is None:
        if not args.generic:
            msg = 'give --out (an .onnx file or a folder)'
            raise ValueError(msg)
        args.out = 'cnnfind/models'
    out = Path(args.out)
    onnx_path = out if out.suffix == '.onnx' else out / f'{MODEL_NAME}.onnx'
    if args.workdir is None:
        args.workdir = ('runs/n2v' if args.generic
                        else str(onnx_path.with_suffix('')) + '_work')
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    frames, p_frames = [], None
    if args.generic:
        real = _real_frames(args.data_dir, log=log)
        sim = _simulated_frames(args.n_sim, 128, args.seed + 1, log=log)
        frames = sim + real
        # 40 % of patches from real frames (by area), 60 % simulated.
        w_sim = np.full(len(sim), 0.6 / len(sim))
        if real:
            area = np.array([z.size for z, _ in real], float)
            w_real = 0.4 * area / area.sum()
        else:
            w_sim *= 1 / 0.6
            w_real = np.zeros(0)
        p_frames = np.concatenate([w_sim, w_real])
        training_data = (
            f'{args.n_sim} simulated 128x128 fields (cnnfind.simulation: '
            'Moffat/Gaussian PSFs with FWHM 1.3-9 px, star densities '
            '30-8000 per Mpix, SNR up to 1e2-1e4, skies 5-5000 e-, Sersic '
            'galaxies, nebulosity, gradients, cosmic rays, hot pixels, '
            'saturation with bleed trails, bad columns, 10 % with mildly '
            'correlated noise), 60 % of patches; and, 40 % of patches (by '
            'area), the real frames ' + ', '.join(r for r in
                                                  GENERIC_REAL_FRAMES)
            + ' of ../shared/data/real (' + str(len(real)) + ' found). '
            'Held out for evaluation: astropy-data/photometry_M6707HH.fits '
            '(M67) and sep/image.fits.')
        command = ('python -m cnnfind.training.n2v --generic --out '
                   f'cnnfind/models --steps {args.steps} --seed {args.seed}'
                   + _options(args, 'channels', 'n_sim'))
    else:
        if not arrays and not args.images:
            msg = 'give FITS images to train on, or --generic'
            raise ValueError(msg)
        arrays = list(arrays) + [_as_array(p) for p in args.images]
        frames = [normalise_frame(a, saturation=args.saturation)
                  for a in arrays]
        if all(min(z.shape) < args.patch for z, _ in frames):
            msg = (f'all training images are smaller than the patch size '
                   f'{args.patch}; use a smaller --patch')
            raise ValueError(msg)
        area = np.array([z.size * (min(z.shape) >= args.patch)
                         for z, _ in frames], float)
        p_frames = area / area.sum()
        names = [str(p) for p in args.images] or ['arrays']
        training_data = (f'the user frames {names} '
                         f'({len(frames)} images), self-supervised')
        command = ('python -m cnnfind.training.n2v ' + ' '.join(
            str(p) for p in args.images) + f' --out {onnx_path} --steps '
            f'{args.steps} --seed {args.seed}'
            + _options(args, 'channels', 'saturation'))

    t0 = time.time()
    model, history = _fit(frames, p_frames, args, workdir, log)
    model.eval()
    rf = _receptive_field_radius(model)
    if rf > HALO:
        msg = f'receptive field {rf} exceeds the halo {HALO}'
        raise RuntimeError(msg)
    parity = _export(model, onnx_path, log)
    card = _base_card(args, history, parity, rf, training_data, command)
    card['training']['wall_time_s'] = round(
        history['elapsed_s'] if history and 'elapsed_s' in history
        else time.time() - t0, 1)
    card_path = write_card(onnx_path, card)
    if args.generic:
        # Measured with the card in place (the runtime reads it).
        from cnnfind.evaluation.denoise import card_metrics
        card['metrics'] = card_metrics(onnx_path, card, log=log)
        card_path = write_card(onnx_path, card)
    log(f'wrote {onnx_path} and {card_path}')
    return card_path


def main(argv=None):
    """Run the command line; returns the path of the model card."""
    args = build_parser().parse_args(argv)
    workdir = args.workdir

    def log(msg):
        print(msg, flush=True)
        if workdir_path[0] is not None:
            with open(workdir_path[0] / 'train.log', 'a') as f:
                f.write(msg + '\n')

    workdir_path = [Path(workdir) if workdir else
                    (Path('runs/n2v') if args.generic else None)]
    if workdir_path[0] is not None:
        workdir_path[0].mkdir(parents=True, exist_ok=True)
    return _run(args, [], log)


if __name__ == '__main__':
    main(sys.argv[1:])
