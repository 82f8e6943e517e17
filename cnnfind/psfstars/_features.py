# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Cutouts of PSF-star candidates, the measurements behind the readable
rejection reasons, the field's reference stamp and the network input.

Numpy only; shared by `PSFStarSelector` and its training script so that
the network sees exactly what it was trained on.
"""

import warnings

import numpy as np
from scipy.spatial import cKDTree

from cnnfind.simulation.psf import render_profiles

__all__ = []

#: Side of the stamps the network sees (written in the model card).
STAMP = 25
#: Clipping range of the peak-normalised stamps.
CLIP = (-2.0, 5.0)
#: Reference stack: at most this many of the brightest clean-looking
#: candidates with at least this aperture SNR.
REF_MAX = 40
REF_SNR = 30.0


def _cutouts(data, valid, x, y, half):
    """
    Integer-centred ``(2 half + 1)**2`` cutouts and their validity
    (pixels outside the image are invalid).
    """
    ny, nx = data.shape
    xi = np.clip(np.round(np.nan_to_num(x, nan=-1.0)).astype(int), 0, nx - 1)
    yi = np.clip(np.round(np.nan_to_num(y, nan=-1.0)).astype(int), 0, ny - 1)
    dp = np.pad(data, half, constant_values=0)
    vp = np.pad(valid, half, constant_values=False)
    off = np.arange(-half, half + 1)
    rows = (yi + half)[:, None, None] + off[None, :, None]
    cols = (xi + half)[:, None, None] + off[None, None, :]
    return dp[rows, cols], vp[rows, cols], xi, yi


def _frame(shape):
    """`True` on the 2-pixel border of a cutout of ``shape``."""
    frame = np.ones(shape, bool)
    frame[2:-2, 2:-2] = False
    return frame


def _frame_median(stamps, valid, fallback):
    """Median of the valid pixels of each cutout's 2-pixel border."""
    frame = _frame(stamps.shape[1:])
    vals = np.where(valid & frame, stamps, np.nan)[:, frame]
    with np.errstate(all='ignore'), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        med = np.nanmedian(vals, axis=1)
    return np.where(np.isfinite(med), med, fallback)


def _border_plane(data, good, n_iter=3, clip=3.0):
    """
    The sky under a cutout: a plane fitted to the valid pixels of its
    2-pixel border, with pixels more than ``clip`` robust sigma off the
    fit (a neighbour's wing, a cosmic ray) left out, evaluated on the
    whole cutout. The border's median where too few pixels are valid.
    """
    border = _frame(data.shape) & good
    if border.sum() < 12:
        values = data[border]
        return np.full(data.shape, np.median(values) if values.size else 0.0)
    yy, xx = np.indices(data.shape, dtype=float)
    xx -= (data.shape[1] - 1) / 2
    yy -= (data.shape[0] - 1) / 2
    design = np.column_stack([np.ones(data.size), xx.ravel(), yy.ravel()])
    values = data.ravel()
    border = border.ravel()
    use = border
    for _ in range(n_iter):
        coef = np.linalg.lstsq(design[use], values[use], rcond=None)[0]
        resid = values - design @ coef
        spread = 1.4826 * np.median(np.abs(resid[use]))
        keep = border & (np.abs(resid) <= clip * max(spread, 1e-30))
        if keep.sum() < 12 or np.array_equal(keep, use):
            break
        use = keep
    return (design @ coef).reshape(data.shape)


def _subtract_local_sky(stars):
    """
    `~photutils.psf.EPSFStars` with each cutout's own sky subtracted: a
    plane fitted to its 2-pixel border (see `_border_plane`).

    An image's global sky leaves a residual on the cutouts of a frame
    whose sky varies (vignetted plates, scattered light, a galaxy's
    halo); summed over a cutout, that residual can outweigh the star's
    flux and make `~photutils.psf.EPSFBuilder` fail to normalise the
    ePSF. A plane rather than a constant also takes out a gradient
    across the cutout.
    """
    from photutils.psf import EPSFStar, EPSFStars
    out = []
    for star in stars.all_stars:
        data = np.asarray(star.data, float)
        good = (np.ones(data.shape, bool) if star.weights is None
                else np.asarray(star.weights) > 0)
        sky = _border_plane(data, good)
        out.append(EPSFStar(np.where(good, data - sky, 0.0),
                            weights=star.weights,
                            cutout_center=star.cutout_center,
                            origin=star.origin, wcs_large=star.wcs_large,
                            id_label=star.id_label))
    return EPSFStars(out)


