# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Private helpers to read positions out of the catalogues that the
different finders return.
"""

import numpy as np

__all__ = []

_X_NAMES = ('x_centroid', 'xcentroid', 'x')
_Y_NAMES = ('y_centroid', 'ycentroid', 'y')


def _column(table, names):
    """The first of ``names`` present in ``table`` as a float array."""
    for name in names:
        if name in table.colnames:
            col = table[name]
            return np.asarray(getattr(col, 'value', col), dtype=float)
    msg = f'table has none of the columns {names}'
    raise KeyError(msg)


def _table_xy(table):
    """
    Positions from a finder's table.

    ``table`` may be `None` (what a photutils finder returns when it
    finds nothing); columns ``x_centroid``/``y_centroid`` (photutils 3),
    ``xcentroid``/``ycentroid`` (photutils < 3) or ``x``/``y`` are
    accepted.
    """
    if table is None or len(table) == 0:
        return np.zeros(0), np.zeros(0)
    return _column(table, _X_NAMES), _column(table, _Y_NAMES)


def _as_float_arrays(*arrays):
    """1D float copies of the inputs, checked to have matching lengths."""
    out = [np.atleast_1d(np.asarray(getattr(a, 'value', a), dtype=float))
           for a in arrays]
    return out


def _check_pair(x, y, what):
    """Raise if two coordinate arrays do not have the same shape."""
    if x.shape != y.shape or x.ndim != 1:
        msg = (f'{what} x and y must be 1D arrays of the same length; got '
               f'shapes {x.shape} and {y.shape}')
        raise ValueError(msg)
