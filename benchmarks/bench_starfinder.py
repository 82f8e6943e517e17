# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Benchmark CNNStarFinder against the classical star finders.

Runs CNNStarFinder, DAOStarFinder (defaults, and tuned), IRAFStarFinder,
photutils SourceFinder, SEP and SExtractor side by side, in one process,
on seeded simulated scenarios (``cnnfind.simulation.make_scenario``) and
prints one table: per scenario and finder the best F1, the completeness
at purity >= 0.95, the completeness per SNR bin, the centroid RMS of
SNR > 20 stars and its ratio to the Cramér-Rao bound, and the speed.
A second table gives speed and peak memory on sparse fields of growing
size, each (finder, size) measured in its own subprocess. With
``--real`` the finders are also compared with SExtractor reference
catalogues of real images (agreement, not truth) and an
injection-recovery test is run on the M67 plate.

Fairness rules (see ``../shared/notes/peers.md``): every finder gets
its best threshold. Each finder is run at one or a few low thresholds
and a score is swept (``cnnfind.evaluation.threshold_sweep``): the
CNN's ``probability``; the DAOFIND statistic for DAOStarFinder (which
reproduces its threshold exactly); IRAF's ``flux``; the filtered peak
over the RMS for SourceFinder and SEP; ``SNR_WIN`` for SExtractor. The
(run threshold, score cut) with the best F1 over all seeds is the
operating point of every column of the table except completeness at
purity >= 0.95, which is the best over all run thresholds and cuts.
CNNStarFinder has two knobs, ``threshold`` (a cut on the SNR of its PSF
amplitude) and ``min_probability``, so it runs at a grid of thresholds
from 2 to 5 sigma, with its probability swept at each.

Examples
--------
::

    python benchmarks/bench_starfinder.py --quick
    python benchmarks/bench_starfinder.py --size 1024 --seeds 0 1 --real
