"""
Vectorised per-source measurements: PSF-shaped centroid fits that
ignore invalid pixels and subtract neighbours, and DAOFIND-compatible
shape and brightness columns.
"""

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cnnfind._compat import PHOTUTILS_GE_31

__all__ = []


def _stamps(image, xi, yi, ry, rx, fill=0.0):
    """Cutouts ``(N, 2ry+1, 2rx+1)`` centred on integer positions."""
    ny, nx = image.shape
    xi, yi = np.asarray(xi), np.asarray(yi)
    inside = (yi >= ry) & (yi < ny - ry) & (xi >= rx) & (xi < nx - rx)
    if inside.any():
        # Stamps within the image: one gather from a strided view of all
        # the windows (several times faster than fancy indexing).
        windows = sliding_window_view(image, (2 * ry + 1, 2 * rx + 1))
        if inside.all():
            return windows[yi - ry, xi - rx]
        out = np.empty((len(xi), 2 * ry + 1, 2 * rx + 1), image.dtype)
        out[inside] = windows[yi[inside] - ry, xi[inside] - rx]
        out[~inside] = _stamps(image, xi[~inside], yi[~inside], ry, rx,
                               fill=fill)
        return out
    rows = yi[:, None] + np.arange(-ry, ry + 1)[None, :]
    cols = xi[:, None] + np.arange(-rx, rx + 1)[None, :]
    out = image[np.clip(rows, 0, ny - 1)[:, :, None],
                np.clip(cols, 0, nx - 1)[:, None, :]]
    # Off-image pixels read ``fill`` (only gathered, never the whole image
    # padded: this runs on every source of large frames).
    off = ((rows < 0) | (rows >= ny))[:, :, None] | (
        (cols < 0) | (cols >= nx))[:, None, :]
    if off.any():
        out = np.where(off, np.asarray(fill, dtype=out.dtype), out)
    return out


def _centres(x, y, shape):
    """Rounded positions clipped into the image."""
    xi = np.clip(np.round(x).astype(int), 0, shape[1] - 1)
    yi = np.clip(np.round(y).astype(int), 0, shape[0] - 1)
    return xi, yi


def _ellipse_coeffs(kernel_sigmas, theta):
    """Quadratic-form coefficients (a, b, c) of an elliptical Gaussian."""
    xs, ys = kernel_sigmas
    t = np.deg2rad(theta % 360.0)
    cost, sint = np.cos(t), np.sin(t)
    a = cost**2 / (2 * xs**2) + sint**2 / (2 * ys**2)
    b = 0.5 * cost * sint * (1 / xs**2 - 1 / ys**2)
    c = sint**2 / (2 * xs**2) + cost**2 / (2 * ys**2)
    return a, b, c


def _gauss(dx, dy, abc):
    """
    Elliptical Gaussian of peak 1 at offsets ``dx, dy`` (broadcast).

    For an axis-aligned ellipse (``b == 0``) and offsets laid out on
    separate axes (``(N, 1, W)`` and ``(N, H, 1)``), two small
    exponentials and one product replace an exponential per pixel.
    """
    a, b, c = abc
    if b == 0:
        return np.exp(-a * dx**2) * np.exp(-c * dy**2)
    return np.exp(-(a * dx**2 + 2 * b * dx * dy + c * dy**2))


def _normal_equations(jac, w, resid):
    """Batched ``J^T W J`` and ``J^T W r`` (BLAS matmuls)."""
    jw = jac * w.reshape(len(jac), -1, 1)
    jt = jw.transpose(0, 2, 1)
    jtj = jt @ jac
    jtr = None if resid is None else (jt @ resid[..., None])[..., 0]
    return jtj, jtr


def _fit_stamps(data, valid, x0, y0, radius, sky):
    """
    Sky-subtracted data stamps ``d`` (zero at invalid pixels), weights
    ``w`` and pixel coordinates ``gx`` ``(N, 1, W)``, ``gy`` ``(N, H, 1)``
    around the rounded positions ``x0, y0``.
    """
    xi, yi = _centres(x0, y0, data.shape)
    w = _stamps(valid, xi, yi, radius, radius, fill=False)
    d = _stamps(data, xi, yi, radius, radius, fill=0.0).astype(np.float64)
    d = np.where(w, d - sky, 0.0)
    off = np.arange(-radius, radius + 1, dtype=float)
    gy = off[None, :, None] + yi[:, None, None]
    gx = off[None, None, :] + xi[:, None, None]
    return d, w.astype(np.float64), gx, gy


