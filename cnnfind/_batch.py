# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Run one tool over many files: in this process, in local worker processes
(``--jobs N``) or on a Dask cluster (``--scheduler ADDRESS``).

A batch is described by a `Task`: a module-level ``setup`` function that
builds the tool (a finder, denoiser, ...) from keyword arguments, and a
module-level ``process(tool, item)`` function that handles one input file
and returns a `FileResult`. Both are pickled by reference, so worker
processes import them; each worker builds its tool once (`worker_tool`
keeps it, keyed by the setup arguments) and so reuses its onnxruntime
session for every file it is given.

One failing file never stops the batch: the error is caught where the file
is processed, reported with the file's name, and counted in the summary.
The exit status follows the ``cnnfind`` convention: `EXIT_OK` when every
file was processed, `EXIT_FAILED` when any failed and `EXIT_USAGE` for a
bad command line (including a scheduler that cannot be reached).

Nothing heavy is imported at module level: ``cnnfind --help`` stays fast.
"""

import collections
import contextlib
import os
import sys
import threading
from dataclasses import dataclass, field

__all__ = []

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Environment variables that set the thread count of the BLAS/OpenMP
#: libraries; set to 1 in worker processes so that N workers use N cores.
_THREAD_VARIABLES = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS',
                     'MKL_NUM_THREADS', 'VECLIB_MAXIMUM_THREADS',
                     'NUMEXPR_NUM_THREADS')

#: Tools kept per worker process (the newest ones).
_MAX_TOOLS = 4


class CLIError(Exception):
    """An error about one input, carrying a message meant for the user."""


@dataclass
class FileResult:
    """
    What processing one file gave.

    Attributes
    ----------
    written : list of str
        Files written.
    count : int or `None`
        Number of things found (sources, stars, galaxies) or `None`.
    payload : object
        Anything the caller gathers from all files (e.g. table rows
        written together at the end); must be picklable.
    note : str
        Extra text for the per-file line.
    warnings : list of str
        The warnings raised while the file was processed (filled in by
        the runner; `~photutils.utils.exceptions.NoDetectionsWarning` is
        left out: an empty result says as much).
    """

    written: list = field(default_factory=list)
    count: int = None
    payload: object = None
    note: str = ''
    warnings: list = field(default_factory=list)


@dataclass(frozen=True)
class Task:
    """
    A batch job: how to build the tool and how to process one item.

    Parameters
    ----------
    setup : callable
        Module-level function; ``setup(**setup_kwargs)`` returns the tool.
    process : callable
        Module-level function; ``process(tool, item)`` returns a
        `FileResult` or raises (`CLIError` for a message meant as is).
    setup_kwargs : dict
        Keyword arguments of ``setup`` (picklable, with a stable `repr`).
    noun : str
        What ``FileResult.count`` counts, for the messages ('sources').
    verb : str
        What was done to a file, for the summary ('processed').
    """

    setup: object
    process: object
    setup_kwargs: dict = field(default_factory=dict)
    noun: str = ''
    verb: str = 'processed'

    def key(self):
        """Cache key of the tool: the setup function and its arguments."""
        items = tuple(sorted((k, repr(v)) for k, v in self.setup_kwargs.items()))
        return (self.setup.__module__, self.setup.__qualname__, items)


@dataclass
class Outcome:
    """The result of one input of a batch."""

    index: int
    item: object
    label: str
    ok: bool
    result: FileResult = None
    error: str = ''


# ---------------------------------------------------------------------------
# Output paths and options, checked once for every command
# ---------------------------------------------------------------------------

def check_output_dir(path):
    """
    Message for an output directory that cannot be used, else `None`.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        return f'output {path} exists and is not a directory'
    parent = _existing_parent(path)
    if parent is not None and not os.access(parent, os.W_OK):
        return f'output {path}: directory {parent} is not writable'
    return None


def check_output_file(path, suffixes):
    """
    Message for an output file that cannot be written, else `None`.
    """
    if not str(path).lower().endswith(tuple(suffixes)):
        return (f'output {path} must end with '
                + ' or '.join(repr(s) for s in suffixes))
    if os.path.isdir(path):
        return f'output {path} is a directory, not a file'
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        return f'output {path}: {parent} is not a directory'
    return check_output_dir(parent)


def _existing_parent(path):
    path = os.path.abspath(path)
    while path and not os.path.exists(path):
        new = os.path.dirname(path)
        if new == path:
            return None
        path = new
    return path if os.path.isdir(path) else None


