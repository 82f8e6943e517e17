"""
Source positions from finder tables (photutils 3 or older column
names) or plain arrays.
"""

import numpy as np
from astropy.table import Table

from cnnfind._columns import _candidate_xy

__all__ = []


def positions_xy(positions):
    """
    ``(N, 2)`` float array of ``(x, y)`` from a table or an array.

    Parameters
    ----------
    positions : `~astropy.table.Table`, ``(N, 2)`` array-like
        A table with x/y columns under photutils 3 names
        (``x_centroid``, ``y_centroid``), older names (``xcentroid``,
        ``ycentroid``), PSF-fit names (``x_fit``, ``x_0``...) or
        ``x``/``y``; or an array.

    Raises
    ------
    ValueError
        If no position columns are found or the array is not ``(N, 2)``.
    """
    if isinstance(positions, Table):
        return np.column_stack(_candidate_xy(positions, 'positions'))
    xy = np.asarray(positions, dtype=float)
    if xy.ndim == 1 and xy.size == 2:
        xy = xy[None]
    if xy.ndim != 2 or xy.shape[1] != 2:
        msg = f'positions must be an (N, 2) array of (x, y), not {xy.shape}'
        raise ValueError(msg)
    return xy
