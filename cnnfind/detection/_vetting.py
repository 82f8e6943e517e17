"""
Candidate vetting: the second stage of CNNStarFinder.

The network's heatmap peak ranks faint stars less well than the
matched-filter SNR does, and on its own cannot tell every cosmic ray or
compact galaxy from a star. The vetting stage measures, on each
candidate's stamp (its fitted neighbours subtracted), the statistics a
classical pipeline would use -- the matched-filter SNR against the local
and the global sky, and how much better the PSF fits than a sharp spike
or a broad profile -- and a small classifier (a gradient-boosted tree
ensemble, run by onnxruntime) turns them, with the network's own logit,
into the probability that the candidate is a star.
"""

import numpy as np

from cnnfind.detection._background import _clipped_row_medians
from cnnfind.detection._measure import (
    _centres,
    _gauss,
    _render_models,
    _stamps,
)

__all__ = []

#: The features, in the order the vetting model takes them.
FEATURES = ('network_logit', 'log_snr_local', 'sharp_vs_psf',
            'broad_vs_psf', 'log_chi2_psf', 'log_fwhm', 'log_local_noise',
            'log_brighter_neighbour_distance', 'local_sky',
            'psf_vs_nothing', 'log_snr_global')

#: Candidates measured at once (bounds the memory of the stamps).
_CHUNK = 4096


def _signed_sqrt(v):
    return np.sign(v) * np.sqrt(np.abs(v))


def _template_fit(data, core, template):
    """Amplitude-only least squares of ``template`` on the ``core`` pixels."""
    t = template * core
    tt = (t * t).sum(axis=1)
    amp = (t * data).sum(axis=1) / np.maximum(tt, 1e-12)
    chi2 = (core * (data - amp[:, None] * t)**2).sum(axis=1)
    return chi2, amp * np.sqrt(tt)


def _chunk_features(d, w, dx, dy, abc, fwhm):
    """Features of one chunk of stamps ``d`` (in noise units, sky removed)."""
    n, side = d.shape[0], d.shape[1]
    r = side // 2
    rr = np.hypot(dx, dy).reshape(n, -1)
    data, valid = d.reshape(n, -1), w.reshape(n, -1)
    # Local sky and noise: robust statistics of the annulus beyond the core.
    annulus = np.where((rr > 1.6 * fwhm) & valid, data, np.nan)
    local_sky = _clipped_row_medians(annulus, iters=0, min_count=1)
    local_noise = 1.4826 * _clipped_row_medians(
        np.abs(annulus - local_sky[:, None]), iters=0, min_count=1)
    local_sky = np.where(np.isfinite(local_sky), local_sky, 0.0)
    local_noise = np.where(np.isfinite(local_noise) & (local_noise > 0),
                           local_noise, 1.0)
    core = (rr <= 1.6 * fwhm) & valid
    psf = _gauss(dx, dy, abc).reshape(n, -1)
    _, snr_global = _template_fit(data * valid, core, psf)
    data = (data - local_sky[:, None]) * valid
    chi2_psf, snr_local = _template_fit(data, core, psf)
    a, b, c = abc
    broad = _gauss(dx, dy, (a / 6.25, b / 6.25, c / 6.25)).reshape(n, -1)
    chi2_broad, _ = _template_fit(data, core, broad)
    # A spike on the brightest of the central 3x3 pixels.
    centre = data.reshape(n, side, side)[:, r - 1:r + 2, r - 1:r + 2]
    k = centre.reshape(n, -1).argmax(axis=1)
    spike = np.zeros((n, side, side))
    spike[np.arange(n), r - 1 + k // 3, r - 1 + k % 3] = 1.0
    chi2_spike, _ = _template_fit(data, core, spike.reshape(n, -1))
    chi2_none = (core * data**2).sum(axis=1)
    dof = np.maximum(core.sum(axis=1) - 1, 1)
    return np.column_stack([
        np.log(np.clip(snr_local, 0.1, None)),
        _signed_sqrt(chi2_psf - chi2_spike),
        _signed_sqrt(chi2_psf - chi2_broad),
        np.log(np.maximum(chi2_psf, 1e-6) / dof),
        np.full(n, np.log(fwhm)),
        np.log(local_noise),
        np.zeros(n),  # filled by the caller: brighter-neighbour distance
        local_sky,
        _signed_sqrt(chi2_none - chi2_psf),
        np.log(np.clip(snr_global, 0.1, None)),
    ])


def _brighter_neighbour_distance(xc, yc, amp, fwhm):
    """Distance to the nearest brighter candidate, in FWHM (capped at 10)."""
    from scipy.spatial import cKDTree
    n = len(xc)
    cap = 10.0 * fwhm
    if n < 2:
        return np.full(n, 10.0)
    k = min(8, n)
    dist, idx = cKDTree(np.column_stack([xc, yc])).query(
        np.column_stack([xc, yc]), k=k)
    brighter = amp[idx] > amp[:, None]
    nearest = np.where(brighter, dist, np.inf).min(axis=1)
    return np.minimum(nearest, cap) / fwhm


def vetting_features(data, valid, sky, noise, fwhm, abc, xc, yc, amp, raw,
                     subset=None):
    """
    The vetting features of each candidate.

    Parameters
    ----------
    data, valid : 2D arrays
        The image and its validity map.
    sky, noise : float
        Global sky and noise.
    fwhm : float
        The PSF FWHM in pixels.
    abc : tuple
        The PSF ellipse coefficients (``_ellipse_coeffs``).
    xc, yc, amp : 1D arrays
        Fitted positions and amplitudes of all candidates (their models
        are subtracted from each other's stamps).
    raw : 1D array
        The network's heatmap value at each candidate, in (0, 1).
    subset : 1D int or bool array, optional
        Measure only these candidates (all of them still count as
        neighbours).

    Returns
    -------
    features : 2D float array ``(N, len(FEATURES))``
        One row per candidate (of ``subset``, if given). Finite
        everywhere.
    """
    idx = np.arange(len(xc)) if subset is None else np.arange(len(xc))[subset]
    n = len(idx)
    out = np.zeros((n, len(FEATURES)))
    if n == 0:
        return out
    radius = max(4, int(np.ceil(2.5 * fwhm)))
    amp_pos = np.where(np.isfinite(amp), np.clip(amp, 0, None), 0.0)
    raw = np.clip(np.asarray(raw, float)[idx], 1e-7, 1 - 1e-7)
    out[:, 0] = np.log(raw / (1 - raw))
    off = np.arange(-radius, radius + 1, dtype=float)
    # All candidates' fitted models; each stamp gets the others' removed.
    model = _render_models(data.shape, xc, yc, amp_pos, abc, radius)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        k = idx[sl]
        xi, yi = _centres(xc[k], yc[k], data.shape)
        w = _stamps(valid, xi, yi, radius, radius, fill=False)
        d = _stamps(data, xi, yi, radius, radius).astype(np.float64)
        dx = off[None, None, :] + (xi - xc[k])[:, None, None]
        dy = off[None, :, None] + (yi - yc[k])[:, None, None]
        own = amp_pos[k, None, None] * _gauss(dx, dy, abc)
        others = _stamps(model, xi, yi, radius, radius) - own
        d = np.where(w, d - sky - others, 0.0)
        out[sl, 1:] = _chunk_features(d / noise, w, dx, dy, abc, fwhm)
    out[:, 7] = np.log(
        _brighter_neighbour_distance(xc, yc, amp_pos, fwhm)[idx])
    return np.where(np.isfinite(out), out, 0.0)
