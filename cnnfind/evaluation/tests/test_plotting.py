# Licensed under a 3-clause BSD style license - see LICENSE.rst
import numpy as np
import pytest
from astropy.table import Table

from cnnfind.evaluation import plot_completeness, plot_detections, plot_heatmap

mpl = pytest.importorskip('matplotlib')
mpl.use('Agg')


@pytest.fixture
def ax():
    from matplotlib.figure import Figure
    return Figure().subplots()


def test_plot_detections(ax):
    image = np.random.default_rng(0).normal(size=(50, 60))
    image[3, 3] = np.nan
    table = Table({'xcentroid': [5.0, 20.0], 'ycentroid': [7.0, 30.0]})
    out = plot_detections(image, table, ax=ax,
                          truth={'x': [5.0], 'y': [7.0]})
    assert out is ax
    assert len(ax.patches) == 2 and len(ax.lines) == 1
    assert ax.get_xlim() == (-0.5, 59.5)
    plot_detections(image, None, ax=ax)  # nothing found is fine


def test_plot_heatmap(ax):
    plot_heatmap(np.random.default_rng(0).random((20, 20)), ax=ax)
    assert len(ax.images) == 1


def test_plot_completeness(ax):
    plot_completeness([3, 5, 10, 20, np.inf], [0.1, np.nan, 0.9, 1.0], ax=ax,
                      label='x')
    (line,) = ax.lines
    assert len(line.get_xdata()) == 3
    with pytest.raises(ValueError, match='edges'):
        plot_completeness([1, 2, 3, 4, 5], [0.5, 0.5], ax=ax)