def check_batch_options(jobs, scheduler):
    """Message for a bad ``--jobs``/``--scheduler`` pair, else `None`."""
    if jobs is not None and jobs < 1:
        return f'--jobs must be a positive integer, not {jobs}'
    if scheduler is not None and jobs not in (None, 1):
        return '--jobs and --scheduler cannot be combined (the cluster ' \
               'decides how many files run at once)'
    if scheduler is not None and not _have_distributed():
        return ('--scheduler needs dask.distributed; install it with '
                '\'pip install "cnnfind[dask]"\'')
    return None


def _have_distributed():
    import importlib.util
    return importlib.util.find_spec('distributed') is not None


def worker_threads(jobs, scheduler, threads=None):
    """
    onnxruntime threads per tool: ``threads`` if given, one when several
    files run at once (each worker then has about one core), else `None`
    (onnxruntime's own choice).
    """
    if threads is not None:
        return int(threads)
    if scheduler is not None or (jobs or 1) > 1:
        return 1
    return None


# ---------------------------------------------------------------------------
# The tool cache of a worker process
# ---------------------------------------------------------------------------

_TOOLS = collections.OrderedDict()
_TOOLS_LOCK = threading.Lock()


def worker_tool(task):
    """
    The tool of ``task`` in this process, built on first use.

    A Dask worker runs tasks in threads and lives across batches, so the
    cache is locked and keeps only the `_MAX_TOOLS` newest tools.
    """
    key = task.key()
    with _TOOLS_LOCK:
        tool = _TOOLS.get(key)
        if tool is None:
            tool = task.setup(**task.setup_kwargs)
            _TOOLS[key] = tool
            while len(_TOOLS) > _MAX_TOOLS:
                _TOOLS.popitem(last=False)
        else:
            _TOOLS.move_to_end(key)
    return tool


def _error_text(exc):
    if isinstance(exc, CLIError):
        return str(exc)
    return f'{type(exc).__name__}: {exc}'


def _run_with(tool, task, item):
    """``(True, FileResult)`` or ``(False, message)``; never raises."""
    import warnings
    try:
        # warnings are reported with the file they concern (a worker's own
        # would otherwise be lost or interleave with the progress bar)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            result = task.process(tool, item)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad file must not stop the batch
        return False, _error_text(exc)
    seen = []
    for w in caught:
        text = f'{w.category.__name__}: {w.message}'
        if w.category.__name__ != 'NoDetectionsWarning' and text not in seen:
            seen.append(text)
    result.warnings = seen
    return True, result


def run_in_worker(task, item):
    """Process one item in a worker process (local pool or Dask)."""
    try:
        tool = worker_tool(task)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return False, f'cannot set up the tool: {_error_text(exc)}'
    return _run_with(tool, task, item)


