"""
The catalogue object behind `~cnnfind.CNNStarFinder` tables.
"""

import numpy as np
from photutils.detection import StarFinderCatalogBase

__all__ = []

_COLUMNS = ('id', 'x_centroid', 'y_centroid', 'sharpness', 'roundness1',
            'roundness2', 'n_pixels', 'peak', 'flux', 'mag', 'daofind_mag',
            'probability')


class _CNNStarFinderCatalog(StarFinderCatalogBase):
    """
    Measured sources; `to_table` emits DAOStarFinder's columns (with
    photutils 3.0's answers to the old names ``xcentroid``,
    ``ycentroid`` and ``npix``) plus ``probability``.
    """

    def __init__(self, x, y, probability, columns, *, n_pixels, unit=None,
                 kernel=None):
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        self.values = {
            'x_centroid': x, 'y_centroid': y,
            'sharpness': np.asarray(columns['sharpness'], float),
            'roundness1': np.asarray(columns['roundness1'], float),
            'roundness2': np.asarray(columns['roundness2'], float),
            'peak': np.asarray(columns['peak'], float),
            'flux': np.asarray(columns['flux'], float),
            'daofind_mag': np.asarray(columns['daofind_mag'], float),
            'probability': np.asarray(probability, float),
            'conv_peak': np.asarray(columns.get('conv_peak',
                                                np.zeros(len(x))), float),
            'saturated': np.asarray(columns.get('saturated',
                                                np.zeros(len(x), bool)), bool),
        }
        dummy = np.zeros((1, 1)) if unit is None else np.zeros((1, 1)) * unit
        super().__init__(dummy, np.column_stack([x, y]).reshape(-1, 2),
                         kernel if kernel is not None else _Shape())
        self._n_pixels = int(n_pixels)
        self.unit = unit
        self.default_columns = _COLUMNS
        for name in ('sharpness', 'roundness1', 'roundness2', 'daofind_mag',
                     'probability'):
            setattr(self, name, self.values[name])
        for name in ('peak', 'flux'):
            val = self.values[name]
            setattr(self, name, val if unit is None else val * unit)
        with np.errstate(divide='ignore', invalid='ignore'):
            self.mag = -2.5 * np.log10(self.values['flux'])
        self.n_pixels = np.full(len(x), self._n_pixels)
        self.id = np.arange(1, len(x) + 1)

    @property
    def x_centroid(self):
        """Fitted x centroids (0-based pixels)."""
        return self.values['x_centroid']

    @property
    def y_centroid(self):
        """Fitted y centroids (0-based pixels)."""
        return self.values['y_centroid']

    def __len__(self):
        return len(self.values['x_centroid'])

    @property
    def flux_value(self):
        """Fluxes without units."""
        return self.values['flux']

    def select(self, index):
        """A new catalogue with the rows ``index`` (ids renumbered)."""
        index = np.asarray(index)
        cols = {k: v[index] for k, v in self.values.items()}
        return _CNNStarFinderCatalog(
            cols['x_centroid'], cols['y_centroid'], cols['probability'],
            cols, n_pixels=self._n_pixels, unit=self.unit)

    def apply_filters(self):
        """Filters are applied by the finder; nothing more to do."""
        return self


class _Shape:
    """Minimal kernel stand-in (the base class only reads ``shape``)."""

    shape = (1, 1)
