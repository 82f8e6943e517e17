"""
Source positions from finder tables (photutils 3 or older column
names) or plain arrays.
"""

import numpy as np
from astropy.table import Table

__all__ = []

#: Column-name pairs accepted for positions, in order of preference.
POSITION_COLUMNS = (('x_centroid', 'y_centroid'), ('xcentroid', 'ycentroid'),
                    ('x_fit', 'y_fit'), ('x', 'y'))


def positions_xy(positions):
    """
    ``(N, 2)`` float array of ``(x, y)`` from a table or an array.

    Parameters
    ----------
    positions : `~astropy.table.Table`, ``(N, 2)`` array-like
        A table with x/y columns under photutils 3 names
        (``x_centroid``, ``y_centroid``), older names (``xcentroid``,
        ``ycentroid``), ``x_fit``/``y_fit`` or ``x``/``y``; or an array.

    Raises
    ------
    ValueError
        If no position columns are found or the array is not ``(N, 2)``.
    """
    if isinstance(positions, Table):
        names = set(positions.colnames)
        for xname, yname in POSITION_COLUMNS:
            if xname in names and yname in names:
                x = np.asarray(getattr(positions[xname], 'value',
                                       positions[xname]), float)
                y = np.asarray(getattr(positions[yname], 'value',
                                       positions[yname]), float)
                return np.column_stack([x, y])
        msg = ('positions table has no x/y columns: expected one of '
               f'{POSITION_COLUMNS}, got {positions.colnames}')
        raise ValueError(msg)
    xy = np.asarray(positions, dtype=float)
    if xy.ndim == 1 and xy.size == 2:
        xy = xy[None]
    if xy.ndim != 2 or xy.shape[1] != 2:
        msg = f'positions must be an (N, 2) array of (x, y), not {xy.shape}'
        raise ValueError(msg)
    return xy