def _measure(stamps, valid, x, y, xi, yi, sky, noise, fwhm, half):
    """
    Per-candidate measurements on sky-subtracted cutouts (``sky`` is one
    value per cutout).

    Returns a dict of arrays: ``peak`` (above the sky), ``flux``
    (aperture of radius 3 FWHM), ``snr`` (aperture of radius 1 FWHM),
    ``roundness`` (1 - b/a from Gaussian-weighted moments), ``size``
    (moment FWHM / ``fwhm``), ``conc`` (peak / 1-FWHM aperture flux),
    ``n_flat`` (pixels of the central 5x5 at the maximum value),
    ``edge`` (the box is cut by the image edge or holds a masked / NaN
    pixel).
    """
    sky = np.asarray(sky, float).reshape(-1, 1, 1)
    s = np.where(valid, stamps - sky, 0.0)
    n = len(x)
    c = half
    core = s[:, c - 1:c + 2, c - 1:c + 2]
    core_valid = valid[:, c - 1:c + 2, c - 1:c + 2]
    peak = np.where(core_valid, core, -np.inf).reshape(n, -1).max(axis=1)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    off = np.arange(-half, half + 1)
    dx = off[None, None, :] - (x - xi)[:, None, None]
    dy = off[None, :, None] - (y - yi)[:, None, None]
    r2 = dx**2 + dy**2
    ap1 = r2 <= fwhm**2
    ap3 = r2 <= min(3 * fwhm, half)**2
    nv1 = (ap1 & valid).sum(axis=(1, 2))
    frac1 = nv1 / np.maximum(ap1.sum(axis=(1, 2)), 1)
    flux1 = (s * ap1).sum(axis=(1, 2)) / np.maximum(frac1, 1e-3)
    frac3 = (ap3 & valid).sum(axis=(1, 2)) / np.maximum(ap3.sum(axis=(1, 2)), 1)
    flux = (s * ap3).sum(axis=(1, 2)) / np.maximum(frac3, 1e-3)
    snr = flux1 / (noise * np.sqrt(np.maximum(nv1, 1)))
    sig = 1.5 * fwhm / 2.3548
    w = np.clip(s, 0, None) * np.exp(-0.5 * r2 / sig**2)
    sw = np.maximum(w.sum(axis=(1, 2)), 1e-30)
    mx = (w * dx).sum(axis=(1, 2)) / sw
    my = (w * dy).sum(axis=(1, 2)) / sw
    mxx = (w * dx**2).sum(axis=(1, 2)) / sw - mx**2
    myy = (w * dy**2).sum(axis=(1, 2)) / sw - my**2
    mxy = (w * dx * dy).sum(axis=(1, 2)) / sw - mx * my
    tr = np.clip(mxx + myy, 1e-6, None)
    det = np.sqrt(np.clip(((mxx - myy) / 2)**2 + mxy**2, 0, None))
    l1, l2 = tr / 2 + det, np.clip(tr / 2 - det, 1e-6, None)
    roundness = 1.0 - np.sqrt(l2 / l1)
    # Moments of a Gaussian of width s under a weight of width sig.
    s2 = 1.0 / np.clip(2.0 / tr - 1.0 / sig**2, 1e-6, None)
    size = np.sqrt(s2) * 2.3548 / fwhm
    conc = peak / np.maximum(flux1, 1e-30)
    raw = np.where(valid, stamps, -np.inf)[:, c - 2:c + 3, c - 2:c + 3]
    top = raw.reshape(n, -1).max(axis=1)
    n_flat = (raw.reshape(n, -1) >= top[:, None]).sum(axis=1)
    edge = ~valid.all(axis=(1, 2))
    return {'peak': peak, 'flux': flux, 'snr': snr, 'roundness': roundness,
            'size': size, 'conc': conc, 'n_flat': n_flat, 'edge': edge,
            'raw_max': top}


