"""Noise correlation between pixels: measured roughness and the factor
it puts on a PSF amplitude's error."""

import numpy as np
import pytest
from scipy import ndimage

from cnnfind.detection._correlation import (
    Q_FULL,
    Q_WHITE,
    correlation_factor,
    roughness,
)
from cnnfind.detection._measure import _ellipse_coeffs


def _kernel(fwhm):
    sigma = fwhm / 2.3548
    return _ellipse_coeffs((sigma, sigma), 0.0), max(2, int(np.ceil(fwhm)))


def _true_factor(noise, fwhm):
    """Spread of PSF-weighted amplitudes on pure noise over the white-noise
    prediction from the pixel spread."""
    abc, radius = _kernel(fwhm)
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(abc[0] * x**2 + abc[2] * y**2))
    amp = ndimage.correlate(noise, g / (g**2).sum())[20:-20, 20:-20]
    return amp.std() * np.sqrt((g**2).sum()) / noise.std()


@pytest.fixture(scope='module')
def white():
    return np.random.default_rng(11).normal(0.0, 1.0, (512, 512))


def test_white_noise_is_white(white):
    valid = np.ones(white.shape, bool)
    q = roughness(white, valid)
    assert q == pytest.approx(1.0, abs=0.03)
    assert correlation_factor(q, *_kernel(3.0)) == 1.0


@pytest.mark.parametrize('smooth, fwhm', [(0.7, 3.0), (0.7, 6.0),
                                          (1.0, 3.0)])
def test_factor_matches_smoothed_noise(white, smooth, fwhm):
    """Gaussian-correlated noise: the factor from the roughness alone is
    within 5 % of the amplitudes' measured spread (2.1-3.2 here)."""
    noise = ndimage.gaussian_filter(white, smooth)
    q = roughness(noise, np.ones(noise.shape, bool))
    assert q < Q_FULL
    factor = correlation_factor(q, *_kernel(fwhm))
    assert factor > 2.0
    assert factor == pytest.approx(_true_factor(noise, fwhm), rel=0.05)


def test_resampled_noise(white):
    """A half-pixel bilinear shift (true factor 1.84 at FWHM 3): the
    Gaussian model errs on the safe side by less than 10 %."""
    noise = ndimage.shift(white, (0.5, 0.5), order=1)
    q = roughness(noise, np.ones(noise.shape, bool))
    true = _true_factor(noise, 3.0)
    factor = correlation_factor(q, *_kernel(3.0))
    assert true <= factor < 1.1 * true


def test_factor_fades_in_and_grows_with_correlation():
    abc, radius = _kernel(3.0)
    qs = np.linspace(0.3, 1.0, 15)
    factors = [correlation_factor(q, abc, radius) for q in qs]
    assert np.all(np.diff(factors) <= 1e-9)
    assert correlation_factor(Q_WHITE, abc, radius) == 1.0
    assert 1.0 < correlation_factor(0.5 * (Q_WHITE + Q_FULL), abc,
                                    radius) < correlation_factor(Q_FULL, abc,
                                                                 radius)


def test_masked_and_tiny_images(white):
    noise = ndimage.gaussian_filter(white, 0.7)
    valid = np.ones(noise.shape, bool)
    valid[:, :300] = False          # most of the image masked ...
    noise[:, :300] = 1e6            # ... and holding garbage
    assert roughness(noise, valid) == pytest.approx(
        roughness(noise[:, 300:], valid[:, 300:]), abs=0.05)
    # Too few pixels to tell: white noise is assumed.
    assert roughness(white[:8, :8], np.ones((8, 8), bool)) == 1.0
    assert roughness(white, np.zeros(white.shape, bool)) == 1.0