def _start_amplitudes(data, valid, x0, y0, abc, radius, *, sky=0.0):
    """
    Linear PSF amplitudes at the start positions, for a cheap early cut.

    Returns the larger of two estimates, one with a local constant
    background fitted (low next to a bright neighbour) and one with the
    sky taken as known (low on a local sky depression), so that a real
    source is rarely underestimated by both, and the amplitude's
    relative error (as `_fit_sources`).
    """
    if len(x0) == 0:
        return np.zeros(0), np.zeros(0)
    d, w, gx, gy = _fit_stamps(data, valid, x0, y0, radius, sky)
    g = _gauss(gx - x0[:, None, None], gy - y0[:, None, None], abc)
    n = len(x0)
    jac = np.stack([g, np.ones_like(g)], axis=-1).reshape(n, -1, 2)
    jtj, jtr = _normal_equations(jac, w, d.reshape(n, -1))
    sol = np.linalg.solve(jtj + np.eye(2) * 1e-9, jtr[..., None])[..., 0]
    ggw = np.maximum(jtj[:, 0, 0], 1e-300)
    with np.errstate(divide='ignore'):
        rel_err = 1.0 / np.sqrt(jtj[:, 0, 0])
    return np.maximum(sol[:, 0], jtr[:, 0] / ggw), rel_err


def _fit_sources(data, valid, x0, y0, abc, radius, *, sky=0.0, iters=6,
                 others=None):
    """
    Fit ``A * G(x - xc, y - yc) + B`` to each source (Gauss-Newton).

    ``sky`` is subtracted from ``data``; invalid pixels have zero
    weight. ``others`` (stamps as made by `_neighbour_stamps`), if given,
    is subtracted too: the summed models of all the other sources, so
    that neighbours do not pull the fit.

    Returns
    -------
    xc, yc, amp, bkg, amp_rel_err : 1D arrays
        ``amp_rel_err`` is the amplitude's matched-filter standard error
        in units of the pixel noise (white noise, local background
        known).
    """
    if len(x0) == 0:
        return tuple(np.zeros(0) for _ in range(5))
    d, w, gx, gy = _fit_stamps(data, valid, x0, y0, radius, sky)
    if others is not None:
        d = d - others
    xc, yc = x0.astype(float).copy(), y0.astype(float).copy()
    n = len(xc)
    amp = np.zeros(n)
    bkg = np.zeros(n)
    rel_err = np.full(n, np.inf)
    a, b, c = abc
    limit = max(radius * 0.5, 1.0)
    for it in range(iters):
        dx = gx - xc[:, None, None]
        dy = gy - yc[:, None, None]
        g = _gauss(dx, dy, abc)
        if it == 0:
            # Linear solve for A and B at the starting position.
            jac = np.stack([g, np.ones_like(g)], axis=-1).reshape(n, -1, 2)
            jtj, jtr = _normal_equations(jac, w, d.reshape(n, -1))
            jtj += np.eye(2) * 1e-9
            sol = np.linalg.solve(jtj, jtr[..., None])[..., 0]
            amp, bkg = sol[:, 0], sol[:, 1]
            continue
        ag = amp[:, None, None] * g
        jx = ag * (2 * a * dx + 2 * b * dy)
        jy = ag * (2 * b * dx + 2 * c * dy)
        jac = np.stack([g, jx, jy, np.ones_like(g)], axis=-1).reshape(n, -1, 4)
        resid = (d - ag - bkg[:, None, None]).reshape(n, -1)
        jtj, jtr = _normal_equations(jac, w, resid)
        # Levenberg-Marquardt damping relative to each parameter's own
        # curvature: the position terms scale with amp**2, so an absolute
        # floor would freeze the fit on data in small units (Jy, erg/s).
        diag = np.einsum('nii->ni', jtj)
        damping = np.where(diag > 0, 1e-3 * diag, 1.0)
        jtj_damped = jtj + np.einsum('ni,ij->nij', damping, np.eye(4))
        step = np.linalg.solve(jtj_damped, jtr[..., None])[..., 0]
        step[:, 1:3] = np.clip(step[:, 1:3], -1.0, 1.0)
        amp = amp + step[:, 0]
        xc = xc + step[:, 1]
        yc = yc + step[:, 2]
        bkg = bkg + step[:, 3]
        # Keep each fit near its detection.
        xc = np.clip(xc, np.maximum(x0 - limit, -0.5),
                     np.minimum(x0 + limit, data.shape[1] - 0.5))
        yc = np.clip(yc, np.maximum(y0 - limit, -0.5),
                     np.minimum(y0 + limit, data.shape[0] - 0.5))
    g = _gauss(gx - xc[:, None, None], gy - yc[:, None, None], abc)
    # Matched-filter error of the amplitude with the local background
    # taken as known, as detection thresholds on a background-subtracted
    # image (SExtractor, SEP) treat it.
    with np.errstate(divide='ignore'):
        rel_err = 1.0 / np.sqrt((w * g**2).sum(axis=(1, 2)))
    return xc, yc, amp, bkg, rel_err


