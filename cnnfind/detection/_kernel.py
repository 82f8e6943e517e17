"""
The DAOFIND Gaussian kernel (Stetson 1987), used to compute
DAOStarFinder-compatible shape and brightness columns.
"""

import math

import numpy as np
from astropy.stats import gaussian_fwhm_to_sigma

__all__ = []


class _DAOKernel:
    """
    Truncated elliptical Gaussian kernel with DAOFIND's normalisation.

    Attributes follow photutils' star-finder kernel: ``data`` (zero-sum
    normalised kernel), ``mask`` (footprint), ``gaussian_kernel_unmasked``
    (unit peak), ``n_pixels``, ``rel_err``, ``x_sigma``, ``y_sigma``,
    ``shape``.
    """

    def __init__(self, fwhm, *, ratio=1.0, theta=0.0, sigma_radius=1.5):
        if not np.isscalar(fwhm) or not np.isfinite(fwhm) or fwhm <= 0:
            msg = f'fwhm must be a positive scalar, got {fwhm!r}'
            raise ValueError(msg)
        if not 0 < ratio <= 1:
            msg = f'ratio must be > 0 and <= 1.0, got {ratio!r}'
            raise ValueError(msg)
        if sigma_radius <= 0:
            msg = f'sigma_radius must be positive, got {sigma_radius!r}'
            raise ValueError(msg)
        self.x_sigma = fwhm * gaussian_fwhm_to_sigma
        self.y_sigma = self.x_sigma * ratio
        t = np.deg2rad(theta % 360.0)
        cost, sint = math.cos(t), math.sin(t)
        xs2, ys2 = self.x_sigma**2, self.y_sigma**2
        a = cost**2 / (2 * xs2) + sint**2 / (2 * ys2)
        b = 0.5 * cost * sint * (1 / xs2 - 1 / ys2)
        c = sint**2 / (2 * xs2) + cost**2 / (2 * ys2)
        f = sigma_radius**2 / 2.0
        denom = a * c - b**2
        nx = 2 * int(max(2, math.sqrt(c * f / denom))) + 1
        ny = 2 * int(max(2, math.sqrt(a * f / denom))) + 1
        yy, xx = np.mgrid[0:ny, 0:nx]
        dx, dy = xx - nx // 2, yy - ny // 2
        ell = a * dx**2 + 2 * b * dx * dy + c * dy**2
        self.mask = ((ell <= f) | (np.hypot(dx, dy) <= 2.0)).astype(int)
        self.n_pixels = int(self.mask.sum())
        self.gaussian_kernel_unmasked = np.exp(-ell)
        g = self.gaussian_kernel_unmasked * self.mask
        var = (g**2).sum() - g.sum()**2 / self.n_pixels
        self.rel_err = 1.0 / math.sqrt(var)
        self.data = (g - g.sum() / self.n_pixels) / var * self.mask
        self.shape = self.data.shape