def _neighbours(x, y, flux, fwhm, isolation, flux_ratio):
    """
    Distance to the nearest other candidate, and whether a candidate of
    at least ``flux_ratio`` times the flux lies within ``isolation``
    FWHM.
    """
    n = len(x)
    nearest = np.full(n, np.inf)
    crowded = np.zeros(n, bool)
    if n < 2:
        return nearest, crowded
    pts = np.column_stack([x, y])
    tree = cKDTree(pts)
    d, j = tree.query(pts, k=2)
    nearest = d[:, 1]
    f = np.where(np.isfinite(flux), flux, np.inf)
    for i, group in enumerate(tree.query_ball_point(pts, isolation * fwhm)):
        others = [k for k in group if k != i]
        if others and np.any(f[others] >= flux_ratio * max(f[i], 0.0)):
            crowded[i] = True
    return nearest, crowded


def _analytic_reference(fwhm):
    """Peak-normalised Moffat (beta 3) stamp: the fallback reference."""
    stamp = np.zeros((STAMP, STAMP))
    c = STAMP // 2
    render_profiles(stamp, c, c, 1.0, fwhm, kind='moffat', beta=3.0, radius=c)
    return (stamp / stamp.max()).astype(np.float32)


def _normalised(stamps, valid, sky, amp):
    """The network's view of each cutout: peak-normalised, clipped."""
    x = (stamps - np.asarray(sky).reshape(-1, 1, 1)) / amp[:, None, None]
    return np.where(valid, np.clip(x, *CLIP), 0.0).astype(np.float32)


def _reference(norm, valid, usable, snr, fwhm):
    """
    The field's reference stamp: the pixel-wise median of the
    normalised stamps of the brightest usable candidates (at most
    ``REF_MAX`` with SNR >= ``REF_SNR``), or the analytic fallback when
    fewer than three qualify; and the indices of the stacked candidates
    (empty for the fallback).
    """
    idx = np.flatnonzero(usable & (snr >= REF_SNR))
    idx = idx[np.argsort(-snr[idx])][:REF_MAX]
    if len(idx) < 3:
        return _analytic_reference(fwhm), idx[:0]
    stack = np.where(valid[idx], norm[idx], np.nan)
    ref = np.nanmedian(stack, axis=0)
    return np.nan_to_num(ref).astype(np.float32), idx


def _network_input(norm, valid, ref, fwhm, amp, noise, x, y, xi, yi):
    """``stamps`` (N, 3, STAMP, STAMP) and ``scalars`` (N, 4)."""
    n = len(norm)
    stamps = np.empty((n, 3, STAMP, STAMP), np.float32)
    stamps[:, 0] = norm
    stamps[:, 1] = ref[None]
    stamps[:, 2] = valid
    scalars = np.column_stack([
        np.full(n, np.log(fwhm / 3.0)),
        np.log10(np.maximum(amp / noise, 1.0)) / 2.0 - 1.0,
        x - xi, y - yi]).astype(np.float32)
    return stamps, scalars


