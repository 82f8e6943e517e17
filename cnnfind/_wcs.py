# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Sky positions for the tools' tables when the input carries a WCS.
"""

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.nddata import NDData

__all__ = []


def _add_sky_centroid(table, data):
    """
    Add a ``sky_centroid`` column (`~astropy.coordinates.SkyCoord`, as in
    photutils' ``SourceCatalog``) computed from ``x_centroid`` and
    ``y_centroid`` when ``data`` is an `~astropy.nddata.NDData` with a
    celestial WCS; otherwise return ``table`` unchanged.
    """
    wcs = data.wcs if isinstance(data, NDData) else None
    if table is None or wcs is None or 'x_centroid' not in table.colnames:
        return table
    x = np.asarray(getattr(table['x_centroid'], 'value', table['x_centroid']),
                   float)
    y = np.asarray(getattr(table['y_centroid'], 'value', table['y_centroid']),
                   float)
    sky = wcs.pixel_to_world(x, y)
    if isinstance(sky, SkyCoord):
        table['sky_centroid'] = sky
    return table
