# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
How the finders' best F1 on the ``realistic`` scenario depends on the
density of its artefacts: the same recipe (800 stars per Mpix, FWHM 3.5,
elliptical Moffat PSF, gradient, nebulosity, saturation) with the numbers
of cosmic rays, hot pixels and galaxies per Mpix multiplied by a factor
(1 is the benchmark's ``realistic`` scenario: 400, 100 and 150 per Mpix).

Each finder gets its best F1 over its run thresholds and score cut, and
its completeness at purity >= 0.95 (the rules of ``bench_starfinder.py``,
whose ``evaluate_scenario`` this script reuses), on seeds that no model
or benchmark table was tuned on.

    python benchmarks/starfinder_artefact_density.py
    python benchmarks/starfinder_artefact_density.py --factors 0 0.25 1 --seeds 200 201
    python benchmarks/starfinder_artefact_density.py --factors 0 1 --drop nebula gradient

An experiment behind the benchmarks docs page, not part of the package.
"""

import argparse
import os
import sys
import time
import warnings

from bench_starfinder import _fmt, _print_table, evaluate_scenario, make_finders

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cnnfind.simulation import SCENARIOS, FieldConfig, simulate_field  # noqa: E402

#: Artefact entries of the ``realistic`` recipe that the factor scales.
_ARTEFACTS = ('n_cosmic', 'n_hot', 'n_galaxies')

FINDERS = ('CNNStarFinder', 'CNNStarFinder (vetting)', 'DAO (tuned)',
           'SourceFinder', 'SEP', 'SExtractor')


#: Smooth components of the recipe that ``--drop`` can switch off.
_SMOOTH = {'gradient': 0.0, 'nebula': 0.0, 'saturation': None}


def realistic_recipe(factor, shape, drop=()):
    """
    The ``realistic`` recipe with its artefact counts times ``factor``
    and the components named in ``drop`` switched off.
    """
    recipe = dict(SCENARIOS['realistic'])
    recipe.update({k: _SMOOTH[k] for k in drop})
    mpix = shape[0] * shape[1] / 1e6
    for key in _ARTEFACTS:
        per = recipe.pop(f'{key}_per_mpix')
        recipe[key] = int(round(factor * per * mpix))
    return recipe


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--size', type=int, default=1024)
    p.add_argument('--seeds', type=int, nargs='+', default=[100, 101])
    p.add_argument('--factors', type=float, nargs='+',
                   default=[0.0, 0.1, 0.25, 0.5, 1.0])
    p.add_argument('--finders', nargs='+', default=list(FINDERS))
    p.add_argument('--drop', nargs='+', default=[], choices=sorted(_SMOOTH),
                   help='switch these components of the recipe off')
    args = p.parse_args(argv)
    print('$ python ' + ' '.join(sys.argv))
    finders = [f for f in make_finders(args.finders) if not f.unavailable]
    shape = (args.size, args.size)
    rows = []
    for factor in args.factors:
        recipe = realistic_recipe(factor, shape, args.drop)
        sims = [simulate_field(shape, FieldConfig(**recipe), seed=s)
                for s in args.seeds]
        per_mpix = '/'.join(f'{factor * SCENARIOS["realistic"][k + "_per_mpix"]:g}'
                            for k in _ARTEFACTS)
        row = [f'{factor:g}', per_mpix]
        for f in finders:
            t0 = time.time()
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                res = evaluate_scenario(f, sims, radius=3.0, snr_min=3.0)
            row += [_fmt(res['f1']), _fmt(res['c_at_p95'], '.2f')]
            print(f'  x{factor:<5g} {f.name:24s} F1 {res["f1"]:.3f} '
                  f'C@P95 {res["c_at_p95"]:.2f} ({time.time() - t0:.0f} s)',
                  flush=True)
        rows.append(row)
    header = ['factor', 'CR/hot/gal per Mpix']
    for f in finders:
        header += [f'{f.name} F1', 'C@P95']
    dropped = f' without {", ".join(args.drop)}' if args.drop else ''
    print(f'\nRealistic recipe{dropped}, artefacts times a factor, {args.size}x'
          f'{args.size}, seeds {args.seeds}; best F1 and completeness at '
          'purity >= 0.95 ("—": never reached); match radius 3 px, '
          'stars of SNR >= 3 required')
    _print_table(header, rows)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
