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


def test_legacypipe_cutout_with_gaia(shared_data):
    case = shared_data / 'real' / 'legacypipe-testcases' / 'testcase3'
    images = sorted(case.glob('images/**/*ooi*.fits'))
    assert images
    with fits.open(images[0]) as hdul:
        hdu = next(h for h in hdul if h.data is not None)
        wcs = WCS(hdu.header)
        shape = hdu.data.shape
    gaia = vstack([Table.read(p) for p in sorted(case.glob('gaia/*.fits'))])
    coords = SkyCoord(gaia['ra'], gaia['dec'], unit='deg')
    x, y = wcs.world_to_pixel(coords)
    inside = (x > -0.5) & (x < shape[1] - 0.5) & (y > -0.5) & (
        y < shape[0] - 0.5)
    assert inside.any()
    target, weight = heatmap_from_catalog(shape, coords, wcs=wcs)
    assert target.shape == shape
    assert int((target == 1.0).sum()) == int(inside.sum())
