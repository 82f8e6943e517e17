# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Throughput of ``cnnfind find`` on a batch of images: serial, with
``--jobs N`` worker processes, and on a Dask ``LocalCluster`` of N
single-threaded worker processes (``--scheduler``).

N simulated fields (``cnnfind.simulation.make_scenario``, seeds 0..N-1)
are written as FITS files, then the same ``cnnfind find`` command line is
run in this process in each mode. Times are wall-clock and include
everything a user waits for: reading, detection, writing the ECSV tables
and, for ``--jobs``, starting the worker processes (each imports cnnfind
and loads the model once). The Dask cluster is started before the clock
starts (a cluster outlives a batch). The modes run in turn, ``--repeat``
times each; the table gives the first run (model loading included) and the
best run of each mode, whose images/s it reports. The outputs of every run
are checked to be identical to the serial run.

Examples
--------
::

    python benchmarks/bench_batch.py                 # 8 images of 1024², 2 workers
    python benchmarks/bench_batch.py --n 4 --size 256 --workers 2
"""

import argparse
import contextlib
import io
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from cnnfind import cli
from cnnfind.simulation import make_scenario


def _write_fields(folder, n, size, scenario):
    paths = []
    for seed in range(n):
        path = Path(folder) / f'{scenario}{seed:03d}.fits'
        fits.writeto(path, make_scenario(scenario, shape=(size, size),
                                         seed=seed)['image'])
        paths.append(str(path))
    return paths


def _run(argv):
    """Run ``cnnfind`` quietly; return (status, seconds)."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()) as err:
        status = cli.main(argv)
    seconds = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f'cnnfind {" ".join(argv)} failed:\n{err.getvalue()}')
    return seconds


def _identical(dir1, dir2, paths):
    for path in paths:
        name = Path(path).with_suffix('.ecsv').name
        t1, t2 = Table.read(Path(dir1) / name), Table.read(Path(dir2) / name)
        if t1.colnames != t2.colnames or len(t1) != len(t2):
            return False
        for col in t1.colnames:
            a, b = np.asarray(t1[col]), np.asarray(t2[col])
            if not np.array_equal(a, b, equal_nan=a.dtype.kind == 'f'):
                return False
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--n', type=int, default=8, help='number of images')
    parser.add_argument('--size', type=int, default=1024, help='image side')
    parser.add_argument('--scenario', default='realistic',
                        help='cnnfind.simulation scenario (default: realistic)')
    parser.add_argument('--workers', type=int, default=2,
                        help='--jobs and Dask workers (default: 2)')
    parser.add_argument('--repeat', type=int, default=3,
                        help='runs per mode (default: 3)')
    parser.add_argument('--no-dask', action='store_true',
                        help='skip the Dask LocalCluster')
    args = parser.parse_args(argv)

    print('command: python benchmarks/bench_batch.py '
          + ' '.join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    print(f'python {platform.python_version()}, {platform.machine()}, '
          f'{os.cpu_count()} CPU cores, load average at start: '
          + ', '.join(f'{x:.2f}' for x in os.getloadavg()))

    modes = ['serial (this process)', f'--jobs {args.workers}']
    extra = {modes[0]: [], modes[1]: ['--jobs', str(args.workers)]}
    times = {m: [] for m in modes}
    same = {m: True for m in modes}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        paths = _write_fields(tmp, args.n, args.size, args.scenario)
        base = ['find', *paths, '--device', 'cpu']
        if not args.no_dask:
            try:
                from distributed import LocalCluster
            except ImportError:
                print('dask.distributed is not installed: Dask rows skipped')
            else:
                t0 = time.perf_counter()
                cluster = stack.enter_context(LocalCluster(
                    processes=True, n_workers=args.workers,
                    threads_per_worker=1, host='127.0.0.1',
                    dashboard_address=None))
                print('(LocalCluster start-up, not counted: '
                      f'{time.perf_counter() - t0:.1f} s)')
                name = f'Dask LocalCluster {args.workers}x1'
                modes.append(name)
                extra[name] = ['--scheduler', cluster.scheduler_address]
                times[name], same[name] = [], True
        serial = os.path.join(tmp, 'serial')
        # the modes take turns, so that a change of the machine's load
        # during the run affects them alike
        for rep in range(args.repeat):
            for mode in modes:
                out = os.path.join(tmp, f'out{rep}-{modes.index(mode)}')
                if rep == 0 and mode == modes[0]:
                    out = serial
                times[mode].append(_run([*base, '-o', out, *extra[mode]]))
                same[mode] &= _identical(serial, out, paths)

    print(f'\n{args.n} images of {args.size}x{args.size} ({args.scenario}), '
          f'cnnfind find --device cpu, {args.repeat} runs per mode taken in '
          'turn\n')
    width = max(len(m) for m in modes)
    print(f'{"mode":<{width}}  {"first run":>9}  {"best run":>8}  '
          f'{"images/s":>8}  same tables as serial')
    print(f'{"-" * width}  {"-" * 9}  {"-" * 8}  {"-" * 8}  {"-" * 21}')
    for mode in modes:
        first, best = times[mode][0], min(times[mode])
        print(f'{mode:<{width}}  {first:8.2f}s  {best:7.2f}s  '
              f'{args.n / best:8.2f}  {"yes" if same[mode] else "NO"}')
    print('\nimages/s from the best run; the first run of each mode '
          'includes loading\nthe model (serial, Dask) or starting the '
          'worker processes (--jobs, every run).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
