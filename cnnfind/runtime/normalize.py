"""
Robust sky and noise estimation and the normalisation that every
cnnfind network sees.
"""

import numpy as np

__all__ = ['robust_sky_noise', 'normalize_image', 'valid_pixel_mask',
           'check_mask_shape']

#: Pixel lag of the differences used to estimate the noise.
_NOISE_LAG = 3


def valid_pixel_mask(data, mask=None):
    """
    Boolean map of the pixels that carry data.

    Parameters
    ----------
    data : 2D `~numpy.ndarray`
        The image.
    mask : 2D bool `~numpy.ndarray`, optional
        `True` where a pixel is bad.

    Returns
    -------
    valid : 2D bool `~numpy.ndarray`
        `True` where the pixel is finite and not masked.

    Raises
    ------
    ValueError
        If ``mask`` has a different shape from ``data``.
    """
    valid = np.isfinite(data)
    if mask is not None:
        valid &= ~check_mask_shape(mask, data.shape).astype(bool)
    return valid


def check_mask_shape(mask, shape):
    """
    ``mask`` as an array, or a clear `ValueError` if its shape differs.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.runtime import check_mask_shape
    >>> check_mask_shape(np.zeros((2, 3), bool), (2, 3)).shape
    (2, 3)
    """
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        msg = (f'mask has shape {mask.shape} but data has shape '
               f'{tuple(shape)}; they must be the same')
        raise ValueError(msg)
    return mask