def _prepare_candidates(data, valid, sky, noise, x, y, fwhm, *, half,
                        isolation, flux_ratio, exclude=None):
    """
    Everything the selector (and its training) needs for candidates at
    ``(x, y)``: the measurements, neighbour information, the reference
    and the network input. ``exclude`` (boolean, one per candidate)
    keeps candidates known to be unusable (saturated) out of the
    reference stamp.
    """
    big = max(half, STAMP // 2)
    stamps, svalid, xi, yi = _cutouts(data, valid, x, y, big)
    k = big - half
    inner = (slice(None), slice(k, stamps.shape[1] - k),
             slice(k, stamps.shape[2] - k))
    local = _frame_median(stamps[inner], svalid[inner], sky)
    m = _measure(stamps, svalid, x, y, xi, yi, local, noise, fwhm, big)
    m['local_sky'] = local
    if half < big:  # edge/mask test on the extraction box only
        k = big - half
        m['edge'] = ~svalid[:, k:-k, k:-k].all(axis=(1, 2))
    m['nearest'], m['crowded'] = _neighbours(x, y, m['flux'], fwhm,
                                             isolation, flux_ratio)
    amp = np.maximum(m['peak'], noise)
    k = big - STAMP // 2
    if k:
        ring = _ring_outlier(stamps, svalid, local, amp, noise, k)
        stamps, svalid = stamps[:, k:-k, k:-k], svalid[:, k:-k, k:-k]
    norm = _normalised(stamps, svalid, local, amp)
    usable = ~m['edge'] & ~m['crowded'] & (m['n_flat'] < 3)
    if exclude is not None:
        usable &= ~np.asarray(exclude, bool)
    ref, ref_idx = _reference(norm, svalid, usable, m['snr'], fwhm)
    n_ref = len(ref_idx)
    m['stamps'], m['scalars'] = _network_input(norm, svalid, ref, fwhm, amp,
                                               noise, x, y, xi, yi)
    m['n_reference'] = n_ref
    m['resid_max'], m['resid_sig'], m['resid_sharp'] = _residual_outlier(
        norm, svalid, ref, noise / amp, fwhm)
    if k:
        # A box larger than the network's stamp: light in its outer ring
        # is other light in the box too (the PSF's own wing there is far
        # below the 10 % of the peak that rejects a star).
        ring_max, ring_sig = ring
        worse = ring_max > m['resid_max']
        m['resid_max'] = np.where(worse, ring_max, m['resid_max'])
        m['resid_sig'] = np.where(worse, ring_sig, m['resid_sig'])
        m['resid_sharp'] &= ~worse
    c = STAMP // 2
    r = np.hypot(*np.mgrid[-c:c + 1, -c:c + 1]) <= fwhm
    if n_ref:
        # The reference stars' own median concentration: the median
        # stack of integer-centred stamps is broadened by their
        # sub-pixel offsets (much so for small FWHM), so its
        # concentration would make ordinary stars look sharp.
        m['conc_ref'] = float(np.median(m['conc'][ref_idx]))
    else:
        m['conc_ref'] = float(ref[c, c] / max(ref[r].sum(), 1e-30))
    return m


def _ring_outlier(stamps, valid, sky, amp, noise, k):
    """
    The most discrepant pixel of each cutout outside its central
    ``STAMP`` x ``STAMP`` stamp (the outer ``k`` pixels of a larger box,
    which the network and `_residual_outlier` do not see): its absolute
    value above ``sky`` in units of the peak ``amp``, and its
    significance in units of the larger of the image noise and the
    robust scatter of the ring.
    """
    ring = np.ones(stamps.shape[1:], bool)
    ring[k:-k, k:-k] = False
    sky = np.asarray(sky, float).reshape(-1, 1, 1)
    norm = (stamps - sky) / amp[:, None, None]
    vals = np.where(valid & ring[None], norm, np.nan)[:, ring]
    with np.errstate(all='ignore'), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        rmax = np.nanmax(np.abs(vals), axis=1)
        med = np.nanmedian(vals, axis=1)
        spread = 1.4826 * np.nanmedian(np.abs(vals - med[:, None]), axis=1)
    rmax = np.where(np.isfinite(rmax), rmax, 0.0)
    spread = np.where(np.isfinite(spread), spread, 0.0)
    sig = rmax / np.maximum(np.maximum(noise / amp, spread), 1e-12)
    return rmax, sig


def _offset_cutouts(data, valid, x, y, half):
    """
    `_cutouts` of half-width ``half`` around ``(x, y)``, with the x and
    y offsets of every cutout pixel from its source's centroid.
    """
    stamps, svalid, xi, yi = _cutouts(data, valid, x, y, half)
    off = np.arange(-half, half + 1)
    shape = stamps.shape
    dx = np.broadcast_to(off[None, None, :] - (x - xi)[:, None, None], shape)
    dy = np.broadcast_to(off[None, :, None] - (y - yi)[:, None, None], shape)
    return stamps, svalid, dx, dy


def _core_fwhm(data, valid, sky, x, y, radius):
    """
    FWHM of a circular Gaussian fitted to the core of each star.

    The logarithm of the sky-subtracted pixels above 15 % of the peak
    within ``radius`` of the centroid is fitted with a paraboloid (weights
    proportional to the pixel value, Caruana's method); the pixel's own
    width (1/12 px**2) is removed from the variance. NaN where the fit
    fails.
    """
    half = int(np.ceil(radius)) + 1
    stamps, svalid, dx, dy = _offset_cutouts(data, valid, x, y, half)
    n = len(x)
    s = stamps - sky
    core = np.where(svalid, s, -np.inf)[:, half - 1:half + 2, half - 1:half + 2]
    peak = core.reshape(n, -1).max(axis=1)
    use = (svalid & (dx**2 + dy**2 <= radius**2)
           & (s > 0.15 * peak[:, None, None]))
    out = np.full(n, np.nan)
    for i in range(n):
        u = use[i]
        if u.sum() < 6:
            continue
        v = s[i][u]
        a = np.column_stack([np.ones(len(v)), dx[i][u], dy[i][u],
                             dx[i][u]**2 + dy[i][u]**2])
        coef = np.linalg.lstsq(a * v[:, None], np.log(v) * v, rcond=None)[0]
        if coef[3] < 0:
            var = -0.5 / coef[3] - 1.0 / 12.0
            if var > 0:
                out[i] = 2.3548 * np.sqrt(var)
    return out


#: Widths (Gaussian sigma, pixels) tried by `_aperture_fwhm`.
_SIGMA_GRID = np.geomspace(0.3, 8.0, 241)


def _aperture_fwhm(data, valid, sky, x, y, fwhm):
    """
    FWHM of a circular Gaussian plus a constant fitted by least squares
    to the valid pixels within ``1.5 * fwhm`` (at least 2.5 px) of each
    centroid.

    Unlike `_core_fwhm`, the pixels are chosen by their position only,
    never by their value: a cut on the noisy values (above 15 % of the
    peak, where that is within the noise) keeps the upward fluctuations
    of the wings and drops the downward ones, and makes faint stars
    look broad. The constant takes up the local background (a star on a
    galaxy or nebula), which a global ``sky`` would leave in the wings.
    The pixel's own width (1/12 px**2) is removed from the variance.
    NaN where the fit fails or lands on the edge of the widths tried.
    """
    radius = max(1.5 * fwhm, 2.5)
    half = int(np.ceil(radius)) + 1
    stamps, svalid, dx, dy = _offset_cutouts(data, valid, x, y, half)
    r2 = dx**2 + dy**2
    use = svalid & (r2 <= radius**2)
    resid = stamps - sky
    var = _SIGMA_GRID**2 + 1.0 / 12.0
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        u = use[i]
        m = int(u.sum())
        if m < 9:
            continue
        v = resid[i][u]
        g = np.exp(-0.5 * r2[i][u][None, :] / var[:, None])
        # least squares of v on (g, 1) for every width: the chi-square
        # falls by the projection of v on that plane, which the best
        # width maximises (with a positive amplitude)
        sg, sgg, sgv = g.sum(axis=1), np.einsum('ij,ij->i', g, g), g @ v
        sv = v.sum()
        det = m * sgg - sg**2
        with np.errstate(divide='ignore', invalid='ignore'):
            amp = (m * sgv - sg * sv) / det
            back = (sgg * sv - sg * sgv) / det
            gain = amp * sgv + back * sv
        gain = np.where((amp > 0) & (det > 1e-9 * m * sgg), gain, -np.inf)
        k = int(np.argmax(gain))
        if not 0 < k < len(_SIGMA_GRID) - 1 or not np.isfinite(gain[k]):
            continue
        out[i] = 2.3548 * _SIGMA_GRID[k]
    return out


def _stellar_fwhm(values):
    """
    The FWHM of the narrowest well-populated group of ``values`` (core
    FWHMs of bright candidates; NaN ignored), or NaN with fewer than 3.

    Point sources share the PSF's width; galaxies, HII regions and
    blends among the candidates are only ever broader. So the median is
    taken over the values within 15 % of the 20th percentile (the
    narrow end, above the few that noise makes too narrow), like
    PSFEx's selection of stars around the mode of the FWHM distribution.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 3:
        return np.nan
    lo = np.percentile(v, 20)
    near = v[(v >= lo / 1.15) & (v <= lo * 1.15)]
    return float(np.median(near)) if len(near) >= 3 else float(np.median(v))


def _residual_outlier(norm, valid, ref, noise_norm, fwhm):
    """
    The most discrepant pixel of each cutout against the reference
    stamp, outside the core (radius > 1.5 FWHM, where centring errors
    do not matter): its absolute residual in units of the peak, its
    significance in units of the larger of the image noise and the
    robust scatter of the cutout's own residual there, and whether it
    is sharp (a cosmic ray or hot pixel rather than a source: see
    below).
    """
    c = STAMP // 2
    yy, xx = np.mgrid[-c:c + 1, -c:c + 1]
    outer = np.hypot(xx, yy) > 1.5 * fwhm
    full = np.where(valid, norm - ref[None], 0.0)
    res = np.where(outer[None], full, 0.0)
    n = len(norm)
    flat = np.abs(res).reshape(n, -1)
    j = flat.argmax(axis=1)
    rmax = flat[np.arange(n), j]
    # The noise of the residual: the image noise, or the robust scatter
    # of the cutout's own residual outside the core where that is
    # larger (photon noise of bright stars, plate grain, correlated or
    # locally higher noise).
    outer_valid = outer[None] & valid
    vals = np.where(outer_valid, full, np.nan).reshape(n, -1)
    with np.errstate(all='ignore'), warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        med = np.nanmedian(vals, axis=1)
        local = 1.4826 * np.nanmedian(np.abs(vals - med[:, None]), axis=1)
    local = np.where(np.isfinite(local), local, 0.0)
    sig = rmax / np.maximum(np.maximum(noise_norm, local), 1e-12)
    jy, jx = np.unravel_index(j, (STAMP, STAMP))
    # Edge padding: a blob cut by the stamp's border keeps its size.
    pad = np.pad(np.abs(full), ((0, 0), (1, 1), (1, 1)), mode='edge')
    idx = np.arange(n)

    def at(dy, dx):
        return pad[idx, jy + 1 + dy, jx + 1 + dx]

    around = sum(at(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if dy or dx) / 8.0
    # A cosmic ray or hot pixel is narrower than anything the optics or
    # the noise make: one pixel, or a track one pixel wide. A feature
    # that fills a 2x2 block at half its peak or more is resolved -- a
    # faint star, a galaxy, or a grain or compression clump of
    # correlated noise (plate scans, resampled images) -- whatever its
    # contrast with its 8 neighbours.
    block = np.max([np.minimum(np.minimum(at(sy, 0), at(0, sx)), at(sy, sx))
                    for sy in (-1, 1) for sx in (-1, 1)], axis=0)
    sharp = (rmax >= 2.0 * np.maximum(around, 1e-12)) & (block < 0.5 * rmax)
    return rmax, sig, sharp


def _pileup_level(peak, flux, usable, *, min_stars=10, max_slope=0.5):
    """
    Peak level at which the stars' peaks stop growing with their flux.

    In a linear image the peak of a point source is proportional to its
    flux. When the detector or emulsion saturates softly (photographic
    plates, non-linear CCDs, saturation without a flat plateau) the
    peaks of the bright stars pile up at one level while their fluxes
    keep growing, and their profiles flatten. The slope of log(peak)
    against log(flux) (Theil-Sen) is measured over the brighter half
    of the ``usable`` candidates; if it is below ``max_slope`` the
    median peak of the brightest quarter is returned, else `None`.
    """
    from scipy.stats import theilslopes
    ok = usable & (peak > 0) & (flux > 0) & np.isfinite(flux)
    idx = np.flatnonzero(ok)
    if len(idx) < min_stars:
        return None
    idx = idx[np.argsort(flux[idx])]
    bright = idx[len(idx) // 2:]
    lf, lp = np.log(flux[bright]), np.log(peak[bright])
    if lf.max() - lf.min() < np.log(2.0):  # too short a lever arm
        return None
    slope = theilslopes(lp, lf)[0]
    if not slope < max_slope:
        return None
    return float(np.median(peak[idx[-max(len(idx) // 4, 3):]]))


def _blend_statistics(data, valid, sky, x, y, fwhm, test, reference):
    """
    Evidence that a star is an unresolved blend (a close double, a
    faint neighbour in the core): significant excess second moments
    against the field's PSF.

    Each star is shifted (cubic spline) so that its centroid falls on a
    pixel centre and divided by its peak. The median of the shifted
    ``reference`` stars is the empirical PSF ``R``. Within 2 FWHM, each
    star is fitted by least squares with ``R``, its first derivatives
    (a residual centring error), a constant and its second derivatives
    (a change of the second moments: what a companion closer than the
    core adds). The second-order coefficients, relative to the fitted
    amplitude, minus a smooth function of position fitted to the
    reference stars (``_smooth_trend``: a PSF that changes across the
    field is not a blend), give

    * ``chi2``: their significance, with the covariance from the fit
      and the noise from the star's own residual (3 degrees of
      freedom);
    * ``broadening``: the excess of the fitted second moment
      (``xx + yy``), as a fraction of the PSF's ``(FWHM / 2.3548)**2``
      (positive: broader than the PSF).

    Both are NaN for stars not in ``test``, and everywhere when fewer
    than three reference stars are usable.
    """
    n = len(x)
    chi2 = np.full(n, np.nan)
    broadening = np.full(n, np.nan)
    h = int(np.ceil(2.0 * fwhm)) + 1
    pad = 3
    stamps, svalid, xi, yi = _cutouts(data, valid, x, y, h + pad)
    ok = svalid.all(axis=(1, 2)) & np.isfinite(x) & np.isfinite(y)
    use = np.flatnonzero((test | reference) & ok)
    ref = reference[use]
    if ref.sum() < 3:
        return chi2, broadening
    from scipy import ndimage
    shifted = np.empty((len(use), 2 * h + 1, 2 * h + 1))
    sky = np.broadcast_to(np.asarray(sky, float), (n,))
    for k, i in enumerate(use):
        s = ndimage.shift(stamps[i] - sky[i], (yi[i] - y[i], xi[i] - x[i]),
                          order=3, mode='nearest')
        shifted[k] = s[pad:-pad, pad:-pad]
    amp = shifted[:, h - 1:h + 2, h - 1:h + 2].reshape(len(use), -1).max(1)
    norm = shifted / np.maximum(amp, 1e-30)[:, None, None]
    psf = np.median(norm[ref], axis=0)
    gy, gx = np.gradient(psf)
    gyy, _ = np.gradient(gy)
    gxy, gxx = np.gradient(gx)
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    fit = np.hypot(xx, yy) <= 2.0 * fwhm
    basis = np.column_stack([psf[fit], gx[fit], gy[fit], np.ones(fit.sum()),
                             gxx[fit], gyy[fit], gxy[fit]])
    inv = np.linalg.inv(basis.T @ basis)
    values = norm[:, fit]
    coef = values @ basis @ inv.T
    resid = values - coef @ basis.T
    s2 = (resid**2).sum(axis=1) / (fit.sum() - basis.shape[1])
    amp_fit = coef[:, 0]
    second = coef[:, 4:] / np.where(amp_fit > 0, amp_fit, np.nan)[:, None]
    ref &= np.isfinite(second).all(axis=1)
    if ref.sum() < 3:
        return chi2, broadening
    trend = _smooth_trend(x[use], y[use], second, ref)
    excess = second - trend
    cinv = np.linalg.inv(inv[4:, 4:])
    with np.errstate(invalid='ignore', divide='ignore'):
        c2 = (np.einsum('ni,ij,nj->n', excess, cinv, excess)
              * amp_fit**2 / s2)
    tested = test[use]
    chi2[use[tested]] = c2[tested]
    sigma2 = (fwhm / 2.3548)**2
    broadening[use[tested]] = ((excess[:, 0] + excess[:, 1]) / sigma2)[tested]
    return chi2, broadening


def _smooth_trend(x, y, values, reference, *, n_clip=3, clip=3.0):
    """
    A polynomial in position fitted to ``values`` (N, K) of the
    ``reference`` rows, evaluated at every row: quadratic with 12 or
    more reference rows, linear with 6 or more, else constant (PSFEx's
    default degree of PSF variation is 2). Rows more than ``clip``
    robust standard deviations from the fit are left out and the fit
    repeated (``n_clip`` times), so that outliers (the blends this is
    for) do not bend it.
    """
    n_ref = int(reference.sum())
    u = (x - x.mean()) / max(np.ptp(x), 1.0)
    v = (y - y.mean()) / max(np.ptp(y), 1.0)
    terms = [np.ones_like(u)]
    if n_ref >= 6:
        terms += [u, v]
    if n_ref >= 12:
        terms += [u * u, u * v, v * v]
    design = np.column_stack(terms)
    fit_rows = reference.copy()
    for _ in range(n_clip + 1):
        coef = np.linalg.lstsq(design[fit_rows], values[fit_rows],
                               rcond=None)[0]
        resid = values - design @ coef
        mad = 1.4826 * np.median(np.abs(resid[fit_rows]), axis=0)
        out = np.any(np.abs(resid) > clip * np.maximum(mad, 1e-12), axis=1)
        new = reference & ~out
        if new.sum() < len(terms) + 2 or np.array_equal(new, fit_rows):
            break
        fit_rows = new
    return design @ coef