def _detection_amplitudes(data, valid, xc, yc, amp, abc, radius, background):
    """
    PSF amplitudes for the detection threshold: the amplitude alone,
    fitted (linear) at the fitted positions with the local ``background``
    (one value per source, data units) taken as known and the models of
    the other sources (amplitudes ``amp``; 0 for non-finite ones)
    subtracted.

    Returns
    -------
    amp, amp_rel_err : 1D arrays
        As `_fit_sources`; NaN where a stamp has no valid pixel.
    """
    if len(xc) == 0:
        return np.zeros(0), np.zeros(0)
    others = _neighbour_stamps(data.shape, xc, yc,
                               np.where(np.isfinite(amp),
                                        np.clip(amp, 0, None), 0.0),
                               abc, radius)
    d, w, gx, gy = _fit_stamps(data, valid, xc, yc, radius,
                               np.asarray(background, float)[:, None, None])
    g = _gauss(gx - xc[:, None, None], gy - yc[:, None, None], abc) * w
    gg = (g * g).sum(axis=(1, 2))
    with np.errstate(divide='ignore', invalid='ignore'):
        return (g * (d - others)).sum(axis=(1, 2)) / gg, 1.0 / np.sqrt(gg)


def _render_models(shape, xc, yc, amp, abc, radius, band=64):
    """
    Sum of the fitted Gaussians (no background) on an image.

    The stamps are accumulated band by band of ``band`` image rows with
    ``np.bincount`` (far cheaper than ``np.add.at``), so the temporary
    memory is bounded by one band, not the image.
    """
    ny, nx = shape
    model = np.zeros((ny + 2 * radius, nx + 2 * radius), np.float32)
    width = model.shape[1]
    xi, yi = _centres(xc, yc, shape)
    off = np.arange(-radius, radius + 1)
    order = np.argsort(yi, kind='stable')
    starts = np.searchsorted(yi[order], np.arange(0, ny + band, band))
    for k, row0 in enumerate(range(0, ny, band)):
        sel = order[starts[k]:starts[k + 1]]
        if len(sel) == 0:
            continue
        height = min(band, ny - row0) + 2 * radius
        dx = off[None, None, :] + (xi[sel] - xc[sel])[:, None, None]
        dy = off[None, :, None] + (yi[sel] - yc[sel])[:, None, None]
        vals = amp[sel, None, None] * _gauss(dx, dy, abc)
        # Buffer row 0 is padded-model row ``row0``.
        rows = (yi[sel] - row0 + radius)[:, None] + off
        cols = (xi[sel] + radius)[:, None] + off
        idx = rows[:, :, None] * width + cols[:, None, :]
        buf = np.bincount(idx.ravel(), weights=vals.ravel(),
                          minlength=height * width)
        model[row0:row0 + height] += buf.reshape(height, width)
    return model[radius:-radius, radius:-radius]


