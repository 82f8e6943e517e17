# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Benchmark PSFStarSelector against PSFEx's own star selection and the
common DAOStarFinder heuristic, on seeded simulated fields with a known
PSF and on real images.

Simulated fields (``cnnfind.evaluation.psf.simulate_psf_field`` with
``PSF_SCENARIO``: a constant Moffat PSF, FWHM 3.5 px, beta 2.8, axis
ratio 0.9, with crowding, binaries, galaxies, saturated stars with
bleed trails, cosmic rays and hot pixels). Four selections are compared:

* ``cnnfind`` -- ``PSFStarSelector()`` with its defaults (FWHM
  estimated from the data);
* ``truth`` -- the perfect selection: every clean true star (see
  ``simulate_psf_field``) with SNR >= 30, at its true position;
* ``psfex`` -- the stars PSFEx 3.21 accepts (``FLAGS_PSF == 0``) after
  SExtractor 2.25 (FITS_LDAC, DETECT_THRESH 5, the true gain),
  PSFEx's default selection settings;
* ``dao`` -- DAOStarFinder (5 sigma, the true FWHM, default sharpness
  and roundness cuts tightened to |roundness| <= 0.3), box inside the
  image, no other detection within 3 FWHM, the ``--n-brightest``
  brightest.

All methods are given the same saturation level, 80 % of the true one
(where the truth calls a star saturated): ``saturation=`` for
PSFStarSelector, ``SATUR_LEVEL`` for SExtractor, ``peak_max`` for
DAOStarFinder.

Each selection is measured against the truth (purity: selected stars
that are clean; completeness: clean stars with SNR >= 30 that are
selected), an ePSF is built from it with ``photutils.psf.EPSFBuilder``
(25x25 cutouts of the background-subtracted image, oversampling 4, 10
iterations) and compared with the true pixel-integrated PSF
(``epsf_residual``: RMS over 3x3 sub-pixel phases, in units of the
PSF peak). Speeds: the whole call (cnnfind: candidates + FWHM estimate
+ scoring; PSFEx: SExtractor + PSFEx), and cnnfind's candidates scored
per second when the candidates are given.

