# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Read source positions out of a user's table, whatever photutils version
or tool made it (shared by PSFStarSelector and GalaxyMorphClassifier).
"""

import numpy as np

__all__ = []

#: Accepted position columns, in order of preference: photutils >= 3,
#: photutils < 3, PSF-photometry fits and initial guesses, plain x/y.
X_NAMES = ('x_centroid', 'xcentroid', 'x_fit', 'x_0', 'x_init', 'xcenter',
           'x')
Y_NAMES = ('y_centroid', 'ycentroid', 'y_fit', 'y_0', 'y_init', 'ycenter',
           'y')


def _values(col):
    col = getattr(col, 'value', col)
    if np.ma.isMaskedArray(col):
        col = np.ma.filled(col.astype(float), np.nan)
    return np.asarray(col, dtype=float)


def _candidate_xy(table, what='candidates'):
    """
    ``x, y`` arrays from ``table``, or a clear error naming ``what``.

    Raises
    ------
    TypeError
        If ``table`` has no columns.
    ValueError
        If no known pair of position columns is present.
    """
    names = getattr(table, 'colnames', None)
    if names is None:
        msg = (f'{what} must be a table (e.g. an astropy Table or '
               f'QTable) with x/y position columns, not {type(table)!r}')
        raise TypeError(msg)
    for xn, yn in zip(X_NAMES, Y_NAMES, strict=True):
        if xn in names and yn in names:
            return _values(table[xn]), _values(table[yn])
    msg = (f'{what} table has no position columns; expected one of the '
           f'pairs {list(zip(X_NAMES, Y_NAMES, strict=True))}, got {names}')
    raise ValueError(msg)