def _clipped_median_std(values, sigma, maxiters):
    """
    Sigma-clipped median and standard deviation of a 1-D sample.

    The same iteration as `astropy.stats.sigma_clipped_stats` (median
    centre, standard deviation, values outside ``median +- sigma * std``
    of the kept values dropped until none is or ``maxiters`` is
    reached), done on the sorted sample: the kept values are always a
    contiguous run of it, so each iteration is two binary searches and
    prefix sums instead of new medians and copies.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    # Prefix sums about the median, so that the variance does not lose
    # precision to a large sky level.
    x0 = x[x.size // 2]
    c1 = np.concatenate([[0.0], np.cumsum(x - x0)])
    c2 = np.concatenate([[0.0], np.cumsum((x - x0) ** 2)])
    lo, hi = 0, x.size

    def stats(lo, hi):
        n = hi - lo
        mid = lo + n // 2
        median = x[mid] if n % 2 else 0.5 * (x[mid - 1] + x[mid])
        mean = (c1[hi] - c1[lo]) / n
        var = (c2[hi] - c2[lo]) / n - mean ** 2
        return median, float(np.sqrt(max(var, 0.0)))

    median, std = stats(lo, hi)
    for _ in range(maxiters):
        new_lo = max(lo, int(np.searchsorted(x, median - sigma * std,
                                             'left')))
        new_hi = min(hi, int(np.searchsorted(x, median + sigma * std,
                                             'right')))
        if (new_lo, new_hi) == (lo, hi) or new_hi <= new_lo:
            break
        lo, hi = new_lo, new_hi
        median, std = stats(lo, hi)
    return float(median), std


def robust_sky_noise(data, valid=None, *, sigma=3.0, maxiters=5,
                     max_samples=2**16):
    """
    Estimate the sky level and its noise with sigma clipping.

    The sky is the sigma-clipped median of the pixels. The noise is the
    sigma-clipped standard deviation of differences of pixels three
    columns apart divided by :math:`\\sqrt{2}`: unlike the clipped
    standard deviation of the pixels it is not inflated by sky gradients,
    nebulosity or crowding, and unlike adjacent-pixel differences it is
    not lowered by correlated noise (resampled images, plate scans). Non-finite and invalid pixels
    are excluded. Large images are sub-sampled on a regular grid
    (``max_samples`` pixels) to bound the cost.

    Parameters
    ----------
    data : 2D `~numpy.ndarray`
        The image.
    valid : 2D bool `~numpy.ndarray`, optional
        `True` for the pixels to use (default: all finite pixels).
    sigma : float
        Clipping threshold in standard deviations.
    maxiters : int
        Maximum number of clipping iterations.
    max_samples : int
        Maximum number of pixels used.

    Returns
    -------
    sky, noise : float
        The sigma-clipped median and standard deviation.

    Raises
    ------
    ValueError
        If there are no valid pixels or the noise is zero or not finite
        (e.g. a constant image).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.runtime import robust_sky_noise
    >>> rng = np.random.default_rng(0)
    >>> sky, noise = robust_sky_noise(rng.normal(100.0, 5.0, (256, 256)))
    >>> round(sky), round(noise)
    (100, 5)
    """
    data = np.asarray(data)
    if valid is None:
        valid = np.isfinite(data)
    step = max(1, int(np.sqrt(data.size / max_samples)))
    sub = data[::step]
    subvalid = valid[::step]
    sample = sub[:, ::step][subvalid[:, ::step]]
    if sample.size == 0:
        msg = 'the image has no valid (finite, unmasked) pixels'
        raise ValueError(msg)
    median, _ = _clipped_median_std(sample, sigma, maxiters)
    # Noise from differences of pixels _NOISE_LAG apart along rows:
    # insensitive to sky gradients and nebulosity (which inflate a plain
    # clipped std), and, unlike adjacent pixels, to the pixel-to-pixel
    # correlation of resampled images and photographic plates.
    lag = _NOISE_LAG if data.shape[1] > _NOISE_LAG else 1
    diff = ((sub[:, lag:].astype(np.float64) - sub[:, :-lag])
            [subvalid[:, lag:] & subvalid[:, :-lag]] / np.sqrt(2.0))
    if diff.size > max_samples:
        diff = diff[::diff.size // max_samples + 1]
    std = np.nan
    if diff.size >= 8:
        _, std = _clipped_median_std(diff, sigma, maxiters)
        if not np.isfinite(std) or std <= 0:
            # Quantised data can clip to zero spread; use the MAD.
            std = np.median(np.abs(diff - np.median(diff))) * 1.4826
    if not np.isfinite(std) or std <= 0:
        std = np.std(sample)
    if not np.isfinite(std) or std <= 0:
        msg = ('the image noise is zero (constant image?); cannot '
               'normalise it')
        raise ValueError(msg)
    return float(median), float(std)


def normalize_image(data, valid, sky, noise, asinh_scale):
    r"""
    Put an image into the network's input space.

    The input is :math:`\mathrm{asinh}((d - s) / (n\,a))` with sky
    :math:`s`, noise :math:`n` and ``asinh_scale`` :math:`a`: linear in
    the noise regime and logarithmic for bright sources, so that faint
    stars and saturated cores are both in range. Invalid pixels are set
    to 0 (the sky).

    Parameters
    ----------
    data : 2D `~numpy.ndarray`
        The image.
    valid : 2D bool `~numpy.ndarray`
        `True` for usable pixels.
    sky, noise : float
        Sky level and noise from `robust_sky_noise`.
    asinh_scale : float
        Softening scale in units of the noise.

    Returns
    -------
    x : 2D float32 `~numpy.ndarray`
        The normalised image.
    """
    x = np.asarray(data, dtype=np.float32) - np.float32(sky)
    x /= np.float32(noise * asinh_scale)
    np.arcsinh(x, out=x)
    x[~valid] = 0.0
    return x


#: Largest step of float32 at the sky level, in units of the noise, for
#: data that float32 cannot hold exactly (see `_as_float32`): the rounding
#: then adds at most 0.14 of the noise (``0.5 / sqrt(12)``).
_MAX_FLOAT32_STEP = 0.5


def _as_float32(data, mask=None):
    """
    A real-valued image as float32 in native byte order, in which the
    networks, the star finder's measurements and the denoiser's result
    work.

    Types that float32 holds exactly (8- and 16-bit integers, float16,
    float32) are converted. Others (float64, 32- and 64-bit integers)
    are converted where that keeps the image: a `ValueError` says what
    is lost otherwise, valid (finite, unmasked) values beyond the range
    of float32, or, unless float32 holds the valid values exactly, a sky
    level at which float32 steps are more than ``_MAX_FLOAT32_STEP`` of
    the noise (e.g. integers around ``2**40``, which would otherwise
    round to a constant image). The sky and noise for that test are
    measured at the input's precision.
    """
    if np.can_cast(data.dtype, np.float32):
        return data.astype(np.float32, copy=False)
    with np.errstate(over='ignore'):
        out = data.astype(np.float32)
    valid = valid_pixel_mask(data, mask)
    lost = valid & ~np.isfinite(out)
    if lost.any():
        msg = (f'{int(lost.sum())} pixels of the {data.dtype} image are '
               'beyond the range of float32 (about 3.4e38), in which '
               'cnnfind works; rescale the image or mask them')
        raise ValueError(msg)
    if ((out == data) | ~valid).all():
        # nothing lost (float32 data read as float64, 32-bit integers
        # below 2**24)
        return out
    try:
        sky, noise = robust_sky_noise(data, valid)
    except ValueError:
        # no valid pixel or no noise at all: said as usual later
        return out
    step = float(np.spacing(np.float32(abs(sky))))
    if step > _MAX_FLOAT32_STEP * noise:
        msg = (f'the {data.dtype} image cannot be processed in float32, '
               'in which cnnfind works: at '
               f'its sky level ({sky:.7g}) float32 resolves only steps of '
               f'{step:.3g}, more than {_MAX_FLOAT32_STEP:g} of its noise '
               f'({noise:.3g}); subtract a constant (e.g. its median) in '
               'float64 first, and add it back to the result if needed')
        raise ValueError(msg)
    return out
