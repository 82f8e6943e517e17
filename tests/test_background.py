"""
The local background behind CNNStarFinder's detection threshold, and the
precision of the amplitude it gives.
"""

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats

from cnnfind.detection._background import (
    _clipped_row_medians,
    _LocalBackground,
    annulus_background,
    background_at,
    background_image,
    mesh_background,
    noise_ratio_mesh,
)
from cnnfind.detection._measure import (
    _detection_amplitudes,
    _ellipse_coeffs,
    _fit_sources,
)
from cnnfind.simulation import render_profiles

SIGMA = 3.0 / 2.3548


def test_clipped_medians_match_astropy():
    rng = np.random.default_rng(0)
    v = rng.normal(10.0, 2.0, (4, 500))
    v[:, :40] += 60.0  # sources to clip
    v[1, 300:] = np.nan
    v[3, 5:] = np.nan  # too few values
    got = _clipped_row_medians(v)
    for row, value in zip(v[:3], got[:3], strict=True):
        ref = sigma_clipped_stats(row[~np.isnan(row)], sigma=3.0,
                                  maxiters=3)[1]
        assert value == pytest.approx(ref, rel=1e-9)
    assert np.isnan(got[3])


def test_mesh_follows_a_gradient_and_fills_masked_boxes():
    rng = np.random.default_rng(1)
    ny, nx = 300, 400
    yy, xx = np.mgrid[:ny, :nx]
    sky = 100.0 + 0.05 * xx - 0.03 * yy
    img = sky + rng.normal(0.0, 1.0, (ny, nx))
    valid = np.ones((ny, nx), bool)
    valid[:64, :64] = False  # a whole box masked
    mesh = mesh_background(img, valid, 64)
    assert mesh.shape == (5, 7)
    # Between box centres the interpolation is exact for a linear
    # gradient (up to the noise of the medians).
    x = rng.uniform(96, nx - 97, 200)
    y = rng.uniform(96, ny - 97, 200)
    truth = 100.0 + 0.05 * x - 0.03 * y
    assert np.abs(background_at(mesh, 64, x, y) - truth).max() < 0.3
    assert np.isfinite(mesh).all()


def test_background_image_equals_pointwise_interpolation():
    rng = np.random.default_rng(4)
    for shape in [(5, 7), (1, 1), (1, 4), (3, 1)]:
        mesh = rng.normal(size=shape)
        rows, cols = slice(3, 300), slice(0, 450)
        img = background_image(mesh, 64, rows, cols)
        yy, xx = np.mgrid[rows, cols]
        ref = background_at(mesh, 64, xx.ravel(), yy.ravel())
        np.testing.assert_allclose(img, ref.reshape(img.shape), atol=1e-6)


def test_noise_ratio_mesh():
    rng = np.random.default_rng(5)
    valid = np.ones((1024, 1024), bool)
    flat = rng.normal(0.0, 3.0, valid.shape)
    assert np.abs(noise_ratio_mesh(flat, valid, 256) - 1).max() < 0.03
    # A smooth gradient in level does not change it.
    yy, xx = np.mgrid[:1024, :1024]
    ramp = noise_ratio_mesh(flat + 200.0 * xx / 1024, valid, 256)
    assert np.abs(ramp - 1).max() < 0.03
    # Noise twice as high on the right half.
    halves = flat * np.where(xx < 512, 1.0, 2.0)
    ratio = noise_ratio_mesh(halves, valid, 256)
    assert ratio[:, 3].mean() / ratio[:, 0].mean() == pytest.approx(2.0,
                                                                     rel=0.05)
    # Masked blocks take 1; an image smaller than a box gives one block.
    valid[:256, :256] = False
    assert noise_ratio_mesh(flat, valid, 256)[0, 0] == pytest.approx(
        1.0, abs=0.03)
    assert noise_ratio_mesh(flat[:50, :70], valid[-50:, -70:],
                            256).shape == (1, 1)


def test_mesh_errors_and_empty():
    img = np.zeros((64, 64))
    with pytest.raises(ValueError, match='multiple'):
        mesh_background(img, np.ones_like(img, bool), 64, step=5)
    assert np.isnan(mesh_background(img, np.zeros_like(img, bool), 64)).all()


