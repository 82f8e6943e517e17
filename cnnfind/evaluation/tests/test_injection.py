# Licensed under a 3-clause BSD style license - see LICENSE.rst
import warnings

import numpy as np
import pytest
from astropy.table import Table

from cnnfind.evaluation import inject_stars, injection_recovery
from cnnfind.simulation import psf_sum_squares, render_profiles


@pytest.fixture
def noise_image():
    return np.random.default_rng(0).normal(100.0, 4.0, (160, 160))


def test_inject_flux_and_snr(noise_image):
    new, truth = inject_stars(noise_image, 10, fwhm=3.0,
                              snr_range=(20.0, 40.0), seed=1, noise=4.0)
    assert len(truth) == 10
    assert np.all((truth['snr'] >= 20) & (truth['snr'] <= 40))
    ss = psf_sum_squares(3.0)
    np.testing.assert_allclose(truth['flux'],
                               truth['snr'] * 4.0 / np.sqrt(ss))
    added = new - noise_image
    # Flux is conserved (margin keeps the stars inside the frame; only
    # the far Moffat wings can leave it).
    assert added.sum() == pytest.approx(truth['flux'].sum(), rel=0.02)
    # The input is untouched and the noise estimate is automatic.
    new2, truth2 = inject_stars(noise_image, 10, fwhm=3.0,
                                snr_range=(20.0, 40.0), seed=1)
    np.testing.assert_allclose(truth2['flux'], truth['flux'], rtol=0.05)


def test_inject_positions(noise_image):
    new, truth = inject_stars(np.zeros((160, 160)), 8, fwhm=3.0, seed=3,
                              noise=1.0, snr_range=(50, 50),
                              psf='gaussian')
    for row in truth:
        i, j = int(round(row['x'])), int(round(row['y']))
        stamp = new[j - 4:j + 5, i - 4:i + 5]
        yy, xx = np.mgrid[j - 4:j + 5, i - 4:i + 5]
        cx = (stamp * xx).sum() / stamp.sum()
        cy = (stamp * yy).sum() / stamp.sum()
        assert abs(cx - row['x']) < 0.05 and abs(cy - row['y']) < 0.05
    d = np.hypot(*(np.subtract.outer(truth[c], truth[c]) for c in 'xy'))
    assert d[np.triu_indices(len(truth), 1)].min() >= 7.5  # 2.5 FWHM


def test_inject_avoids_sources_and_masked_pixels(noise_image):
    avoid = Table({'x_centroid': [80.0], 'y_centroid': [80.0]})
    mask = np.zeros(noise_image.shape, bool)
    mask[:, :80] = True
    _, truth = inject_stars(noise_image, 20, fwhm=3.0, seed=5, avoid=avoid,
                            mask=mask, min_separation=20.0)
    assert np.all(np.hypot(truth['x'] - 80, truth['y'] - 80) >= 20)
    assert np.all(truth['x'] >= 79.5)
    assert new_dtype_is_kept(noise_image.astype(np.float32))


def new_dtype_is_kept(image):
    new, _ = inject_stars(image, 1, fwhm=3.0, seed=0)
    return new.dtype == np.float32


def test_inject_too_crowded_warns():
    with pytest.warns(RuntimeWarning, match='could be placed'):
        _, truth = inject_stars(np.random.default_rng(0).normal(size=(20, 20)),
                                50, fwhm=2.0, seed=0, min_separation=10)
    assert 0 < len(truth) < 50


def test_injection_recovery_with_dao(noise_image):
    from photutils.detection import DAOStarFinder

    # A pre-existing bright star that must not count as a recovery.
    image = render_profiles(noise_image - 100.0, 41.0, 41.0, 3000.0, 3.0)
    finder = DAOStarFinder(threshold=5 * 4.0, fwhm=3.0)
    table, stars = injection_recovery(finder, image, n=15, fwhm=3.0,
                                      snr_range=(40, 80), bins=[40, 80],
                                      seed=2, n_iter=2)
    assert table['n_true'][0] == 30
    assert table['completeness'][0] == 1.0
    assert set(stars['iteration']) == {0, 1}
    # The pre-existing star was found first and kept clear of.
    assert np.hypot(stars['x'] - 41, stars['y'] - 41).min() >= 7.5
    err = np.hypot(stars['x_det'] - stars['x'], stars['y_det'] - stars['y'])
    assert np.all(err < 0.5)


def test_injection_recovery_faint_and_tuple_finder(noise_image):
    # A finder returning (x, y, ...) that never detects anything.
    def blind(data):
        return np.zeros(0), np.zeros(0), np.zeros(0), 0.0

    table, stars = injection_recovery(blind, noise_image, n=5, fwhm=3.0,
                                      seed=0, bins=[1, 1000])
    assert table['completeness'][0] == 0.0
    assert not np.any(stars['found'])

    def none_finder(data, mask=None):
        return None

    with warnings.catch_warnings():
        warnings.simplefilter('error')
        table, _ = injection_recovery(none_finder, noise_image, n=3,
                                      fwhm=3.0, seed=0, bins=[1, 1000],
                                      mask=np.zeros(noise_image.shape, bool))
    assert table['n_found'][0] == 0


def test_filtered_noise_estimate():
    from scipy import ndimage

    rng = np.random.default_rng(8)
    white = rng.normal(100.0, 5.0, (256, 256))
    _, t_pix = inject_stars(white, 5, fwhm=3.0, seed=1)
    _, t_filt = inject_stars(white, 5, fwhm=3.0, seed=1,
                             noise_estimate='filtered')
    # Same answer for white noise ...
    np.testing.assert_allclose(t_filt['flux'], t_pix['flux'], rtol=0.05)
    # ... and much brighter stars for the same SNR in correlated noise,
    # which the pixel-to-pixel noise underestimates.
    corr = ndimage.gaussian_filter(rng.normal(0.0, 5.0, (256, 256)), 1.5)
    _, c_pix = inject_stars(corr, 5, fwhm=3.0, seed=1)
    _, c_filt = inject_stars(corr, 5, fwhm=3.0, seed=1,
                             noise_estimate='filtered')
    assert np.all(c_filt['flux'] > 3 * c_pix['flux'])  # measured 4.8x
    with pytest.raises(ValueError, match='noise_estimate'):
        inject_stars(white, 1, fwhm=3.0, noise_estimate='local')
