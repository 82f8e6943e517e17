# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Where CNNStarFinder's errors come from on a simulated scenario, at its
best-F1 operating point (found as in ``bench_starfinder.py``, whose
``evaluate_scenario`` and scoring rules this script reuses).

False detections (matched to no star of SNR >= 3, and not within the match
radius of a fainter or outside star, which the benchmark ignores) are put
into the first class that applies: a cosmic-ray or hot pixel within 2.5 px
(an artefact pixel above 3 sigma), a galaxy centre within 6 px, a star of
SNR >= 3 within 6 px (a second detection on it, or a blend), and otherwise
isolated (noise peaks and nebulosity). Missed stars (SNR >= 3) are counted
per SNR bin, with how many of them had a detection within the match radius
that the probability cut removed, a galaxy centre within 6 px, a brighter
star within 2 FWHM, or were within 2 FWHM of the image edge. Last, the
fraction of galaxies with a false detection, per Sersic index and
half-light radius.

    python benchmarks/starfinder_error_budget.py
    python benchmarks/starfinder_error_budget.py --scenario realistic --seeds 100 101

An experiment behind the benchmarks docs page, not part of the package.
"""

import argparse
import os
import sys
import warnings

import numpy as np
from bench_starfinder import _call, evaluate_scenario, make_finders
from scipy.spatial import cKDTree

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cnnfind.evaluation import match_sources  # noqa: E402
from cnnfind.simulation import make_scenario  # noqa: E402

RADIUS = 3.0
SNR_BINS = (3, 5, 10, 20, np.inf)


def _nearest(points, xy):
    """Distance and index of the nearest of ``points`` to each of ``xy``."""
    if len(points) == 0:
        return np.full(len(xy), np.inf), np.zeros(len(xy), int)
    return cKDTree(points).query(xy)


def classify_errors(sim, res, cut):
    """
    False detections by class and missed stars with their circumstances,
    for one simulated image and one finder result cut at ``cut``.
    """
    st, gal = sim['stars'], sim['artefacts']['galaxies']
    ny, nx = sim['image'].shape
    fwhm = sim['fwhm']
    keep = res.score >= cut
    xd, yd, pd = res.x[keep], res.y[keep], res.score[keep]
    inside = ((st['x'] > -0.5) & (st['x'] < nx - 0.5)
              & (st['y'] > -0.5) & (st['y'] < ny - 0.5))
    req = inside & (st['snr'] >= 3)
    it, idet, _ = match_sources(st['x'][req], st['y'][req], xd, yd, RADIUS)
    unmatched = np.setdiff1d(np.arange(len(xd)), idet)
    d_ign, _ = _nearest(np.c_[st['x'][~req], st['y'][~req]],
                        np.c_[xd[unmatched], yd[unmatched]])
    fp = unmatched[d_ign >= RADIUS]
    fxy = np.c_[xd[fp], yd[fp]]
    cy, cx = np.nonzero(sim['artefacts']['cosmic'] > 3 * sim['noise'])
    d_cr, _ = _nearest(np.c_[cx, cy], fxy)
    d_gal, j_gal = _nearest(np.c_[gal['x'], gal['y']], fxy)
    d_star, _ = _nearest(np.c_[st['x'][req], st['y'][req]], fxy)
    classes = np.where(
        d_cr < 2.5, 'cosmic ray / hot pixel', np.where(
            d_gal < 6, 'galaxy', np.where(d_star < 6, 'near a star',
                                          'isolated (noise, nebulosity)')))
    galaxy_hit = np.zeros(len(gal['x']), bool)
    galaxy_hit[j_gal[classes == 'galaxy']] = True

    ireq = np.nonzero(req)[0]
    missed = np.setdiff1d(ireq, ireq[it])
    mxy = np.c_[st['x'][missed], st['y'][missed]]
    d_all, _ = _nearest(np.c_[res.x, res.y], mxy)
    d_mg, _ = _nearest(np.c_[gal['x'], gal['y']], mxy)
    brighter = np.zeros(len(missed), bool)
    tree = cKDTree(np.c_[st['x'], st['y']])
    for k, m in enumerate(missed):
        near = tree.query_ball_point(mxy[k], 2 * fwhm)
        brighter[k] = any(st['flux'][j] > st['flux'][m] for j in near
                          if j != m)
    edge = np.minimum.reduce([mxy[:, 0], mxy[:, 1], nx - 1 - mxy[:, 0],
                              ny - 1 - mxy[:, 1]]) < 2 * fwhm
    return {'n_req': int(req.sum()), 'n_tp': len(it),
            'fp_class': classes, 'fp_p': pd[fp],
            'missed_snr': st['snr'][missed],
            'missed_below_cut': d_all < RADIUS, 'missed_galaxy': d_mg < 6,
            'missed_brighter': brighter, 'missed_edge': edge,
            'galaxy_hit': galaxy_hit, 'galaxy_n': gal['n'],
            'galaxy_re': gal['re']}


def _pooled(parts, key):
    return np.concatenate([p[key] for p in parts])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--scenario', default='realistic')
    p.add_argument('--size', type=int, default=1024)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--finder', default='CNNStarFinder',
                   choices=('CNNStarFinder', 'CNNStarFinder (vetting)'))
    args = p.parse_args(argv)
    print('$ python ' + ' '.join(sys.argv))
    finder = make_finders([args.finder])[0]
    sims = [make_scenario(args.scenario, (args.size, args.size), seed=s)
            for s in args.seeds]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        best = evaluate_scenario(finder, sims, radius=RADIUS, snr_min=3.0)
    thr, cut = best['run_threshold'], best['cut']
    print(f'{args.finder} on {args.scenario}, {args.size}x{args.size}, '
          f'seeds {args.seeds}: best F1 {best["f1"]:.3f} (purity '
          f'{best["purity"]:.2f}, completeness {best["completeness"]:.2f}) '
          f'at threshold {thr:g} sigma, probability >= {cut:.3g}')
    parts = [classify_errors(sim, _call(finder, sim['image'], sim['fwhm'],
                                        thr, mask=sim['mask']), cut)
             for sim in sims]
    n_req = sum(q['n_req'] for q in parts)
    n_tp = sum(q['n_tp'] for q in parts)
    classes, fp_p = _pooled(parts, 'fp_class'), _pooled(parts, 'fp_p')
    print(f'\n{n_tp} of {n_req} stars of SNR >= 3 found; {len(classes)} '
          'false detections:')
    print(f'  {"class":30s} {"n":>5s} {"median p":>9s}')
    for name in ('cosmic ray / hot pixel', 'galaxy', 'near a star',
                 'isolated (noise, nebulosity)'):
        sel = classes == name
        med = f'{np.median(fp_p[sel]):.2f}' if sel.any() else '--'
        print(f'  {name:30s} {sel.sum():5d} {med:>9s}')

    snr = _pooled(parts, 'missed_snr')
    flags = {k: _pooled(parts, f'missed_{k}')
             for k in ('below_cut', 'galaxy', 'brighter', 'edge')}
    print('\nMissed stars per SNR bin (of which: detected below the '
          'probability cut / galaxy within 6 px / brighter star within '
          '2 FWHM / within 2 FWHM of the edge):')
    print(f'  {"SNR":10s} {"missed":>6s} {"below cut":>10s} {"galaxy":>7s} '
          f'{"brighter":>9s} {"edge":>5s}')
    for lo, hi in zip(SNR_BINS[:-1], SNR_BINS[1:], strict=True):
        sel = (snr >= lo) & (snr < hi)
        label = f'{lo:g}-{hi:g}' if np.isfinite(hi) else f'>= {lo:g}'
        print(f'  {label:10s} {sel.sum():6d} '
              + ' '.join(f'{flags[k][sel].sum():{w}d}' for k, w in
                         (('below_cut', 10), ('galaxy', 7),
                          ('brighter', 9), ('edge', 5))))

    hit, n_s, re = (_pooled(parts, k) for k in ('galaxy_hit', 'galaxy_n',
                                                 'galaxy_re'))
    if len(hit):
        print(f'\nGalaxies with a false detection: {hit.sum()} of '
              f'{len(hit)}')
        for name, values, edges in (('Sersic n', n_s, (0.5, 1.5, 2.5, 4.0)),
                                    ('r_e (px)', re, (0, 8, 12, np.inf))):
            for lo, hi in zip(edges[:-1], edges[1:], strict=True):
                sel = (values >= lo) & (values <= hi)
                print(f'  {name} {lo:g}-{hi:g}: {hit[sel].sum()} of '
                      f'{sel.sum()} ({hit[sel].mean():.2f})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