def test_annulus_ignores_the_star_and_a_neighbour():
    rng = np.random.default_rng(2)
    img = 50.0 + rng.normal(0.0, 1.0, (80, 80))
    render_profiles(img, [40.0, 49.0], [40.0, 40.0], [5e4, 3e3], 3.0,
                    kind='gaussian')
    valid = np.ones(img.shape, bool)
    got = annulus_background(img, valid, [40.0], [40.0], 7.5, 15.0)
    assert got[0] == pytest.approx(50.0, abs=0.15)
    # A corner position sees a quarter of its annulus; a masked one none.
    assert np.isfinite(annulus_background(img, valid, [0.0], [0.0],
                                          7.5, 15.0)[0])
    assert np.isnan(annulus_background(img, np.zeros_like(valid), [40.0],
                                       [40.0], 7.5, 15.0)[0])
    assert annulus_background(img, valid, [], [], 7.5, 15.0).shape == (0,)
    # Chunks only bound the memory.
    xs, ys = rng.uniform(0, 79, (2, 50))
    np.testing.assert_array_equal(
        annulus_background(img, valid, xs, ys, 7.5, 15.0, chunk=7),
        annulus_background(img, valid, xs, ys, 7.5, 15.0))


def _structured_sky(shape, amplitude, period, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    sky = amplitude * np.sin(2 * np.pi * xx / period) * np.cos(
        2 * np.pi * yy / period)
    return sky, sky + rng.normal(0.0, 1.0, shape)


def test_local_background_follows_structure_the_mesh_misses():
    # A background varying on a 120-pixel period, below the resolution
    # of the mesh (64-pixel boxes, median-filtered 3 x 3): the annuli
    # (7.5-15 pixels) must take over.
    sky, img = _structured_sky((256, 256), 5.0, 120.0, 3)
    valid = np.ones(img.shape, bool)
    bkg = _LocalBackground(img, valid, 0.0, 1.0, 3.0)
    rng = np.random.default_rng(4)
    x, y = rng.uniform(20, 235, (2, 300))
    truth = sky[np.round(y).astype(int), np.round(x).astype(int)]
    err_mesh = np.sqrt(np.mean((bkg.mesh(x, y) - truth)**2))
    err = np.sqrt(np.mean((bkg(x, y) - truth)**2))
    assert err_mesh > 1.5
    assert err < 0.3 * err_mesh


def test_local_background_on_a_flat_sky_keeps_mesh_precision():
    rng = np.random.default_rng(5)
    img = rng.normal(0.0, 1.0, (256, 256))
    bkg = _LocalBackground(img, np.ones(img.shape, bool), 0.0, 1.0, 3.0)
    x, y = rng.uniform(20, 235, (2, 300))
    # One annulus median alone has a noise of 1.25 / sqrt(530) = 0.054.
    assert np.sqrt(np.mean(bkg(x, y)**2)) < 0.045


def test_local_background_without_mesh_uses_sky():
    img = np.ones((6, 6))
    bkg = _LocalBackground(img, np.ones(img.shape, bool), 7.0, 1.0, 3.0)
    np.testing.assert_array_equal(bkg.mesh([2.0], [2.0]), [7.0])
    np.testing.assert_array_equal(bkg([2.0], [2.0]), [7.0])


def test_detection_amplitude_has_matched_filter_precision():
    """
    With the background known, the amplitude's scatter equals its
    matched-filter error; fitted with a free background on the fitting
    stamp it is about 1.3 times larger (the reason for the change).
    """
    rng = np.random.default_rng(6)
    n_side, step = 20, 24
    shape = (n_side * step, n_side * step)
    g = np.arange(n_side) * step + step / 2
    x, y = (a.ravel() + rng.uniform(-0.5, 0.5, n_side**2)
            for a in np.meshgrid(g, g))
    amp_true = 4.0 / np.sqrt(np.pi * SIGMA**2)  # SNR 4 per star
    flux = amp_true * 2 * np.pi * SIGMA**2
    img = rng.normal(0.0, 1.0, shape)
    render_profiles(img, x, y, np.full(len(x), flux), 3.0, kind='gaussian')
    valid = np.ones(shape, bool)
    abc = _ellipse_coeffs((SIGMA, SIGMA), 0.0)
    _, _, free, _, rel = _fit_sources(img, valid, x, y, abc, 3, iters=1)
    known, rel_known = _detection_amplitudes(
        img, valid, x, y, np.full(len(x), amp_true), abc, 3,
        np.zeros(len(x)))
    np.testing.assert_allclose(rel_known, rel)
    z_known = (known - amp_true) / rel
    z_free = (free - amp_true) / rel
    assert np.std(z_known) == pytest.approx(1.0, abs=0.1)
    assert np.std(z_free) > 1.2
    assert abs(np.mean(z_known)) < 0.15