"""

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import QTable

# Run from a source checkout without installing.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cnnfind.evaluation import (  # noqa: E402
    best_f1,
    centroid_efficiency,
    completeness_at_purity,
    completeness_per_bin,
    injection_recovery,
    read_sextractor_catalog,
    run_cnnfind,
    run_dao,
    run_iraf,
    run_sep,
    run_sextractor,
    run_sourcefinder,
    scoring_mask,
    sextractor_path,
    threshold_sweep,
)
from cnnfind.simulation import make_scenario  # noqa: E402

SCENARIOS = ('sparse', 'crowded', 'faint', 'realistic')
SNR_BINS = (3.0, 5.0, 10.0, 20.0, np.inf)
SNR_LABELS = ('3-5', '5-10', '10-20', '>20')
DATA_DIR = os.path.join(_ROOT, '..', 'shared', 'data', 'real')


#: Run thresholds of CNNStarFinder (units of the sky noise).
_CNN_THRESHOLDS = (2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
#: On the real images the reference catalogues stop at an unknown depth,
#: which the peers reach by sweeping their SNR-like score; CNNStarFinder's
#: swept score (its probability) does not rank by depth, so its run
#: thresholds go deeper there.
_CNN_REAL_THRESHOLDS = _CNN_THRESHOLDS + (7.0, 10.0, 15.0, 20.0)

#: Environment variable naming the star-finder model to benchmark.
_MODEL_ENV = 'CNNFIND_BENCH_MODEL'


@dataclass
class Finder:
    """A finder in the benchmark: how to run it and what to sweep."""

    name: str
    runner: object
    run_thresholds: tuple
    kwargs: dict = field(default_factory=dict)
    speed_threshold: float = 2.0
    score: str = ''
    unavailable: str = ''
    #: Keyword arguments for the speed/memory runs (default: ``kwargs``).
    speed_kwargs: dict | None = None
    #: Run thresholds on the real images (default: ``run_thresholds``).
    real_thresholds: tuple | None = None


def _cnn_unavailable():
    """Why CNNStarFinder cannot run here ('' if it can)."""
    try:
        from cnnfind import CNNStarFinder
        finder = CNNStarFinder(threshold=1.0, fwhm=3.0)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            finder(np.random.default_rng(0).normal(size=(64, 64)))
    except Exception as exc:  # noqa: BLE001 - any failure means skip
        return f'{type(exc).__name__}: {exc}'
    return ''


def _sep_unavailable():
    try:
        import sep  # noqa: F401
    except ImportError:
        return 'sep is not installed'
    return ''


def make_finders(names=None, check=True):
    """The finders of the benchmark, in table order."""
    # A model other than the bundled one (``--model``; the environment
    # carries it to the speed subprocesses).
    model = os.environ.get(_MODEL_ENV)
    cnn = {'model': model} if model else {}
    finders = [
        # CNNStarFinder has two knobs: ``threshold`` cuts on the PSF
        # amplitude's SNR, ``min_probability`` on the network. It runs at
        # a grid of thresholds and its probability is swept.
        # Speed is measured as users run it: threshold 5 sigma and the
        # model's default probability cut (the sweep above uses a low cut).
        Finder('CNNStarFinder', run_cnnfind, _CNN_THRESHOLDS,
               {'min_probability': 0.01, **cnn}, 5.0, 'probability',
               speed_kwargs=cnn, real_thresholds=_CNN_REAL_THRESHOLDS),
        # With the optional vetting stage (off by default): what it adds
        # on simulated fields and costs on real ones and in speed.
        Finder('CNNStarFinder (vetting)', run_cnnfind, _CNN_THRESHOLDS,
               {'min_probability': 0.01, 'vetting': True, **cnn}, 5.0,
               'probability', speed_kwargs={'vetting': True, **cnn},
               real_thresholds=_CNN_REAL_THRESHOLDS),
        Finder('DAO (defaults)', run_dao, (2.0,), {}, 5.0,
               'DAOFIND statistic'),
        Finder('DAO (tuned)', run_dao, (2.0,),
               {'sharpness_range': None, 'sigma_radius': 3.0}, 4.0,
               'DAOFIND statistic'),
        Finder('IRAFStarFinder', run_iraf, (2.0,), {'score': 'flux'}, 4.0,
               'flux'),
        Finder('SourceFinder', run_sourcefinder, (0.5, 0.7, 1.0), {}, 1.0,
               'filtered peak / rms'),
        Finder('SEP', run_sep, (0.4, 0.5, 0.7, 1.0), {}, 1.0,
               'filtered peak / rms'),
        Finder('SExtractor', run_sextractor, (0.4, 0.5, 0.7, 1.0), {}, 1.0,
               'SNR_WIN'),
    ]
    if names:
        wanted = {n.lower() for n in names}
        finders = [f for f in finders
                   if f.name.lower() in wanted
                   or f.name.split()[0].lower() in wanted]
    if check:
        for f in finders:
            if f.name.startswith('CNNStarFinder'):
                f.unavailable = _cnn_unavailable()
            elif f.name == 'SEP':
                f.unavailable = _sep_unavailable()
            elif f.name == 'SExtractor' and sextractor_path() is None:
                f.unavailable = 'SExtractor binary (source-extractor) not found'
    return finders


def _call(finder, data, fwhm, threshold, mask=None, kwargs=None):
    """Run a finder quietly; returns a PeerResult."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return finder.runner(data, fwhm, threshold, mask=mask,
                             **(finder.kwargs if kwargs is None else kwargs))


# ----------------------------------------------------------------------
# Simulated scenarios
# ----------------------------------------------------------------------

def _concat(parts):
    return np.concatenate(parts) if parts else np.zeros(0)


def pooled_truth(sims, radius, snr_min):
    """
    The true stars of seeded images of one scenario, placed side by
    side: image ``k`` is shifted by ``k * step`` in x (``step`` leaves a
    gap of ten match radii), so that one sweep covers all of them.

    Returns
    -------
    step : float
        The x offset between images.
    x, y, snr : 1D arrays
        Shifted true positions and SNR.
    req : 1D bool array
        Stars a finder must find (inside the image, ``snr >= snr_min``).
    cen : 1D bool array
        Stars for the centroid statistics: as ``req``, unsaturated and
        at least 2 FWHM from the border.
    """
    shape = sims[0]['image'].shape
    step = shape[1] + 10 * radius
    truth = {'x': [], 'y': [], 'snr': [], 'req': [], 'cen': []}
    for k, sim in enumerate(sims):
        st = sim['stars']
        req = scoring_mask(st['x'], st['y'], shape, snr=st['snr'],
                           snr_min=snr_min)
        # Centroid statistics: unsaturated stars well inside the frame.
        cen = scoring_mask(st['x'], st['y'], shape, snr=st['snr'],
                           snr_min=snr_min, edge=2 * sim['fwhm'])
        cen &= ~np.asarray(st['saturated'], bool)
        truth['x'].append(st['x'] + k * step)
        truth['y'].append(st['y'])
        truth['snr'].append(st['snr'])
        truth['req'].append(req)
        truth['cen'].append(cen)
    tx, ty, tsnr = (_concat(truth[c]) for c in ('x', 'y', 'snr'))
    return (step, tx, ty, tsnr, _concat(truth['req']).astype(bool),
            _concat(truth['cen']).astype(bool))


