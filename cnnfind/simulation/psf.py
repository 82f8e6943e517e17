"""
Analytic point-spread functions rendered onto pixel grids.

All profiles are normalised to unit total flux and are integrated over
pixels by sub-sampling, so that narrow (under-sampled) PSFs keep their
flux.
"""

import numpy as np
from astropy.stats import gaussian_fwhm_to_sigma

__all__ = ['render_profiles', 'psf_sum_squares']


def _oversampling(fwhm):
    """Sub-pixel sampling factor that integrates a profile accurately."""
    return int(np.clip(np.ceil(6.0 / max(fwhm, 0.5)), 1, 5))


def _elliptical_r2(dx, dy, ratio, theta):
    """Squared elliptical radius in units of the major-axis scale."""
    if ratio == 1.0:
        return dx**2 + dy**2
    cost, sint = np.cos(theta), np.sin(theta)
    u = dx * cost + dy * sint
    v = -dx * sint + dy * cost
    return u**2 + (v / ratio)**2


def _profile_norm(fwhm, kind, beta, ratio):
    """Analytic integral of the unnormalised profile (pixel units)."""
    if kind == 'gaussian':
        sigma = fwhm * gaussian_fwhm_to_sigma
        return 2.0 * np.pi * sigma**2 * ratio
    alpha = fwhm / (2.0 * np.sqrt(2.0**(1.0 / beta) - 1.0))
    return np.pi * alpha**2 * ratio / (beta - 1.0)


def _profile(r2, fwhm, kind, beta):
    """Unnormalised radial profile as a function of the squared radius."""
    if kind == 'gaussian':
        sigma = fwhm * gaussian_fwhm_to_sigma
        return np.exp(-0.5 * r2 / sigma**2)
    if kind == 'moffat':
        alpha = fwhm / (2.0 * np.sqrt(2.0**(1.0 / beta) - 1.0))
        return (1.0 + r2 / alpha**2) ** (-beta)
    msg = f'unknown PSF kind {kind!r}'
    raise ValueError(msg)


def render_profiles(image, x, y, flux, fwhm, *, kind='moffat', beta=3.0,
                    ratio=1.0, theta=0.0, radius=None):
    """
    Add point sources to ``image`` in place.

    Parameters
    ----------
    image : 2D `~numpy.ndarray`
        The image (float) to which the sources are added.
    x, y, flux : array_like
        Source positions (0-based pixel coordinates, pixel centres at
        integers) and total fluxes.
    fwhm : float
        Major-axis full width at half maximum in pixels.
    kind : {'moffat', 'gaussian'}
        The radial profile.
    beta : float
        Moffat power index.
    ratio : float
        Minor-to-major axis ratio (0 < ratio <= 1).
    theta : float
        Position angle of the major axis in radians, counter-clockwise
        from the x axis.
    radius : int or `None`
        Half-size of the rendering stamp; default ``4 * fwhm`` (more
        for Moffat wings), at least 3.

    Returns
    -------
    image : 2D `~numpy.ndarray`
        The same array, for convenience.
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    y = np.atleast_1d(np.asarray(y, dtype=float))
    flux = np.broadcast_to(np.asarray(flux, dtype=float), x.shape)
    if radius is None:
        radius = int(np.ceil((6.0 if kind == 'moffat' else 4.0) * fwhm)) + 1
    radius = max(int(radius), 3)
    osamp = _oversampling(fwhm)
    sub = (np.arange(osamp) + 0.5) / osamp - 0.5
    size = 2 * radius + 1
    norm = _profile_norm(fwhm, kind, beta, ratio)
    padded = np.zeros((image.shape[0] + 2 * size, image.shape[1] + 2 * size))
    ix = np.round(x).astype(int)
    iy = np.round(y).astype(int)
    keep = ((ix > -radius - 1) & (ix < image.shape[1] + radius)
            & (iy > -radius - 1) & (iy < image.shape[0] + radius))
    offs = np.arange(-radius, radius + 1)
    fine = (offs[:, None] + sub[None, :]).ravel()
    for start in range(0, int(keep.sum()), 256):
        sel = np.flatnonzero(keep)[start:start + 256]
        dx = fine[None, None, :] + (ix[sel] - x[sel])[:, None, None]
        dy = fine[None, :, None] + (iy[sel] - y[sel])[:, None, None]
        val = _profile(_elliptical_r2(dx, dy, ratio, theta), fwhm, kind, beta)
        val = val.reshape(len(sel), size, osamp, size, osamp).sum(axis=(2, 4))
        val *= (flux[sel] / (norm * osamp**2))[:, None, None]
        for k, j in enumerate(sel):
            y0 = iy[j] - radius + size
            x0 = ix[j] - radius + size
            padded[y0:y0 + size, x0:x0 + size] += val[k]
    image += padded[size:-size, size:-size]
    return image


def psf_sum_squares(fwhm, *, kind='moffat', beta=3.0, ratio=1.0, theta=0.0):
    r"""
    Sum of the squared pixel values of a unit-flux PSF.

    The matched-filter signal-to-noise ratio of a background-limited
    source of flux :math:`F` in white noise of standard deviation
    :math:`\sigma` is :math:`F \sqrt{\sum p^2} / \sigma`.

    Parameters
    ----------
    fwhm, kind, beta, ratio, theta
        As in `render_profiles`.

    Returns
    -------
    value : float
        :math:`\sum p^2` for a source centred on a pixel.

    Examples
    --------
    >>> from cnnfind.simulation import psf_sum_squares
    >>> round(1 / psf_sum_squares(3.0, kind="gaussian"), 1)  # ~ 4 pi sigma^2
    21.2
    """
    radius = int(np.ceil(8 * fwhm)) + 2
    stamp = np.zeros((2 * radius + 1, 2 * radius + 1))
    render_profiles(stamp, radius, radius, 1.0, fwhm, kind=kind, beta=beta,
                    ratio=ratio, theta=theta, radius=radius)
    return float(np.sum(stamp**2))
