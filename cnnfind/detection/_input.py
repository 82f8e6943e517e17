"""
The star-finder network's input: the normalised image, a validity channel
and (for models with a three-channel input) a matched-filter SNR channel. One
function, used both by `~cnnfind.CNNStarFinder` and by the training data,
so the two can never disagree.
"""

import numpy as np
from scipy import ndimage

from cnnfind.runtime.normalize import normalize_image

__all__ = []

#: Largest matched-filter kernel half-width in pixels; the model's tile halo
#: covers the receptive field plus this.
MAX_KERNEL_RADIUS = 16


def _gauss_kernel_1d(fwhm):
    """Unit-sum 1-D Gaussian of ``fwhm``, at most `MAX_KERNEL_RADIUS` wide."""
    sigma = max(float(fwhm), 0.5) / 2.3548
    radius = int(min(np.ceil(4.0 * sigma), MAX_KERNEL_RADIUS))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _matched_filter_snr(resid, fwhm):
    """
    Matched-filter SNR of a point source at every pixel.

    ``resid`` is the sky-subtracted image in units of the pixel noise, with
    invalid pixels at 0. Correlating it with a unit-sum Gaussian of the PSF
    FWHM and dividing by the kernel's root sum of squares gives, in white
    noise, a map with unit standard deviation whose value at a star is
    its detection SNR. Outside the image counts as 0 (no signal), so a
    tile whose halo reaches the image edge sees what a full pass sees.
    """
    k = _gauss_kernel_1d(fwhm)
    out = ndimage.correlate1d(resid, k, axis=0, mode='constant', cval=0.0)
    out = ndimage.correlate1d(out, k, axis=1, mode='constant', cval=0.0)
    out /= np.float32(np.sum(k * k))  # 1 / sqrt(sum of 2-D squares)
    return out


def _network_input(data, valid, sky, noise, asinh_scale, fwhm, n_channels,
                   out=None):
    """
    Channels ``(n_channels, ny, nx)`` for the star-finder network.

    Parameters
    ----------
    data, valid : 2D arrays
        Image and validity map (`True` = usable pixel).
    sky, noise : float
        Background level and pixel noise.
    asinh_scale : float
        The model's asinh softening, in units of the noise.
    fwhm : float
        PSF FWHM in pixels (the user's value, or the training hint).
    n_channels : {2, 3}
        2: image and validity (the bundled model); 3: plus the
        matched-filter SNR, asinh-compressed like the image.
    out : float32 array, optional
        Where to write (shape at least ``(n_channels, ny, nx)``; the
        rest is left untouched, e.g. zero padding).

    Returns
    -------
    out : float32 array
    """
    ny, nx = data.shape
    if out is None:
        out = np.zeros((n_channels, ny, nx), np.float32)
    out[0, :ny, :nx] = normalize_image(data, valid, sky, noise, asinh_scale)
    out[1, :ny, :nx] = valid
    if n_channels >= 3:
        with np.errstate(invalid='ignore'):
            resid = np.where(valid, (np.asarray(data, np.float32)
                                     - np.float32(sky)) / np.float32(noise),
                             np.float32(0.0)).astype(np.float32)
        snr = _matched_filter_snr(resid, fwhm)
        out[2, :ny, :nx] = np.arcsinh(snr / np.float32(asinh_scale))
    return out