def evaluate_scenario(finder, sims, radius, snr_min):
    """
    Best operating point of one finder on the seeded images of one
    scenario, pooled by `pooled_truth`.
    """
    step, tx, ty, tsnr, req, cen = pooled_truth(sims, radius, snr_min)
    fwhm = sims[0]['fwhm']

    best = None
    c95 = np.nan
    for thr in finder.run_thresholds:
        xs, ys, ss, secs = [], [], [], 0.0
        for k, sim in enumerate(sims):
            res = _call(finder, sim['image'], fwhm, thr, mask=sim['mask'])
            xs.append(res.x + k * step)
            ys.append(res.y)
            ss.append(res.score)
            secs += res.seconds
        x, y, s = _concat(xs), _concat(ys), _concat(ss)
        sweep = threshold_sweep(tx, ty, x, y, s, radius, required=req)
        c = completeness_at_purity(sweep, 0.95)
        if np.isfinite(c) and not (c <= c95):
            c95 = c
        if len(sweep) == 0:
            continue
        row = best_f1(sweep)
        if best is None or row['f1'] > best['row']['f1']:
            best = {'row': row, 'thr': thr, 'x': x, 'y': y, 's': s,
                    'seconds': secs}
    out = {'f1': np.nan, 'purity': np.nan, 'completeness': np.nan,
           'c_at_p95': c95, 'run_threshold': np.nan, 'cut': np.nan,
           'rms_snr20': np.nan, 'crb_ratio': np.nan, 'n_centroid': 0,
           'mpix_s': np.nan}
    for label in SNR_LABELS:
        out[f'c_{label}'] = np.nan
    if best is None:
        return out
    row = best['row']
    keep = best['s'] >= row['threshold']
    x, y = best['x'][keep], best['y'][keep]
    per_bin = completeness_per_bin(tx, ty, tsnr, x, y, SNR_BINS, radius,
                                   required=req)
    # All true stars take part in the matching; only the selected ones
    # enter the centroid statistics.
    snr_c = np.where(cen, tsnr, -1.0)
    eff = centroid_efficiency(tx, ty, snr_c, x, y, fwhm,
                              bins=(20.0, np.inf), radius=radius)
    npix = sum(s['image'].size for s in sims)
    out.update({'f1': float(row['f1']), 'purity': float(row['purity']),
                'completeness': float(row['completeness']),
                'run_threshold': float(best['thr']),
                'cut': float(row['threshold']),
                'rms_snr20': float(eff['rms'][0]),
                'crb_ratio': float(eff['ratio'][0]),
                'n_centroid': int(eff['n'][0]),
                'mpix_s': npix / 1e6 / best['seconds']})
    for label, value in zip(SNR_LABELS, per_bin['completeness']):
        out[f'c_{label}'] = float(value)
    return out


# ----------------------------------------------------------------------
# Speed and memory, one subprocess per (finder, size)
# ----------------------------------------------------------------------

