"""Shared fixtures for the cnnfind test suite."""

from pathlib import Path

import numpy as np
import pytest

from cnnfind.simulation import FieldConfig, render_profiles, simulate_field

#: Diagnostics that tests add for the end of the run (pytest captures
#: what a test writes, and shows it only when the test fails, not when
#: an expected failure happens).
END_OF_RUN_REPORTS = []


def pytest_terminal_summary(terminalreporter):
    for report in END_OF_RUN_REPORTS:
        terminalreporter.write_sep('-', 'diagnostics')
        terminalreporter.write_line(report)

#: The shared real data beside the project root (absent from an sdist).
SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'


@pytest.fixture(scope='session')
def shared_data():
    """The shared data folder, or skip the test."""
    if not SHARED_DATA.is_dir():
        pytest.skip('../shared/data is not available')
    return SHARED_DATA


@pytest.fixture(scope='session')
def sparse_field():
    """A seeded 192x192 field of bright-ish stars (sky subtracted)."""
    sim = simulate_field((192, 192), FieldConfig(density=900, fwhm=3.0,
                                                 snr_min=8.0), seed=11)
    sim['data'] = sim['image'] - np.median(sim['image'])
    return sim


def single_star(shape=(48, 48), x=23.3, y=24.6, flux=3000.0, fwhm=3.0,
                noise=1.0, seed=0):
    """An image with one Gaussian star in white noise."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, noise, shape)
    render_profiles(img, [x], [y], [flux], fwhm, kind='gaussian')
    return img


def simple_wcs(shape):
    """A celestial TAN WCS centred on an image of ``shape``."""
    from astropy.wcs import WCS
    w = WCS(naxis=2)
    w.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-1e-4, 1e-4]
    return w


def assert_sky_centroid(table, wcs):
    """``sky_centroid`` is the WCS position of (x_centroid, y_centroid)."""
    import numpy as np
    from astropy.coordinates import SkyCoord
    assert isinstance(table['sky_centroid'], SkyCoord)
    x = np.asarray(getattr(table['x_centroid'], 'value', table['x_centroid']))
    y = np.asarray(getattr(table['y_centroid'], 'value', table['y_centroid']))
    expect = wcs.pixel_to_world(x, y)
    assert np.all(table['sky_centroid'].separation(expect).arcsec < 1e-6)