# ---------------------------------------------------------------------------
# Running a batch
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def _single_threaded_children():
    """Environment inherited by new worker processes: one BLAS thread."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    for name in _THREAD_VARIABLES:
        os.environ.setdefault(name, '1')
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _serial(task, items, tool):
    for i, item in enumerate(items):
        yield i, _run_with(tool, task, item)


def _local_pool(task, items, jobs):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # 'spawn': a fork of a process holding onnxruntime threads can hang
    context = multiprocessing.get_context('spawn')
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(items)),
                               mp_context=context)
    try:
        with _single_threaded_children():
            futures = {pool.submit(run_in_worker, task, item): i
                       for i, item in enumerate(items)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                yield i, fut.result()
            except Exception as exc:  # a worker died (e.g. out of memory)
                yield i, (False, f'worker process failed: {_error_text(exc)}')
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


#: Seconds to wait for a Dask scheduler to answer.
CONNECT_TIMEOUT = 10


def connect(scheduler, timeout=None):
    """
    A `distributed.Client` for ``scheduler`` (an address such as
    ``tcp://host:8786``, or the path of a scheduler JSON file).

    Raises
    ------
    CLIError
        If the scheduler cannot be reached.
    """
    from distributed import Client

    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    try:
        if str(scheduler).endswith('.json') and os.path.isfile(scheduler):
            return Client(scheduler_file=scheduler, timeout=timeout)
        return Client(scheduler, timeout=timeout)
    except Exception as exc:  # OSError, TimeoutError, ValueError, ...
        raise CLIError(f'cannot connect to the Dask scheduler {scheduler}: '
                       f'{_error_text(exc)}') from None


def _dask(task, items, client):
    import uuid

    from distributed import as_completed

    batch = uuid.uuid4().hex[:8]
    keys = [f'cnnfind-{batch}-{i}' for i in range(len(items))]
    futures = client.map(run_in_worker, [task] * len(items), items,
                         key=keys, pure=False)
    index = {fut.key: i for i, fut in zip(range(len(items)), futures)}
    try:
        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                yield i, fut.result()
            except Exception as exc:  # KilledWorker, lost connection, ...
                yield i, (False, f'Dask worker failed: {_error_text(exc)}')
    except BaseException:
        client.cancel(futures)
        raise


class _Printer:
    """Per-file lines, written around a tqdm bar when there is one."""

    def __init__(self, total, progress, desc):
        self.bar = None
        self.tqdm = None
        if not progress:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is optional: astropy's plain bar
            from astropy.utils.console import ProgressBar
            self.bar = ProgressBar(total, file=sys.stderr)
            return
        self.tqdm = tqdm
        self.bar = tqdm(total=total, desc=desc, unit='file', file=sys.stderr,
                        dynamic_ncols=True)

    def write(self, text, err=False):
        stream = sys.stderr if err else sys.stdout
        if self.tqdm is not None:
            self.tqdm.write(text, file=stream)
        else:
            print(text, file=stream)

    def step(self):
        if self.bar is not None:
            self.bar.update()

    def close(self):
        if self.tqdm is not None:
            self.bar.close()
        elif self.bar is not None:
            self.bar.__exit__(None, None, None)


def _describe(result, noun):
    parts = []
    if result.count is not None and noun:
        parts.append(f'{result.count} {noun}')
    if result.written:
        parts.append(('-> ' if parts else 'wrote ') + ', '.join(result.written))
    if result.note:
        parts.append(result.note)
    return ' '.join(parts) or 'done'


def run_batch(task, items, labels=None, *, jobs=1, scheduler=None,
              progress=False, tool=None, client=None, command='cnnfind'):
    """
    Process every item, report each file and return the outcomes.

    Parameters
    ----------
    task : `Task`
        What to run.
    items : list
        One picklable item per input file (passed to ``task.process``).
    labels : list of str, optional
        The file names used in the messages (default: ``str(item)``).
    jobs : int, optional
        Worker processes on this machine (1: in this process).
    scheduler : str or `None`, optional
        Dask scheduler address: run on that cluster instead.
    progress : bool, optional
        Show a tqdm progress bar over files.
    tool : object, optional
        The tool, already built, for a run in this process.
    client : `distributed.Client`, optional
        An open client to use instead of connecting to ``scheduler``.
    command : str
        Name used in error messages ('cnnfind find').

    Returns
    -------
    outcomes : list of `Outcome`
        In the order of ``items``.

    Raises
    ------
    CLIError
        If the Dask scheduler cannot be reached.
    """
    items = list(items)
    labels = [str(x) for x in items] if labels is None else list(labels)
    outcomes = [None] * len(items)
    own_client = False
    if scheduler is not None or client is not None:
        if client is None:
            client = connect(scheduler)
            own_client = True
        stream = _dask(task, items, client)
    elif jobs > 1 and len(items) > 1:
        stream = _local_pool(task, items, jobs)
    else:
        if tool is None:
            tool = task.setup(**task.setup_kwargs)
        stream = _serial(task, items, tool)

    printer = _Printer(len(items), progress, command)
    n = len(items)
    try:
        for i, (ok, value) in stream:
            prefix = f'[{i + 1}/{n}] {labels[i]}'
            if ok:
                outcomes[i] = Outcome(i, items[i], labels[i], True, result=value)
                printer.write(f'{prefix}: {_describe(value, task.noun)}')
                for text in value.warnings:
                    printer.write(f'  warning: {text}', err=True)
            else:
                outcomes[i] = Outcome(i, items[i], labels[i], False, error=value)
                printer.write(f'{prefix}: FAILED: {value}', err=True)
            printer.step()
    finally:
        stream.close()  # stops the pool or cancels the Dask futures early
        printer.close()
        if own_client:
            client.close()
    return outcomes


def summarize(task, outcomes, what='images'):
    """
    Print the summary (and the failed files) and return the exit status.
    """
    n = len(outcomes)
    failed = [o for o in outcomes if not o.ok]
    line = f'\nSummary: {n - len(failed)} of {n} {what} {task.verb}'
    counts = [o.result.count for o in outcomes
              if o.ok and o.result.count is not None]
    if task.noun and counts:
        line += f', {sum(counts)} {task.noun} in all'
    print(f'{line}; {len(failed)} failed.')
    if failed:
        print(f'Failed {what}:', file=sys.stderr)
        for o in failed:
            text = (o.error if o.error.startswith(f'{o.label}:')
                    else f'{o.label}: {o.error}')
            print(f'  {text}', file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