def _proc_status_mb(key):
    """A memory figure of this process from /proc (MB), or None."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); True if done."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _worker(name, path, fwhm, threshold, repeats=1):
    """Subprocess entry: time ``repeats`` runs (the median is reported)
    and measure their peak memory."""
    import gc

    finders = {f.name: f for f in make_finders(check=False)}
    finder = finders[name]
    data = np.load(path)
    # Warm up imports, lazy sessions and caches on a small cut-out.
    kwargs = finder.speed_kwargs
    _call(finder, np.ascontiguousarray(data[:128, :128]), fwhm, threshold,
          kwargs=kwargs)
    gc.collect()
    # Peak RSS during the run minus RSS before it. The kernel's peak
    # mark is reset first, so the imports' transient peak is not in it;
    # without /proc the (coarser) getrusage high-water mark is used.
    rss0 = _proc_status_mb('VmRSS')
    reset = rss0 is not None and _reset_peak_rss()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    seconds, walls = [], []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        res = _call(finder, data, fwhm, threshold, kwargs=kwargs)
        walls.append(time.perf_counter() - t0)
        seconds.append(res.seconds)
    if reset:
        increase = _proc_status_mb('VmHWM') - rss0
    else:
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        increase = after - before
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    print(json.dumps({'seconds': float(np.median(seconds)),
                      'wall': float(np.median(walls)),
                      'n': int(res.x.size), 'rss_increase_mb': increase,
                      'child_peak_mb': child, 'exact_peak': reset}))


def speed_table(finders, sizes, tmpdir, timeout=900, repeats=3):
    """Mpix/s (median of ``repeats`` runs) and peak memory of each
    finder on sparse fields."""
    rows = []
    for size in sizes:
        sim = make_scenario('sparse', (size, size), seed=0)
        path = os.path.join(tmpdir, f'sparse_{size}.npy')
        np.save(path, sim['image'])
        for f in finders:
            if f.unavailable:
                continue
            cmd = [sys.executable, os.path.abspath(__file__), '--_worker',
                   f.name, path, repr(sim['fwhm']), repr(f.speed_threshold),
                   str(repeats)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=timeout, check=False)
                result = json.loads(proc.stdout.strip().splitlines()[-1])
            except Exception as exc:  # noqa: BLE001
                err = getattr(locals().get('proc'), 'stderr', '') or ''
                print(f'  speed run {f.name} {size}: failed ({exc}) '
                      f'{err[-300:]}', file=sys.stderr)
                continue
            peak = result['rss_increase_mb']
            if f.name == 'SExtractor':
                # The work happens in the SExtractor process.
                peak += result['child_peak_mb']
            rows.append({'finder': f.name, 'size': size,
                         'mpix_s': size * size / 1e6 / result['seconds'],
                         'seconds': result['seconds'],
                         'peak_mb': peak, 'n': result['n']})
    return rows


# ----------------------------------------------------------------------
# Real images
# ----------------------------------------------------------------------

def _reference(cat_path):
    """Reference positions (0-based) and the PSF FWHM of bright stars."""
    cat = read_sextractor_catalog(cat_path)
    x = np.asarray(cat['XWIN_IMAGE'], float) - 1.0
    y = np.asarray(cat['YWIN_IMAGE'], float) - 1.0
    bright = (np.asarray(cat['FLAGS']) == 0) & (np.asarray(cat['SNR_WIN']) > 50)
    if 'CLASS_STAR' in cat.colnames:
        bright &= np.asarray(cat['CLASS_STAR']) > 0.5
    fwhm_img = np.asarray(cat['FWHM_IMAGE'], float)
    fwhm = float(np.median(fwhm_img[bright & (fwhm_img > 0)]))
    return x, y, fwhm, int(bright.sum())


def real_images(finders, radius, quick, seed=0):
    """Agreement with SExtractor reference catalogues and injection."""
    from astropy.io import fits

    images = [
        ('M67 (DSS, 1059x1059)', 'astropy-data/photometry_M6707HH.fits',
         'sextractor-reference/astropy-data_M6707HH_M67_dss.cat'),
        ('SEP test image (256x256)', 'sep/image.fits',
         'sextractor-reference/sep_image.cat'),
    ]
    agreement, injection = [], []
    for label, img_rel, cat_rel in images:
        img_path = os.path.join(DATA_DIR, img_rel)
        cat_path = os.path.join(DATA_DIR, cat_rel)
        if not (os.path.exists(img_path) and os.path.exists(cat_path)):
            print(f'  {label}: files missing, skipped')
            continue
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # non-standard FITS cards
            from astropy import log
            with log.log_to_list():
                data = np.asarray(fits.getdata(img_path), dtype=float)
        rx, ry, fwhm, nbright = _reference(cat_path)
        print(f'  {label}: {rx.size} reference sources; FWHM {fwhm:.2f} px '
              f'(median FWHM_IMAGE of {nbright} bright, unflagged stars)')
        for f in finders:
            if f.unavailable:
                continue
            best = None
            for thr in f.real_thresholds or f.run_thresholds:
                res = _call(f, data, fwhm, thr)
                sweep = threshold_sweep(rx, ry, res.x, res.y, res.score,
                                        radius)
                if len(sweep) == 0:
                    continue
                row = best_f1(sweep)
                if best is None or row['f1'] > best['row']['f1']:
                    best = {'row': row, 'thr': thr, 'seconds': res.seconds}
            if best is None:
                continue
            row = best['row']
            agreement.append({'image': label, 'finder': f.name,
                              'f1': float(row['f1']),
                              'purity': float(row['purity']),
                              'completeness': float(row['completeness']),
                              'n_det': int(row['n_det']),
                              'run_threshold': best['thr'],
                              'cut': float(row['threshold']),
                              'seconds': best['seconds']})
            if not img_rel.endswith('M6707HH.fits'):
                continue
            # Injection-recovery at the operating point found above.
            thr, cut = best['thr'], float(row['threshold'])

            def run_at_point(image, f=f, thr=thr, cut=cut, fwhm=fwhm):
                res = _call(f, image, fwhm, thr)
                keep = res.score >= cut
                return res.x[keep], res.y[keep]

            table, _ = injection_recovery(
                run_at_point, data, n=100, fwhm=fwhm,
                snr_range=(10.0, 200.0), bins=(10.0, 20.0, 50.0, np.inf),
                radius=radius, seed=seed, n_iter=1 if quick else 3,
                noise_estimate='filtered')
            n_true = int(np.sum(table['n_true']))
            n_found = int(np.sum(table['n_found']))
            entry = {'image': label, 'finder': f.name, 'n_injected': n_true,
                     'completeness': n_found / max(n_true, 1)}
            for lo, hi, c in zip(table['lo'], table['hi'],
                                 table['completeness']):
                key = f'c_>{lo:g}' if not np.isfinite(hi) else f'c_{lo:g}-{hi:g}'
                entry[key] = float(c)
            injection.append(entry)
    return agreement, injection


# ----------------------------------------------------------------------
# Printing
# ----------------------------------------------------------------------

def _fmt(value, spec='.3f', missing='—'):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return missing
    return format(value, spec)


def _print_table(header, rows, aligns=None):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows))
              if rows else len(str(h)) for i, h in enumerate(header)]
    aligns = aligns or ['<'] + ['>'] * (len(header) - 1)
    line = '  '.join(f'{h:{a}{w}}' for h, a, w in zip(header, aligns, widths))
    print(line)
    print('  '.join('-' * w for w in widths))
    for r in rows:
        print('  '.join(f'{str(v):{a}{w}}' for v, a, w in
                        zip(r, aligns, widths)))


def _versions():
    import astropy
    import photutils
    import scipy
    out = [f'python {platform.python_version()}', f'numpy {np.__version__}',
           f'scipy {scipy.__version__}', f'astropy {astropy.__version__}',
           f'photutils {photutils.__version__}']
    try:
        import sep
        out.append(f'sep {sep.__version__}')
    except ImportError:
        pass
    try:
        import onnxruntime
        out.append(f'onnxruntime {onnxruntime.__version__}')
    except ImportError:
        pass
    exe = sextractor_path()
    if exe:
        try:
            v = subprocess.run([exe, '-v'], capture_output=True, text=True,
                               check=False).stdout.strip()
            out.append(v.replace('version ', '').split(' (')[0])
        except OSError:
            pass
    return ', '.join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--size', type=int, default=1024,
                   help='side of the simulated images (default 1024)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1],
                   help='simulation seeds (default 0 1)')
    p.add_argument('--scenarios', nargs='+', default=list(SCENARIOS),
                   choices=SCENARIOS, help='scenarios (default all)')
    p.add_argument('--finders', nargs='+', default=None,
                   help='only these finders (names as in the table, or '
                        'their first word)')
    p.add_argument('--real', action='store_true',
                   help='also compare on real images in ../shared/data')
    p.add_argument('--speed-sizes', type=int, nargs='*',
                   default=[1024, 2048, 4096],
                   help='image sides of the speed/memory table '
                        '(default 1024 2048 4096; none to skip)')
    p.add_argument('--radius', type=float, default=3.0,
                   help='matching radius in pixels (default 3)')
    p.add_argument('--snr-min', type=float, default=3.0,
                   help='true stars with a lower SNR are not required '
                        '(default 3)')
    p.add_argument('--out', default=None,
                   help='write the results to this ECSV file (speed and '
                        'real-image tables go to *_speed.ecsv, '
                        '*_real.ecsv, *_injection.ecsv)')
    p.add_argument('--quick', action='store_true',
                   help='512x512, one seed, speed at 1024 only (about a '
                        'minute)')
    p.add_argument('--model', default=None,
                   help='CNNStarFinder model to benchmark: an ONNX file '
                        'with its card beside it (default: the bundled '
                        'model)')
    p.add_argument('--speed-repeats', type=int, default=3,
                   help='timed runs per finder and size in the speed '
                        'table; the median is shown (default 3)')
    p.add_argument('--_worker', nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.size = 512
        args.seeds = args.seeds[:1]
        args.speed_sizes = [s for s in args.speed_sizes if s <= 1024] or [1024]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args._worker:
        name, path, fwhm, thr, repeats = args._worker
        _worker(name, path, float(fwhm), float(thr), int(repeats))
        return 0

    shown = sys.argv if argv is None else [sys.argv[0], *argv]
    print('$ python ' + shlex.join(shown))
    print(f'# {_versions()}')
    print(f'# {os.cpu_count()} CPUs, load average '
          f'{", ".join(f"{v:.1f}" for v in os.getloadavg())} at start; '
          f'{time.strftime("%Y-%m-%d %H:%M")}')
    if args.model:
        os.environ[_MODEL_ENV] = str(Path(args.model).resolve())
        print(f'# CNNStarFinder model: {args.model}')
    t_start = time.perf_counter()
    finders = make_finders(args.finders)
    for f in finders:
        if f.unavailable:
            print(f'# {f.name}: skipped ({f.unavailable})')
    active = [f for f in finders if not f.unavailable]
    if any(f.name == 'SourceFinder' for f in active):
        import importlib.util
        if importlib.util.find_spec('skimage') is None:
            print('# SourceFinder: scikit-image is not installed, so it runs '
                  'WITHOUT deblending (photutils deblends with skimage)')
    print('# Operating point: each finder at its best-F1 (run threshold, '
          'score cut) over all seeds. Scores swept:')
    for f in active:
        extra = f' {f.kwargs}' if f.kwargs else ''
        real = ('' if f.real_thresholds is None else
                ' (real images: '
                f'{"/".join(f"{t:g}" for t in f.real_thresholds)})')
        print(f'#   {f.name}: {f.score}; run at threshold '
              f'{"/".join(f"{t:g}" for t in f.run_thresholds)} sigma'
              f'{real}{extra}')
    print(f'# Truth: simulated stars inside the image with SNR >= '
          f'{args.snr_min:g} (matched-filter SNR); detections of fainter or '
          f'outside stars are ignored; match radius {args.radius:g} px, one '
          'to one.')
    print('# Centroid RMS: per axis, unsaturated SNR > 20 stars at least '
          '2 FWHM from the border; CRB = 0.60 FWHM / SNR per axis. '
          'Mpix/s: wall clock incl. background estimation.')

    rows = []
    for scen in args.scenarios:
        sims = [make_scenario(scen, (args.size, args.size), seed=s)
                for s in args.seeds]
        for f in active:
            res = evaluate_scenario(f, sims, args.radius, args.snr_min)
            res.update({'scenario': scen, 'finder': f.name})
            rows.append(res)
    print()
    print(f'Simulated fields: {args.size}x{args.size}, seeds '
          f'{" ".join(map(str, args.seeds))}')
    header = ['scenario', 'finder', 'F1', 'P', 'C', 'C@P>=.95',
              *[f'C[{lab}]' for lab in SNR_LABELS], 'rms>20 px',
              'rms/CRB', 'Mpix/s', 'thr/cut']
    table_rows = []
    for r in rows:
        table_rows.append([
            r['scenario'], r['finder'], _fmt(r['f1']), _fmt(r['purity'], '.2f'),
            _fmt(r['completeness'], '.2f'), _fmt(r['c_at_p95'], '.2f'),
            *[_fmt(r[f'c_{lab}'], '.2f') for lab in SNR_LABELS],
            _fmt(r['rms_snr20'], '.3f'), _fmt(r['crb_ratio'], '.1f'),
            _fmt(r['mpix_s'], '.2f'),
            f'{_fmt(r["run_threshold"], "g")}/{_fmt(r["cut"], ".3g")}'])
    _print_table(header, table_rows, ['<', '<'] + ['>'] * (len(header) - 2))

    speed_rows = []
    if args.speed_sizes:
        print()
        print('Speed and peak memory, sparse field, one subprocess per '
              '(finder, size), after a warm-up on a 128x128 cut-out; Mpix/s '
              f'from the median of {args.speed_repeats} timed runs. Peak '
              'MB = peak RSS during the runs minus RSS before them (the '
              'image itself is loaded before; SExtractor: plus the peak RSS '
              'of its own process).')
        print('Thresholds: ' + ', '.join(
            f'{f.name} {f.speed_threshold:g}' for f in active))
        with tempfile.TemporaryDirectory(prefix='cnnfind-bench-') as tmp:
            speed_rows = speed_table(active, args.speed_sizes, tmp,
                                     repeats=args.speed_repeats)
        sizes = sorted({r['size'] for r in speed_rows})
        header = ['finder'] + [f'{s}² Mpix/s' for s in sizes] + \
            [f'{s}² peak MB' for s in sizes]
        by = {(r['finder'], r['size']): r for r in speed_rows}
        srows = []
        for f in active:
            srows.append([f.name]
                         + [_fmt(by.get((f.name, s), {}).get('mpix_s'), '.2f')
                            for s in sizes]
                         + [_fmt(by.get((f.name, s), {}).get('peak_mb'), '.0f')
                            for s in sizes])
        _print_table(header, srows)

    agreement, injection = [], []
    if args.real:
        print()
        if not os.path.isdir(DATA_DIR):
            print(f'Real images: {os.path.normpath(DATA_DIR)} not found, '
                  'skipped')
        else:
            print('Real images: AGREEMENT WITH THE SEXTRACTOR REFERENCE '
                  'CATALOGUE, NOT TRUTH (SExtractor 2.25, DETECT_THRESH 1.5, '
                  'MINAREA 3; best F1 for each finder)')
            agreement, injection = real_images(active, args.radius,
                                               args.quick)
            _print_table(
                ['image', 'finder', 'F1 vs ref', 'P vs ref', 'C vs ref',
                 'n_det', 'thr/cut', 's'],
                [[a['image'], a['finder'], _fmt(a['f1']),
                  _fmt(a['purity'], '.2f'), _fmt(a['completeness'], '.2f'),
                  a['n_det'], f'{a["run_threshold"]:g}/{a["cut"]:.3g}',
                  _fmt(a['seconds'], '.2f')] for a in agreement],
                ['<', '<'] + ['>'] * 6)
            if injection:
                print()
                print('Injection-recovery on the M67 plate: Moffat stars of '
                      'the reference FWHM, SNR 10-200 (log-uniform; matched-'
                      'filter SNR against the noise of the PSF-filtered '
                      'plate, which is correlated: the pixel-to-pixel '
                      'noise would make them ~4x fainter), kept '
                      '2.5 FWHM from sources found before injection; '
                      f'found = within {args.radius:g} px; each finder at '
                      'its operating point above.')
                keys = [k for k in injection[0] if k.startswith('c_')]
                _print_table(
                    ['finder', 'n', 'C (SNR>=10)',
                     *[f'C[SNR {k[2:]}]' for k in keys]],
                    [[i['finder'], i['n_injected'], _fmt(i['completeness'],
                                                         '.3f'),
                      *[_fmt(i[k], '.3f') for k in keys]]
                     for i in injection])

    if args.out:
        QTable(rows=[{k: v for k, v in r.items()} for r in rows]).write(
            args.out, overwrite=True)
        stem = os.path.splitext(args.out)[0]
        for suffix, data in (('_speed', speed_rows), ('_real', agreement),
                             ('_injection', injection)):
            if data:
                QTable(rows=data).write(f'{stem}{suffix}.ecsv',
                                        overwrite=True)
        print(f'\n# results written to {args.out}')
    print(f'# total time {time.perf_counter() - t_start:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