With ``--real`` the same selectors run on the SEP frame, the M67 plate,
the ISAAC, SDSS g and r, Spitzer, M51 and UKIDSS frames and the
legacypipe cutouts (no truth: counts, reasons, the estimated
FWHM against the legacypipe PSFEx model's FWHM, and times).

Examples
--------
::

    python benchmarks/bench_psfstars.py --quick
    python benchmarks/bench_psfstars.py --seeds 0 1 2 --real
    python benchmarks/bench_psfstars.py --seeds 0 --real --diagnose
    python benchmarks/bench_psfstars.py --seeds 0 1 --jackknife 6
"""

import os

# One BLAS thread: EPSFBuilder's many small linear-algebra calls slow
# down by orders of magnitude when BLAS threads compete for the cores.
for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from cnnfind.evaluation.psf import (  # noqa: E402
    PSF_SCENARIO,
    build_epsf,
    epsf_residual,
    psfex_selection,
    selection_quality,
    simulate_psf_field,
)
from cnnfind.psfstars import PSFStarSelector  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'real'


def dao_heuristic(data, fwhm, noise, *, saturation=None, n_brightest=100,
                  size=25, isolation=3.0, roundness=0.3):
    """The common recipe: DAOStarFinder, cuts, the brightest N."""
    from photutils.detection import DAOStarFinder
    finder = DAOStarFinder(threshold=5 * noise, fwhm=fwhm,
                           roundness_range=(-roundness, roundness),
                           peak_max=saturation)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tab = finder(data)
    if tab is None:
        return np.zeros(0), np.zeros(0)
    x = np.asarray(tab['x_centroid'], float)
    y = np.asarray(tab['y_centroid'], float)
    flux = np.asarray(tab['flux'], float)
    h = size // 2
    ny, nx = data.shape
    ok = (x >= h) & (x <= nx - 1 - h) & (y >= h) & (y <= ny - 1 - h)
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
    np.fill_diagonal(d, np.inf)
    ok &= d.min(axis=1) > isolation * fwhm
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(-flux[idx])][:n_brightest]
    return x[idx], y[idx]


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def simulated(seeds, shape, n_brightest, log, diagnose=False, jackknife=0,
              min_score=None):
    rng_jack = np.random.default_rng(0)
    rows = []
    speed = []
    for seed in seeds:
        sim = simulate_psf_field(shape, seed=1000 + seed, **PSF_SCENARIO)
        img, psf, st = sim['image'], sim['psf'], sim['stars']
        data = img - sim['sky']
        # Every method is told the same (linearity-safe) saturation
        # level: 80 % of the true one, where the truth calls a star
        # saturated.
        sat = 0.8 * sim['saturation']
        selector = PSFStarSelector(saturation=sat, min_score=min_score)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            tab, t_cnn = _timed(selector, img, keep_rejected=True)
        sel = tab[tab['selected']]
        n_cand = len(tab)
        # Scoring speed with the candidates given (no finder, known FWHM).
        given = PSFStarSelector(fwhm=selector.fwhm_used_, saturation=sat,
                                min_score=min_score)
        given(img, candidates=tab)  # warm-up
        _, t_score = _timed(given, img, candidates=tab)
        px, t_psfex = _timed(psfex_selection, img, saturation=sat,
                             gain=1.5)
        (dx, dy), t_dao = _timed(dao_heuristic, data, psf['fwhm'],
                                 sim['noise'], saturation=sat - sim['sky'],
                                 n_brightest=n_brightest)
        truth = st['clean'] & (st['snr'] >= 30)
        sels = {
            'cnnfind': (np.asarray(sel['x_centroid']),
                        np.asarray(sel['y_centroid']), t_cnn),
            'truth': (st['x'][truth], st['y'][truth], np.nan),
            'psfex': (px['x'], px['y'], t_psfex),
            'dao': (dx, dy, t_dao),
        }
        for name, (x, y, t) in sels.items():
            q = selection_quality(x, y, st, snr_min=30.0)
            epsf = build_epsf(data, x, y)
            rms = epsf_residual(epsf, psf)
            rows.append(dict(seed=seed, method=name, rms=rms, time=t, **q))
            log(f'seed {seed} {name:8s} n={q["n_selected"]:4d} purity '
                f'{q["purity"]:.3f} completeness {q["completeness"]:.3f} '
                f'rms {rms:.5f} time {t:.2f} s')
        for k in rng_jack.choice(len(sel), min(jackknife, len(sel)),
                                 replace=False):
            keep = np.arange(len(sel)) != k
            x, y, _ = sels['cnnfind']
            rms = epsf_residual(build_epsf(data, x[keep], y[keep]), psf)
            log(f'seed {seed} cnnfind without selected star {k}: rms '
                f'{rms:.5f}')
        if diagnose:
            _diagnose(f'simulated seed {seed}', tab, selector)
        speed.append(dict(seed=seed, n_candidates=n_cand, t_score=t_score,
                          t_cnn=t_cnn, t_psfex=t_psfex,
                          fwhm=selector.fwhm_used_,
                          reasons=Counter(tab['reason'])))
    return rows, speed


def _summary(rows, speed, args):
    methods = ('cnnfind', 'truth', 'psfex', 'dao')
    print()
    print(f'Simulated fields {args.size}x{args.size}, seeds {args.seeds} '
          '(PSF_SCENARIO)')
    print(f'{"selection":10s} {"N sel":>6s} {"purity":>7s} {"compl.":>7s} '
          f'{"ePSF RMS":>9s} {"/truth":>7s} {"time s":>7s}')
    agg = {}
    for m in methods:
        r = [x for x in rows if x['method'] == m]
        nsel = sum(x['n_selected'] for x in r)
        ngood = sum(x['n_clean_selected'] for x in r)
        nclean = sum(x['n_clean'] for x in r)
        hit = sum(x['completeness'] * x['n_clean'] for x in r)
        rms = float(np.mean([x['rms'] for x in r]))
        agg[m] = rms
        t = np.mean([x['time'] for x in r])
        print(f'{m:10s} {nsel / len(r):6.1f} {ngood / max(nsel, 1):7.3f} '
              f'{hit / max(nclean, 1):7.3f} {rms:9.5f} '
              f'{rms / np.mean([x["rms"] for x in rows if x["method"] == "truth"]):7.3f} '
              f'{t:7.2f}')
    print()
    print('Targets: purity >= 0.98; ePSF RMS <= 1.05 x truth and <= 0.85 x '
          'each baseline')
    print(f'  cnnfind / truth = {agg["cnnfind"] / agg["truth"]:.3f}, '
          f'cnnfind / psfex = {agg["cnnfind"] / agg["psfex"]:.3f}, '
          f'cnnfind / dao = {agg["cnnfind"] / agg["dao"]:.3f}')
    cnn = [x for x in rows if x['method'] == 'cnnfind']
    pur = np.array([x['purity'] for x in cnn])
    print('  per field: cnnfind purity ' + ' '.join(f'{p:.3f}' for p in pur)
          + f' ({(pur >= 0.98).sum()} of {len(pur)} fields >= 0.98)')
    for base in ('psfex', 'dao'):
        ref = {x['seed']: x['rms'] for x in rows if x['method'] == base}
        ratio = np.array([x['rms'] / ref[x['seed']] for x in cnn])
        print(f'  per field: cnnfind / {base} ePSF RMS '
              + ' '.join(f'{r:.2f}' for r in ratio)
              + f' ({(ratio <= 0.85).sum()} of {len(ratio)} fields <= 0.85)')
    print()
    print('Speed (per field)')
    for s in speed:
        print(f'  seed {s["seed"]}: {s["n_candidates"]} candidates; scoring '
              f'{s["n_candidates"] / s["t_score"]:.0f} candidates/s (given '
              f'candidates); whole call {s["t_cnn"]:.2f} s (FWHM estimated '
              f'{s["fwhm"]:.2f}) vs SExtractor+PSFEx {s["t_psfex"]:.2f} s')
        print('    reasons: ' + ', '.join(f'{k or "selected"}: {v}' for k, v in
                                          sorted(s['reasons'].items())))


def _read(path):
    from astropy.io import fits
    with fits.open(path) as hdul:
        hdu = next(h for h in hdul if h.data is not None and h.data.ndim == 2)
        return hdu.data.astype(np.float32)


def real(log, diagnose=False):
    if not DATA.is_dir():
        print('\n--real: ../shared/data is absent; skipped')
        return
    from cnnfind.runtime.normalize import robust_sky_noise
    print('\nReal images (no truth)')
    print(f'{"image":44s} {"shape":>10s} {"cand":>5s} {"cnn":>4s} '
          f'{"psfex":>5s} {"dao":>4s} {"FWHM":>5s} {"PSFEx FWHM":>10s} '
          f'{"t cnn":>6s} {"t psfex":>7s}')
    images = [(name, None) for name in (
        'sep/image.fits', 'astropy-data/photometry_M6707HH.fits',
        'debian-eso-midas-testdata/ISAAC.2006-04-13T06_32_38.944.fits',
        'astropy-data/visualization_reprojected_sdss_r.fits.bz2',
        'astropy-data/visualization_reprojected_sdss_g.fits.bz2',
        'astropy-data/photometry_spitzer_example_image.fits',
        'photutils-datasets/isophote_M51.fits',
        'pypi-package-testdata/astroquery_ukidss_wfcam_K_taurus.fits')]
    lp = DATA / 'legacypipe-testcases'
    for f in sorted(lp.glob('**/images/**/*ooi*.fits')):
        images.append((str(f.relative_to(DATA)), f))
    selector = PSFStarSelector()
    diagnosed = []
    for rel, _ in images:
        img = _read(DATA / rel)
        valid = np.isfinite(img)
        sky, noise = robust_sky_noise(img, valid)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            try:
                tab, t_cnn = _timed(selector, img, keep_rejected=True)
            except ValueError as exc:
                log(f'{rel}: {exc}')
                continue
            n_sel = 0 if tab is None else int(tab['selected'].sum())
            n_cand = 0 if tab is None else len(tab)
            try:
                px, t_px = _timed(psfex_selection, img)
                n_px = len(px['x'])
            except Exception:  # SExtractor/PSFEx fail on tiny cutouts
                n_px, t_px = -1, np.nan
            dx, _ = dao_heuristic(img - sky, selector.fwhm_used_, noise)
        if diagnose and 'legacypipe' not in rel:
            diagnosed.append((rel, tab, selector.fwhm_used_,
                              selector.pileup_level_))
        ref = ''
        if 'legacypipe' in rel:
            ref = _legacypipe_fwhm(DATA / rel)
        shape = 'x'.join(str(s) for s in img.shape)
        print(f'{rel[-44:]:44s} {shape:>10s} {n_cand:5d} {n_sel:4d} '
              f'{n_px:5d} {len(dx):4d} {selector.fwhm_used_:5.2f} '
              f'{ref:>10s} {t_cnn:6.2f} {t_px:7.2f}')
    if diagnose:
        print('\nRejection reasons on the real images')
        for rel, tab, fwhm, level in diagnosed:
            selector.fwhm_used_, selector.pileup_level_ = fwhm, level
            _diagnose(rel, tab, selector)


def _diagnose(name, tab, selector):
    """Per rejection reason: counts and the measured statistics."""
    if tab is None:
        print(f'  {name}: no candidates')
        return
    level = selector.pileup_level_
    print(f'  {name}: FWHM {selector.fwhm_used_:.2f}, {len(tab)} candidates, '
          f'peak pile-up level '
          f'{"none" if level is None else f"{level:.0f}"} '
          f'(cuts: snr >= {selector.min_snr:g}, psf_score >= '
          f'{selector.min_score:g})')
    print(f'    {"reason":28s} {"N":>5s}  median (10-90 %) of: snr, '
          'psf_score, sharpness, peak / pile-up')
    reason = np.asarray([str(r) for r in tab['reason']])
    peak = np.asarray(tab['peak'], float) / (level or np.nan)
    for r, n in Counter(reason).most_common():
        k = reason == r
        cols = []
        for v in (np.asarray(tab['snr'], float)[k],
                  np.asarray(tab['psf_score'], float)[k],
                  np.asarray(tab['sharpness'], float)[k], peak[k]):
            if np.isfinite(v).any():
                q = np.nanpercentile(v, [50, 10, 90])
                cols.append(f'{q[0]:.3g} ({q[1]:.3g}-{q[2]:.3g})')
            else:
                cols.append('--')
        print(f'    {r or "(selected)":28s} {n:5d}  ' + '; '.join(cols))


def _legacypipe_fwhm(path):
    """FWHM of the legacypipe PSFEx model of this CCD (pixels), or ''."""
    from astropy.io import fits
    stem = path.name.split('.')[0]
    root = next((p for p in path.parents if p.name.startswith(
        ('testcase', 'mzls'))), None)
    if root is None:
        return ''
    for f in root.glob(f'calib/psfex*/**/{stem}*psfex.fits'):
        with fits.open(f) as h:
            t = h[1].data
            if 'psf_fwhm' in t.names:
                ccd = path.name.split('.')[1] if path.name.count('.') > 1 else None
                if 'ccdname' in t.names and ccd:
                    rows = [r for r in t if r['ccdname'].strip() == ccd]
                    if rows:
                        return f'{rows[0]["psf_fwhm"]:.2f}'
                return f'{t["psf_fwhm"][0]:.2f}'
            hdr = h[1].header
            if 'PSF_FWHM' in hdr:
                return f'{hdr["PSF_FWHM"]:.2f}'
    return ''


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--seeds', type=int, nargs='*', default=[0, 1, 2],
                   help='simulated fields (none: only --real)')
    p.add_argument('--size', type=int, default=1024)
    p.add_argument('--n-brightest', type=int, default=100)
    p.add_argument('--real', action='store_true')
    p.add_argument('--quick', action='store_true',
                   help='one 512x512 field')
    p.add_argument('--quiet', action='store_true')
    p.add_argument('--min-score', type=float, default=None,
                   help="PSFStarSelector's min_score (default: the model "
                        "card's) on the simulated fields")
    p.add_argument('--jackknife', type=int, default=0, metavar='K',
                   help='rebuild the cnnfind ePSF K times per field, each '
                        'time without one random selected star, and print '
                        'the RMS (how much one star moves it)')
    p.add_argument('--diagnose', action='store_true',
                   help='print, per rejection reason, the counts and the '
                        'measured statistics against their cuts')
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.size = [0], 512
    print('$ python ' + ' '.join(shlex.quote(a) for a in sys.argv))
    import onnxruntime
    import photutils
    print(f'python {platform.python_version()}, photutils '
          f'{photutils.__version__}, onnxruntime {onnxruntime.__version__}; '
          f'load average {open("/proc/loadavg").read().split()[:3]}')
    log = (lambda *a: None) if args.quiet else print
    if args.seeds:
        rows, speed = simulated(args.seeds, (args.size, args.size),
                                args.n_brightest, log, args.diagnose,
                                args.jackknife, args.min_score)
        _summary(rows, speed, args)
    if args.real:
        real(log, args.diagnose)


if __name__ == '__main__':
    main()
