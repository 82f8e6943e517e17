"""
The training command recorded in a model card: the options that differ
from their defaults, so that the command reproduces the run.
"""

import numpy as np

__all__ = ['non_default_options']


def non_default_options(args, parser, names):
    """
    The command-line form of the options ``names`` whose value in
    ``args`` differs from ``parser``'s default.

    Parameters
    ----------
    args : `argparse.Namespace`
        The parsed options.
    parser : `argparse.ArgumentParser`
        The parser that made them (for the defaults).
    names : sequence of str
        Destination names (``'batch_size'`` is ``--batch-size``), in the
        order they are to appear.

    Returns
    -------
    options : list of str
        ``'--flag value'`` (several values separated by spaces), or
        ``'--flag'`` alone for a switch that is on.

    Examples
    --------
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument('--batch-size', type=int, default=16)
    >>> _ = p.add_argument('--no-real', action='store_true')
    >>> non_default_options(p.parse_args(['--batch-size', '32', '--no-real']),
    ...                     p, ['batch_size', 'no_real'])
    ['--batch-size 32', '--no-real']
    >>> non_default_options(p.parse_args([]), p, ['batch_size', 'no_real'])
    []
    """
    out = []
    for name in names:
        value = getattr(args, name)
        if list(np.atleast_1d(value)) == list(np.atleast_1d(
                parser.get_default(name))):
            continue
        flag = '--' + name.replace('_', '-')
        if value is True:
            out.append(flag)
        else:
            out.append(f'{flag} ' + ' '.join(str(v) for v in
                                             np.atleast_1d(value)))
    return out