def _neighbour_stamps(shape, xc, yc, amp, abc, radius):
    """
    For each source, the summed models of all *other* sources on its
    fitting stamp (centred on its rounded position).
    """
    model = _render_models(shape, xc, yc, amp, abc, radius)
    xi, yi = _centres(xc, yc, shape)
    off = np.arange(-radius, radius + 1)
    dx = off[None, None, :] + xi[:, None, None] - xc[:, None, None]
    dy = off[None, :, None] + yi[:, None, None] - yc[:, None, None]
    own = amp[:, None, None] * _gauss(dx, dy, abc)
    return _stamps(model, xi, yi, radius, radius) - own


def _dao_columns(data, valid, fill, xi, yi, kernel, chunk=512):
    """
    DAOFIND's sharpness, roundness1, roundness2, peak, flux and the
    convolved peak, at integer source positions.

    Invalid pixels of ``data`` are replaced by those of ``fill`` (the
    fitted source models plus the sky).
    """
    ky, kx = kernel.shape
    cy, cx = ky // 2, kx // 2
    out = {k: [] for k in ('sharpness', 'roundness1', 'roundness2', 'peak',
                           'flux', 'conv_peak')}
    xw = cx - np.abs(np.arange(kx) - cx) + 1.0
    yw = cy - np.abs(np.arange(ky) - cy) + 1.0
    gk = kernel.gaussian_kernel_unmasked
    for s in range(0, len(xi), chunk):
        sx, sy = xi[s:s + chunk], yi[s:s + chunk]
        big = np.where(_stamps(valid, sx, sy, 2 * cy, 2 * cx, fill=True),
                       _stamps(data, sx, sy, 2 * cy, 2 * cx, fill=0.0),
                       _stamps(fill, sx, sy, 2 * cy, 2 * cx, fill=0.0)
                       ).astype(np.float64)
        conv = np.einsum('nyxij,ij->nyx',
                         sliding_window_view(big, (ky, kx), axis=(1, 2)),
                         kernel.data, optimize=True)
        cut = big[:, cy:cy + ky, cx:cx + kx]
        peak = cut[:, cy, cx]
        conv_peak = conv[:, cy, cx]
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            mean = ((cut * kernel.mask).sum(axis=(1, 2)) - peak) / (
                kernel.n_pixels - 1)
            sharp = (peak - mean) / conv_peak
            cc = conv.copy()
            cc[:, cy, cx] = 0.0
            q1 = cc[:, :cy + 1, cx + 1:].sum(axis=(1, 2))
            q2 = cc[:, :cy, :cx + 1].sum(axis=(1, 2))
            q3 = cc[:, cy:, :cx].sum(axis=(1, 2))
            q4 = cc[:, cy + 1:, cx:].sum(axis=(1, 2))
            round1 = 2.0 * (-q1 + q2 - q3 + q4) / np.abs(cc).sum(axis=(1, 2))
            h = []
            for axis, wt, wts in ((1, xw, yw), (0, yw, xw)):
                # Marginal (triangle-weighted) Gaussian heights.
                kern1 = (gk * (wts[:, None] if axis == 1 else wts[None, :])
                         ).sum(axis=1 - axis)
                dat1 = (cut * (wts[None, :, None] if axis == 1
                               else wts[None, None, :])).sum(axis=2 - axis)
                wsum = wt.sum()
                ksum = (kern1 * wt).sum()
                numer = (dat1 * kern1 * wt).sum(axis=1) - (
                    dat1 * wt).sum(axis=1) * ksum / wsum
                denom = (kern1**2 * wt).sum() - ksum**2 / wsum
                hh = numer / denom
                hh[(numer <= 0) | (denom <= 0)] = np.nan
                h.append(hh)
            round2 = 2.0 * (h[0] - h[1]) / (h[0] + h[1])
        out['sharpness'].append(sharp)
        out['roundness1'].append(round1)
        out['roundness2'].append(round2)
        out['peak'].append(peak)
        # As the installed DAOStarFinder: the kernel footprint from
        # photutils 3.1, the whole kernel box in 3.0.
        out['flux'].append((cut * kernel.mask).sum(axis=(1, 2))
                           if PHOTUTILS_GE_31 else cut.sum(axis=(1, 2)))
        out['conv_peak'].append(conv_peak)
    return {k: (np.concatenate(v) if v else np.zeros(0))
            for k, v in out.items()}
