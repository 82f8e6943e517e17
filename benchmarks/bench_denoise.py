# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Benchmark N2VDenoiser against classical denoisers.

One run compares, on seeded simulated fields with their noiseless truth
(``cnnfind.evaluation.denoise.simulate_denoise_field``: star fields,
stars with galaxies, stars on diffuse nebulosity), the raw image, a
Gaussian filter matched to the PSF (sigma = FWHM / 2.3548), a 3x3
median filter, BM3D (if ``pip install bm3d`` is available, with the
true sky noise; otherwise skipped with a message) and N2VDenoiser:

* PSNR and SSIM against the truth (SSIM with a robust range: the
  truth's 99.5th percentile minus its minimum, so that it looks at the
  sky and faint sources rather than at the brightest peak);
* aperture-flux ratio (radius 2 FWHM, true sky subtracted) against the
  truth, and after/before denoising (the denoised image's flux over the
  raw image's, same star and aperture), median and scatter per SNR bin;
* Nyquist (checkerboard) power ratio of the error image;
* detection depth: with DAOStarFinder and CNNStarFinder on raw and
  denoised star fields, the lowest score cut whose purity (over all
  SNR >= 3 stars) is at least 0.9, and the completeness there of the
  faint stars (3 <= SNR < 10) and of all SNR >= 3 stars;
* extended-source detection depth on the galaxy fields (raw, BM3D if
  installed, N2VDenoiser): photutils ``SourceFinder`` (Background2D,
  Gaussian kernel of the PSF FWHM, ``n_pixels=10``, deblending when
  scikit-image is installed) run at each threshold of a wide grid (in
  units of each image's own background RMS), and, at the threshold
  with the highest galaxy completeness among those whose purity is at
  least 0.9, the completeness of galaxies per SNR bin and of the low
  surface-brightness ones (see ``_extended_counts`` for the matching
  and purity conventions). ``--extended-only`` runs only this part.

With the shared data present, it also denoises the real images of
``../shared/data/real`` (no truth) and reports the residual (raw minus
denoised): its spread in units of the sky noise, its Nyquist power
ratio, and its aperture sums at the SExtractor sources in noise units
(mean and spread: a residual of pure noise gives about 0 and 1).

``n2v_own`` is the Noise2Void use case proper: a model trained on
frames like the ones to denoise (here simulated frames with the same
PSF and noise, seeds disjoint from the benchmark's), made with::

    python benchmarks/bench_denoise.py --write-training-frames runs/own_frames
    python -m cnnfind.training.n2v runs/own_frames/*.fits \\
        --out runs/n2v_own/n2v_own.onnx --steps 1500

Examples
--------
::

    python benchmarks/bench_denoise.py --quick
    python benchmarks/bench_denoise.py --extended-only --size 384 \\
        --seeds 0 1 --own-model runs/n2v_own/n2v_own.onnx
    python benchmarks/bench_denoise.py --size 512 --seeds 0 1 \\
        --own-model runs/n2v_own/n2v_own.onnx
"""

import argparse
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage
from scipy.spatial import cKDTree

from cnnfind.denoise import N2VDenoiser
from cnnfind.evaluation import (
    completeness_at_purity,
    completeness_per_bin,
    run_cnnfind,
    run_dao,
    threshold_sweep,
)
from cnnfind.evaluation.denoise import (
    aperture_fluxes,
    flux_ratio_per_bin,
    nyquist_power_ratio,
    psnr,
    residual_at_sources,
    simulate_denoise_field,
    ssim,
)
from cnnfind.evaluation.peers import read_sextractor_catalog
from cnnfind.runtime.normalize import robust_sky_noise

KINDS = ('stars', 'galaxies', 'nebula')

REAL = {
    'M67 (held out)': ('astropy-data/photometry_M6707HH.fits',
                       'astropy-data_M6707HH_M67_dss.cat'),
    'SEP NTT (held out)': ('sep/image.fits', 'sep_image.cat'),
    'HorseHead': ('astropy-data/tutorials_FITS-images_HorseHead.fits',
                  'astropy-data_HorseHead_dss.cat'),
    'M51': ('photutils-datasets/isophote_M51.fits',
            'photutils-datasets_M51_iraf_devpix.cat'),
    'SAAO raw': ('pypi-package-testdata/ccdproc_a8280271_saao1m_raw.fits',
                 'ccdproc_saao_raw.cat'),
}


def _bm3d():
    try:
        import bm3d
    except ImportError:
        return None
    return bm3d


def write_training_frames(folder, size=384, n=9, first_seed=500):
    """Simulated frames (seeds disjoint from the benchmark's) to train
    a model "on the user's own data" with ``cnnfind train n2v``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        kind = KINDS[i % 3]
        f = simulate_denoise_field((size, size), kind, seed=first_seed + i)
        path = folder / f'sim_{kind}_{first_seed + i}.fits'
        fits.PrimaryHDU(f['image']).writeto(path, overwrite=True)
        print(f'wrote {path}')


def methods(fwhm, noise, den, own=None):
    """name -> callable(image) -> denoised image."""
    sigma = fwhm / 2.3548
    out = {
        'raw': lambda im: im,
        'gaussian': lambda im: ndimage.gaussian_filter(im, sigma),
        'median3': lambda im: ndimage.median_filter(im, 3),
    }
    bm3d = _bm3d()
    if bm3d is not None:
        out['bm3d'] = lambda im: np.asarray(
            bm3d.bm3d(im.astype(np.float64), sigma_psd=noise), np.float32)
    out['n2v'] = lambda im: den(im)
    restored = N2VDenoiser(den.model.path, device='cpu', restore_flux=fwhm)
    out['n2v_flux'] = lambda im: restored(im)
    if own is not None:
        out['n2v_own'] = lambda im: own(im)
    return out


def _inside(st, size, r):
    return ((st['x'] > r + 1) & (st['x'] < size - r - 2)
            & (st['y'] > r + 1) & (st['y'] < size - r - 2))


def _depth(image, truth_xy, snr, fwhm, finder, purity=0.9):
    """
    Completeness of faint (3 <= SNR < 10) and of all SNR >= 3 stars at
    the lowest score cut whose overall purity (all SNR >= 3 stars) is at
    least ``purity``.
    """
    xt, yt = truth_xy
    try:
        if finder == 'dao':
            res = run_dao(image, fwhm, threshold=1.0)
        else:
            res = run_cnnfind(image, fwhm, threshold=1.0)
    except Exception as exc:  # report, do not stop the benchmark
        print(f'  {finder} failed: {exc}')
        return np.nan, np.nan
    ny, nx = image.shape
    inside = (xt > 3) & (xt < nx - 4) & (yt > 3) & (yt < ny - 4)
    required = inside & (snr >= 3)
    sweep = threshold_sweep(xt, yt, res.x, res.y, res.score, radius=2.0,
                            required=required)
    total, cut = completeness_at_purity(sweep, purity,
                                        return_threshold=True)
    if not np.isfinite(cut):
        return np.nan, np.nan
    keep = res.score >= cut
    tab = completeness_per_bin(xt, yt, snr, res.x[keep], res.y[keep],
                               [3, 10], radius=2.0, required=required)
    return float(tab['completeness'][0]), float(total)


#: Segmentation thresholds, in units of each image's own background RMS
#: (the denoised images have a much smaller RMS, so the grid is wide).
EXT_THRESHOLDS = np.round(np.geomspace(0.2, 40.0, 24), 3)
#: Galaxy bins: (label, property, low, high).
EXT_BINS = (('snr 3-10', 'snr', 3, 10), ('snr 10-30', 'snr', 10, 30),
            ('snr 30-100', 'snr', 30, 100), ('snr 100+', 'snr', 100, np.inf),
            ('sb < 1', 'sb', 0, 1), ('sb < 3', 'sb', 0, 3),
            ('all', 'snr', 0, np.inf))


def _match_scaled(xt, yt, rt, xd, yd):
    """
    One-to-one matching of detections to true sources, each true source
    with its own radius ``rt``: pairs closer than ``rt`` are taken in
    increasing ``distance / rt``. Returns, for each detection, the
    index of its true source or -1.
    """
    owner = np.full(len(xd), -1)
    ok = np.flatnonzero(np.isfinite(xd) & np.isfinite(yd))
    if ok.size == 0 or len(xt) == 0:
        return owner
    tree = cKDTree(np.column_stack([xd[ok], yd[ok]]))
    cand = tree.query_ball_point(np.column_stack([xt, yt]), rt)
    it = np.concatenate([np.full(len(c), i) for i, c in enumerate(cand)])
    if it.size == 0:
        return owner
    id_ = ok[np.concatenate(cand).astype(int)]
    dn = np.hypot(xt[it] - xd[id_], yt[it] - yd[id_]) / rt[it]
    used = np.zeros(len(xt), bool)
    for k in np.argsort(dn, kind='stable'):
        if owner[id_[k]] < 0 and not used[it[k]]:
            owner[id_[k]] = it[k]
            used[it[k]] = True
    return owner


def _segment_sweep(image, fwhm, thresholds, deblend=True, kernel_factor=1.0):
    """
    Windowed centroids of the photutils ``SourceFinder`` segments at
    each threshold (in units of the background RMS map), the way
    ``cnnfind.evaluation.run_sourcefinder`` runs it: Background2D (64
    px boxes, 3x3 filter), Gaussian kernel of the PSF FWHM,
    ``n_pixels=10``. The background and the convolution are done once.
    ``exclude_percentile=50``: on a very smooth (denoised) sky sigma
    clipping rejects more than the default 10 % of most boxes (BM3D).
    ``kernel_factor`` scales the kernel's FWHM; 0 segments the image
    without convolving it (the denoised images are smooth already).
    """
    import importlib.util

    from astropy.convolution import convolve
    from photutils.background import Background2D
    from photutils.segmentation import (
        SourceCatalog,
        SourceFinder,
        make_2dgaussian_kernel,
    )

    from cnnfind._compat import SOURCEFINDER_QUIET
    deblend = deblend and importlib.util.find_spec('skimage') is not None
    data = np.asarray(image, float)
    bkg = Background2D(data, 64, filter_size=(3, 3), exclude_percentile=50)
    sub = data - bkg.background
    if kernel_factor > 0:
        kf = kernel_factor * fwhm
        size = 2 * max(1, int(np.ceil(1.5 * kf))) + 1
        conv = convolve(sub, make_2dgaussian_kernel(kf, size=size))
    else:
        conv = sub
    rms = np.asarray(bkg.background_rms)
    finder = SourceFinder(n_pixels=10, deblend=deblend, **SOURCEFINDER_QUIET)
    out = []
    for t in thresholds:
        segm = finder(conv, t * rms)
        if segm is None:
            out.append((np.zeros(0), np.zeros(0)))
            continue
        cat = SourceCatalog(sub, segm, convolved_data=conv)
        out.append((np.asarray(cat.x_centroid_win, float),
                    np.asarray(cat.y_centroid_win, float)))
    return out


def _extended_counts(image, field, deblend=True, kernel_factor=1.0):
    """
    Segmentation of one image at every threshold of ``EXT_THRESHOLDS``.

    Detections (windowed centroids of the segments) are matched one to
    one to the true galaxies within ``max(3 px, r_e / 2)`` of their
    centres and to the true stars (any SNR) within 2 px, nearest in
    units of that radius first. A *false positive* is a segment matched
    to nothing (a second segment on one source, e.g. a shredded galaxy,
    counts as one). Purity counts, like the star depth, the galaxies
    whose centre is at least 5 px inside the image and the SNR >= 3
    stars at least 3 px inside: ``purity = matched to those / (matched
    to those + false positives)``; segments matched to other sources
    (SNR < 3 stars, sources at the edge) are left out of it.
    """
    st, gal = field['stars'], field['galaxies']
    ny, nx = image.shape
    ng = len(gal['x'])
    xt = np.concatenate([gal['x'], st['x']])
    yt = np.concatenate([gal['y'], st['y']])
    rt = np.concatenate([np.maximum(3.0, 0.5 * gal['re']),
                         np.full(len(st['x']), 2.0)])
    counted = np.concatenate([
        (gal['x'] > 5) & (gal['x'] < nx - 6) & (gal['y'] > 5)
        & (gal['y'] < ny - 6),
        (st['x'] > 3) & (st['x'] < nx - 4) & (st['y'] > 3)
        & (st['y'] < ny - 4) & (st['snr'] >= 3)])
    out = []
    sweep = _segment_sweep(image, field['fwhm'], EXT_THRESHOLDS, deblend,
                           kernel_factor)
    for t, (xd, yd) in zip(EXT_THRESHOLDS, sweep, strict=True):
        owner = _match_scaled(xt, yt, rt, xd, yd)
        m = owner[owner >= 0]
        found = np.zeros(ng, bool)
        found[m[m < ng]] = True
        out.append({'threshold': float(t), 'n_det': len(owner),
                    'n_true': int(counted[m].sum()),
                    'n_fp': int((owner < 0).sum()), 'found': found,
                    'required': counted[:ng]})
    return out


def extended_depth(args, den, own=None, purity=0.9):
    """
    Galaxy completeness at purity >= ``purity`` on the galaxy fields of
    ``args.seeds``, counts pooled over the seeds: for each image kind,
    the threshold with the highest completeness of all counted galaxies
    among those with pooled purity >= ``purity`` (the lowest among
    ties), and the completeness there per bin of ``EXT_BINS``.
    """
    per = {}
    props = []
    for seed in args.seeds:
        f = simulate_denoise_field((args.size, args.size), 'galaxies',
                                   seed=1000 + seed, fwhm=args.fwhm,
                                   galaxy_log_snr=args.galaxy_log_snr)
        props.append(f['galaxies'])
        for name, fn in methods(f['fwhm'], f['noise'], den, own).items():
            if name not in ('raw', 'bm3d', 'n2v', 'n2v_own'):
                continue
            t0 = time.perf_counter()
            counts = _extended_counts(fn(f['image']), f,
                                      deblend=not args.no_deblend,
                                      kernel_factor=args.kernel_factor)
            print(f'  extended depth, seed {seed}, {name}: '
                  f'{time.perf_counter() - t0:.0f} s')
            per.setdefault(name, []).append(counts)
    prop = {k: np.concatenate([p[k] for p in props]) for k in ('snr', 'sb')}
    rows = []
    for name, seeds in per.items():
        best = None
        for j, t in enumerate(EXT_THRESHOLDS):
            n_true = sum(c[j]['n_true'] for c in seeds)
            n_fp = sum(c[j]['n_fp'] for c in seeds)
            found = np.concatenate([c[j]['found'] for c in seeds])
            req = np.concatenate([c[j]['required'] for c in seeds])
            pur = n_true / max(n_true + n_fp, 1)
            comp = found[req].mean()
            if pur >= purity and (best is None or comp > best[0]):
                best = (comp, t, pur, n_fp,
                        sum(c[j]['n_det'] for c in seeds), found, req)
        row = {'image': name}
        if best is None:
            row.update(threshold=np.nan, n_det=0, n_fp=0, purity=np.nan)
            rows.append(row)
            continue
        _, t, pur, n_fp, n_det, found, req = best
        edge = ' (grid edge)' if t in (EXT_THRESHOLDS[0],
                                       EXT_THRESHOLDS[-1]) else ''
        row.update(threshold=f'{t:g}{edge}', n_det=n_det, n_fp=n_fp,
                   purity=pur)
        for label, key, lo, hi in EXT_BINS:
            sel = req & (prop[key] >= lo) & (prop[key] < hi)
            k, n = int(found[sel].sum()), int(sel.sum())
            row[label] = f'{k / n:.2f} ({k}/{n})' if n else '--'
        rows.append(row)
    tab = Table(rows=rows)
    empty = [c for c in tab.colnames if tab[c].dtype.kind in 'US'
             and c != 'image' and all(v == '--' for v in tab[c])]
    tab.remove_columns(empty)
    return tab


def simulated(args, den, own=None):
    rows, flux_rows, depth_rows = [], [], []
    for kind in KINDS:
        fluxes = {}
        for seed in args.seeds:
            f = simulate_denoise_field((args.size, args.size), kind,
                                       seed=1000 + seed, fwhm=args.fwhm)
            truth = f['truth']
            rng_ssim = float(np.percentile(truth, 99.5) - truth.min())
            st, r = f['stars'], 2 * f['fwhm']
            ok = _inside(st, args.size, r)
            xs, ys, snr = st['x'][ok], st['y'][ok], st['snr'][ok]
            ftrue = aperture_fluxes(truth, xs, ys, r, f['sky'])
            for name, fn in methods(f['fwhm'], f['noise'], den,
                                    own).items():
                t0 = time.perf_counter()
                out = fn(f['image'])
                dt = time.perf_counter() - t0
                fl = aperture_fluxes(out, xs, ys, r, f['sky'])
                fluxes.setdefault(name, []).append((fl, ftrue, snr))
                rows.append({
                    'field': kind, 'seed': seed, 'method': name,
                    'psnr': psnr(out, truth), 'ssim': ssim(out, truth,
                                                           rng_ssim),
                    'nyquist': nyquist_power_ratio(out - truth),
                    'seconds': dt})
                if kind == 'stars' and name in ('raw', 'n2v', 'n2v_own') and \
                        not args.no_detection:
                    for finder in ('dao', 'cnn'):
                        faint, total = _depth(out, (st['x'], st['y']),
                                              st['snr'], f['fwhm'], finder)
                        depth_rows.append({
                            'seed': seed, 'image': name, 'finder': finder,
                            'faint_3_10': faint, 'all_snr_ge_3': total})
        before = np.concatenate([p[0] for p in fluxes['raw']])
        for name, parts in fluxes.items():
            fl, ft, snr = (np.concatenate(a) for a in zip(*parts,
                                                          strict=True))
            # Against the truth, and (the "before/after") against
            # the raw image's flux of the same star in the same aperture.
            for against, ref in (('truth', ft), ('raw', before)):
                if against == 'raw' and name == 'raw':
                    continue
                tab = flux_ratio_per_bin(fl, ref, snr,
                                         bins=(3, 10, 30, 100, 1e9))
                for row in tab:
                    flux_rows.append({'field': kind, 'method': name,
                                      'against': against,
                                      'snr': f'{row["snr_min"]:g}-'
                                             f'{row["snr_max"]:g}'
                                      .replace('-1e+09', '+'),
                                      'n': int(row['n']),
                                      'median_ratio': row['median_ratio'],
                                      'err': row['median_ratio_err'],
                                      'scatter': row['scatter']})
    return Table(rows=rows), Table(rows=flux_rows), (
        Table(rows=depth_rows) if depth_rows else None)


def real(den, data_dir):
    rows = []
    for label, (rel, cat) in REAL.items():
        path = data_dir / 'real' / rel
        cpath = data_dir / 'real' / 'sextractor-reference' / cat
        if not path.exists():
            continue
        with fits.open(path) as hdul:
            img = next(h.data for h in hdul if h.data is not None
                       and h.data.ndim == 2).astype(np.float32)
        t0 = time.perf_counter()
        out = den(img)
        dt = time.perf_counter() - t0
        sky, noise = robust_sky_noise(img)
        resid = img - out
        good = np.isfinite(resid)
        row = {'image': label, 'shape': 'x'.join(map(str, img.shape)),
               'resid_std': float(1.4826 * np.median(np.abs(
                   resid[good] - np.median(resid[good]))) / noise),
               'nyquist': nyquist_power_ratio(resid),
               'src_mean': np.nan, 'src_std': np.nan, 'n_src': 0,
               'seconds': dt}
        if cpath.exists():
            t = read_sextractor_catalog(cpath)
            x, y = np.asarray(t['X_IMAGE']) - 1, np.asarray(t['Y_IMAGE']) - 1
            ny, nx = img.shape
            ok = (x > 6) & (x < nx - 7) & (y > 6) & (y < ny - 7)
            z = residual_at_sources(resid, x[ok], y[ok], 3.0, noise)
            z = z[np.isfinite(z)]
            if len(z):
                row.update(src_mean=float(np.mean(z)),
                           src_std=float(np.std(z)), n_src=len(z))
        rows.append(row)
        print(f'  {label}: {dt:.1f} s')
    return Table(rows=rows)


def _fmt(t):
    for c in t.colnames:
        if t[c].dtype.kind == 'f':
            t[c].info.format = '.4f' if c in ('median_ratio', 'err',
                                               'scatter', 'ssim') else '.2f'
    return t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--size', type=int, default=512)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--fwhm', type=float, default=3.0)
    p.add_argument('--model', default=None, help='.onnx file (default: '
                   'the bundled n2v model)')
    p.add_argument('--quick', action='store_true',
                   help='256x256, one seed, no real images')
    p.add_argument('--no-real', action='store_true')
    p.add_argument('--no-detection', action='store_true')
    p.add_argument('--extended-only', action='store_true',
                   help='only the extended-source (galaxy) detection '
                        'depth')
    p.add_argument('--real-only', action='store_true',
                   help='only the residual statistics on the real images')
    p.add_argument('--no-deblend', action='store_true',
                   help='segment without deblending (extended depth)')
    p.add_argument('--kernel-factor', type=float, default=1.0,
                   help='FWHM of the extended depth\'s smoothing kernel in '
                        'units of the PSF FWHM (default 1; 0: no '
                        'convolution)')
    p.add_argument('--galaxy-log-snr', type=float, nargs=2,
                   default=(1.0, 2.7), metavar=('LO', 'HI'),
                   help='log10 range of the galaxies\' SNR in the fields '
                        'of the extended depth (default 1 2.7: SNR '
                        '10-500; 0.5 1.5 for fainter ones)')
    p.add_argument('--data-dir', default=None)
    p.add_argument('--own-model', default=None,
                   help='also run this .onnx model (e.g. trained with '
                        '"cnnfind train n2v" on --write-training-frames)')
    p.add_argument('--write-training-frames', metavar='DIR', default=None,
                   help='write 9 simulated 384x384 training frames (seeds '
                        '500-508, disjoint from the benchmark) and exit')
    args = p.parse_args(argv)
    if args.write_training_frames:
        write_training_frames(args.write_training_frames)
        return
    if args.quick:
        args.size, args.seeds, args.no_real = 256, [0], True
    print('command: python ' + ' '.join(shlex.quote(a) for a in
                                        [sys.argv[0]] + list(argv or
                                                             sys.argv[1:])))
    print(f'python {platform.python_version()}, load average '
          f'{os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs')
    if _bm3d() is None:
        print('BM3D skipped: pip install bm3d to include it')
    den = N2VDenoiser(args.model, device='cpu')
    print(f'model: {den.model.path.name} ({den.model.card.get("version")})')
    warnings.simplefilter('ignore')
    own = None
    if args.own_model:
        own = N2VDenoiser(args.own_model, device='cpu')
        print(f'own model: {args.own_model}')
    if not (args.no_detection or args.real_only):
        import importlib.util
        deb = (not args.no_deblend
               and importlib.util.find_spec('skimage') is not None)
        print('extended depth: SourceFinder '
              + ('with' if deb else 'WITHOUT') + ' deblending'
              + (f', kernel FWHM {args.kernel_factor:g} x PSF'
                 if args.kernel_factor > 0 else ', no convolution')
              + ('' if deb or args.no_deblend else
                 ' (scikit-image is not installed)'))
        ext = extended_depth(args, den, own)
        lo, hi = (10 ** v for v in args.galaxy_log_snr)
        print(f'\nGalaxy completeness (galaxy SNR {lo:.3g}-{hi:.3g}) at '
              f'purity >= 0.9 (SourceFinder, pooled over seeds '
              f"{args.seeds}; threshold in units of each image's "
              'background RMS; completeness (found/n)):')
        _fmt(ext).pprint_all()
    if args.extended_only:
        return
    if args.real_only:
        _real_table(args, den)
        return
    quality, flux, depth = simulated(args, den, own)
    print('\nQuality against the truth (mean over seeds):')
    q = quality.group_by(['field', 'method'])
    agg = q['field', 'method', 'psnr', 'ssim', 'nyquist', 'seconds'] \
        .groups.aggregate(np.mean)
    raw = {r['field']: r['psnr'] for r in agg if r['method'] == 'raw'}
    agg['gain_db'] = [r['psnr'] - raw[r['field']] for r in agg]
    _fmt(agg).pprint_all()
    print('\nAperture flux / true flux (radius 2 FWHM), per SNR bin:')
    _fmt(flux[flux['against'] == 'truth']).pprint_all()
    print('\nAperture flux after / before denoising (denoised over raw, '
          'same stars and apertures), per SNR bin:')
    _fmt(flux[flux['against'] == 'raw']).pprint_all()
    if depth is not None:
        print('\nCompleteness at purity >= 0.9 (all SNR >= 3 stars), '
              'star fields: faint 3 <= SNR < 10 and all:')
        d = depth.group_by(['image', 'finder'])['image', 'finder',
                                                 'faint_3_10', 'all_snr_ge_3']
        _fmt(d.groups.aggregate(np.mean)).pprint_all()
    if not args.no_real:
        _real_table(args, den)


def _real_table(args, den):
    """Print the residual statistics on the real images."""
    from cnnfind.training.data import default_data_dir
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if data_dir is None:
        print('\nReal images skipped: ../shared/data not found')
    else:
        print('\nReal images (residual = raw - denoised):')
        _fmt(real(den, data_dir)).pprint_all()


if __name__ == '__main__':
    main()
