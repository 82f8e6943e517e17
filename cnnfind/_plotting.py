# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Small private plotting helpers (used by the command-line interface).

matplotlib is an optional dependency (``pip install cnnfind[plot]``), so it is
only imported inside the functions.
"""

import numpy as np

from cnnfind.evaluation._tables import _X_NAMES, _Y_NAMES, _column

__all__ = []



def _save_overlay(data, table, path, title=None, radius=None, dpi=150):
    """
    Save a PNG of ``data`` with circles drawn at the detected sources.

    Parameters
    ----------
    data : 2D array-like
        The image. Non-finite pixels are shown in the background colour.
    table : `~astropy.table.Table` or `None`
        Detections with ``x_centroid``/``y_centroid`` columns (``xcentroid`` /
        ``ycentroid`` are accepted too). `None` or an empty table draws
        the image only.
    path : str or path-like
        Output file name (the format follows from the extension, normally
        ``.png``).
    title : str, optional
        Axes title. The number of detections is appended.
    radius : float, optional
        Circle radius in pixels. Defaults to a size that stays visible for
        both small and large images.
    dpi : int, optional
        Resolution of the saved figure.

    Returns
    -------
    path : str
        The path written.
    """
    # The object-oriented Figure API needs no pyplot and no display: it
    # renders with Agg whatever backend the caller has selected.
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    data = np.asarray(data, dtype=float)
    finite = np.isfinite(data)
    shown = np.where(finite, data, np.nan)
    if finite.any():
        norm = ImageNormalize(data[finite], interval=ZScaleInterval(),
                              stretch=AsinhStretch())
    else:
        norm = None

    ny, nx = data.shape
    scale = 6.0 / max(nx, ny)
    fig = Figure(figsize=(max(nx * scale, 3.0) + 0.6, max(ny * scale, 3.0) + 0.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(shown, origin='lower', cmap='Greys_r', norm=norm,
              interpolation='nearest')

    n_sources = 0
    if table is not None and len(table) > 0:
        x = _column(table, _X_NAMES)
        y = _column(table, _Y_NAMES)
        good = np.isfinite(x) & np.isfinite(y)
        n_sources = int(good.sum())
        if radius is None:
            radius = max(3.0, 0.01 * max(nx, ny))
        for xi, yi in zip(x[good], y[good]):
            ax.add_patch(Circle((xi, yi), radius, fill=False, lw=0.8,
                                edgecolor='tab:orange'))

    label = f'{n_sources} source{"s" if n_sources != 1 else ""}'
    ax.set_title(f'{title} ({label})' if title else label, fontsize=9)
    ax.set_xlabel('x [pixel]')
    ax.set_ylabel('y [pixel]')
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return str(path)
