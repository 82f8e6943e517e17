"""The star-finder network's input channels (numpy side)."""

import numpy as np
import pytest

from cnnfind.detection._input import (
    MAX_KERNEL_RADIUS,
    _gauss_kernel_1d,
    _matched_filter_snr,
    _network_input,
)


@pytest.mark.parametrize('fwhm', [1.5, 3.0, 8.0])
def test_matched_filter_has_unit_noise(fwhm):
    noise = np.random.default_rng(1).normal(size=(300, 300)).astype(np.float32)
    snr = _matched_filter_snr(noise, fwhm)
    assert np.std(snr[40:-40, 40:-40]) == pytest.approx(1.0, abs=0.03)


def test_matched_filter_reads_star_snr():
    """At a Gaussian star the map gives its matched-filter SNR."""
    yy, xx = np.mgrid[:64, :64]
    sigma = 3.0 / 2.3548
    psf = np.exp(-0.5 * ((xx - 32) ** 2 + (yy - 30) ** 2) / sigma ** 2)
    psf /= psf.sum()
    snr_true = 20.0
    flux = snr_true / np.sqrt((psf ** 2).sum())  # unit pixel noise
    snr = _matched_filter_snr((flux * psf).astype(np.float32), 3.0)
    assert snr[30, 32] == pytest.approx(snr_true, rel=0.02)


def test_kernel_width_is_capped():
    assert len(_gauss_kernel_1d(50.0)) == 2 * MAX_KERNEL_RADIUS + 1
    assert _gauss_kernel_1d(3.0).sum() == pytest.approx(1.0)


def test_network_input_channels_and_invalid_pixels():
    rng = np.random.default_rng(2)
    data = rng.normal(100.0, 5.0, (40, 48)).astype(np.float32)
    data[5, 7] = np.nan
    valid = np.isfinite(data)
    two = _network_input(data, valid, 100.0, 5.0, 3.0, 3.0, 2)
    three = _network_input(data, valid, 100.0, 5.0, 3.0, 3.0, 3)
    assert two.shape == (2, 40, 48) and three.shape == (3, 40, 48)
    np.testing.assert_array_equal(two, three[:2])
    assert np.isfinite(three).all()
    assert three[0, 5, 7] == 0 and three[1, 5, 7] == 0
    # Writing into a larger (padded) buffer leaves the padding alone.
    buf = np.full((3, 48, 64), -7.0, np.float32)
    _network_input(data, valid, 100.0, 5.0, 3.0, 3.0, 3, out=buf)
    np.testing.assert_array_equal(buf[:, :40, :48], three)
    assert (buf[:, 40:, :] == -7).all()
