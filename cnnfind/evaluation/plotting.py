# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Diagnostic plots: detections over an image, probability heatmaps and
completeness curves.

matplotlib is optional: it is imported only inside these functions.
Each function draws on ``ax`` if given, otherwise on a new figure made
with `matplotlib.pyplot.subplots`, and returns the axes.
"""

import numpy as np

from cnnfind.evaluation._tables import _as_float_arrays, _table_xy

__all__ = ['plot_detections', 'plot_heatmap', 'plot_completeness']


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt
        _, ax = plt.subplots()
    return ax


def plot_detections(image, table, ax=None, truth=None, *, radius=None,
                    color='tab:orange', truth_color='tab:cyan'):
    """
    Show an image with circles at the detections (and true positions).

    Parameters
    ----------
    image : 2D array_like
        The image, shown with a z-scale asinh stretch. Non-finite pixels
        are blank.
    table : `~astropy.table.Table` or `None`
        Detections with ``x_centroid``/``y_centroid`` (or
        ``xcentroid``/``ycentroid``, ``x``/``y``) columns.
    ax : `matplotlib.axes.Axes`, optional
        Axes to draw on.
    truth : `~astropy.table.Table`, dict or tuple, optional
        True positions (a table, a dict with ``x`` and ``y`` such as the
        ``stars`` of a simulation, or an ``(x, y)`` pair), drawn as
        small crosses.
    radius : float, optional
        Circle radius in pixels; default scales with the image size.
    color, truth_color : str
        Colours of the circles and crosses.

    Returns
    -------
    ax : `matplotlib.axes.Axes`

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use('Agg')
    >>> import numpy as np
    >>> from astropy.table import Table
    >>> from cnnfind.evaluation import plot_detections
    >>> ax = plot_detections(np.random.default_rng(0).normal(size=(64, 64)),
    ...                      Table({'x_centroid': [10.0], 'y_centroid': [20.0]}))
    >>> len(ax.patches)
    1
    """
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval
    from matplotlib.patches import Circle

    ax = _axes(ax)
    data = np.asarray(image, dtype=float)
    shown = np.where(np.isfinite(data), data, np.nan)
    finite = shown[np.isfinite(shown)]
    norm = None
    if finite.size and np.ptp(finite) > 0:
        norm = ImageNormalize(finite, interval=ZScaleInterval(),
                              stretch=AsinhStretch())
    ax.imshow(shown, origin='lower', cmap='Greys_r', norm=norm,
              interpolation='nearest')
    if radius is None:
        radius = max(3.0, max(data.shape) / 150.0)
    x, y = _table_xy(table)
    for xi, yi in zip(x, y, strict=True):
        ax.add_patch(Circle((xi, yi), radius, fill=False, edgecolor=color,
                            linewidth=0.8))
    if truth is not None:
        if hasattr(truth, 'colnames'):
            tx, ty = _table_xy(truth)
        elif isinstance(truth, dict):
            tx, ty = _as_float_arrays(truth['x'], truth['y'])
        else:
            tx, ty = _as_float_arrays(truth[0], truth[1])
        ax.plot(tx, ty, '+', color=truth_color, markersize=4, linestyle='none')
    ax.set_xlim(-0.5, data.shape[1] - 0.5)
    ax.set_ylim(-0.5, data.shape[0] - 0.5)
    ax.set_title(f'{len(x)} detections')
    return ax


def plot_heatmap(heatmap, ax=None, *, vmin=0.0, vmax=1.0, cmap='magma',
                 colorbar=True, label='probability'):
    """
    Show a per-pixel map, e.g. a network's source probability.

    Parameters
    ----------
    heatmap : 2D array_like
        The map.
    ax : `matplotlib.axes.Axes`, optional
        Axes to draw on.
    vmin, vmax : float
        Colour scale limits.
    cmap : str
        Colour map.
    colorbar : bool
        Add a colour bar.
    label : str
        Colour bar label.

    Returns
    -------
    ax : `matplotlib.axes.Axes`

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use('Agg')
    >>> import numpy as np
    >>> from cnnfind.evaluation import plot_heatmap
    >>> ax = plot_heatmap(np.zeros((32, 32)))
    >>> len(ax.images)
    1
    """
    ax = _axes(ax)
    im = ax.imshow(np.asarray(heatmap, dtype=float), origin='lower',
                   cmap=cmap, vmin=vmin, vmax=vmax, interpolation='nearest')
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label=label)
    return ax


def plot_completeness(bins, completeness, ax=None, label=None, *,
                      xlabel='SNR', logx=True):
    """
    Plot completeness against a binned source property.

    Parameters
    ----------
    bins : array_like
        Bin edges (one more than ``completeness``) or bin centres (as
        many). Infinite upper edges are drawn as twice the last finite
        edge.
    completeness : array_like
        Completeness per bin (NaN bins are skipped).
    ax : `matplotlib.axes.Axes`, optional
        Axes to draw on.
    label : str, optional
        Legend label of the curve.
    xlabel : str
        Label of the x axis.
    logx : bool
        Logarithmic x axis.

    Returns
    -------
    ax : `matplotlib.axes.Axes`

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use('Agg')
    >>> from cnnfind.evaluation import plot_completeness
    >>> ax = plot_completeness([3, 5, 10, 20], [0.2, 0.7, 1.0], label='DAO')
    >>> len(ax.lines)
    1
    """
    ax = _axes(ax)
    bins = np.asarray(bins, dtype=float)
    comp = np.asarray(completeness, dtype=float)
    if bins.size == comp.size + 1:
        edges = bins.copy()
        finite = edges[np.isfinite(edges)]
        edges[~np.isfinite(edges)] = 2.0 * finite.max() if finite.size else 1.0
        centres = (np.sqrt(edges[:-1] * edges[1:])
                   if logx and np.all(edges > 0)
                   else 0.5 * (edges[:-1] + edges[1:]))
    elif bins.size == comp.size:
        centres = bins
    else:
        msg = ('bins must be edges (len(completeness) + 1) or centres '
               '(len(completeness))')
        raise ValueError(msg)
    ok = np.isfinite(comp)
    ax.plot(centres[ok], comp[ok], 'o-', label=label)
    if logx:
        ax.set_xscale('log')
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel('completeness')
    if label is not None:
        ax.legend()
    return ax
