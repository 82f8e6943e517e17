"""AstrID-style training targets from an image WCS and a catalogue."""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.wcs import WCS

from cnnfind.training.targets import heatmap_from_catalog


def test_pixel_positions_and_ignore():
    t, w = heatmap_from_catalog((40, 40), np.array([[5.0, 6.0], [30.2, 8.9]]),
                                ignore=np.array([[20.0, 20.0]]))
    assert t[6, 5] == 1.0 and t[9, 30] == 1.0
    assert w[20, 20] == 0.0
    assert w[6, 5] > w[0, 0] == 1.0


def test_sky_positions_need_wcs():
    with pytest.raises(ValueError, match='WCS'):
        heatmap_from_catalog((10, 10), SkyCoord(10, 20, unit='deg'))


def _cutouts_with_gaia(root):
    """(shape, wcs, gaia coords) for each legacypipe image cutout."""
    for case in sorted(root.iterdir()):
        chunks = sorted(case.glob('gaia/*.fits'))
        if not chunks:
            continue
        gaia = vstack([Table.read(p) for p in chunks])
        coords = SkyCoord(gaia['ra'], gaia['dec'], unit='deg')
        for path in sorted(case.glob('images/**/*ooi*.fits')):
            with fits.open(path) as hdul:
                hdu = next(h for h in hdul if h.data is not None)
                yield hdu.data.shape, WCS(hdu.header), coords


def test_legacypipe_cutouts_with_gaia(shared_data):
    n_stars = 0
    for shape, wcs, coords in _cutouts_with_gaia(
            shared_data / 'real' / 'legacypipe-testcases'):
        x, y = wcs.world_to_pixel(coords)
        inside = (x > -0.5) & (x < shape[1] - 0.5) & (y > -0.5) & (
            y < shape[0] - 0.5)
        target, _ = heatmap_from_catalog(shape, coords, wcs=wcs)
        assert target.shape == shape
        assert int((target == 1.0).sum()) == int(inside.sum())
        n_stars += int(inside.sum())
    assert n_stars > 0
