"""
Stamps around sources of a field image, framed like Galaxy Zoo
cutouts.

Galaxy Zoo cutouts are scaled to each galaxy's Petrosian radius, so a
field stamp is framed the same way: its side is a fixed multiple of
the source's Petrosian 90 % radius, measured on the display-scaled
image (the same look the network was trained on).

On crowded fields the azimuthal mean profile of a source picks up the
light of its neighbours, which can inflate the Petrosian radius many
times over. `segment_display` labels the sources of the field once, so
that `framed_side` can measure the profile again with the other
sources' pixels left out and use it when it is clearly smaller.

Invalid (masked or NaN) pixels of the field, such as a saturated core
masked by a data-quality map or a bad column through a source, are
counted in the profile at the value of the source's radial profile at
their radius (`_fill_profile`; an exponential extrapolated inward for
a masked core), and `segment_display` keeps them in their source's
segment. Left out, they made the profile of a source with a masked core
start at zero, which the Petrosian ratio read as the source's edge: the
stamp shrank to the 16-pixel minimum.
"""

import numpy as np
from scipy import ndimage

from cnnfind.runtime.normalize import robust_sky_noise

__all__ = []

#: Petrosian ratio that defines the Petrosian radius (as in SDSS).
_ETA = 0.2
#: Smallest stamp side (pixels) of a field source.
MIN_SIDE = 16.0
#: The neighbour-masked radius replaces the plain one only when it is
#: smaller than this fraction of it: on sources without close
#: neighbours the plain radius (the Galaxy Zoo calibration) is kept.
ROBUST_MARGIN = 0.5
#: Detection threshold (noise units of the smoothed display image),
#: smoothing (Gaussian sigma, pixels), growth of the neighbour masks
#: (pixels) and smallest peak of a source (noise units) of
#: `segment_display`.
_SEG_NSIGMA = 3.0
_SEG_SMOOTH = 1.5
_SEG_GROW = 2
_SEG_PEAK = 10.0
#: Excess over the mirrored pixel (noise units of the smoothed image,
#: and ratio) that marks light of a blended neighbour (`_symmetric`).
_SYM_NSIGMA = 10.0
_SYM_RATIO = 2.0


def display_grey(display):
    """The sky-subtracted grey image of a display ``(H, W, C)`` image."""
    grey = display.mean(axis=-1)
    return grey - np.nanmedian(grey)


def framed_side(grey, x, y, scale, factor=1.0, segments=None):
    """
    Stamp side that frames the source at ``(x, y)`` like a Galaxy Zoo
    cutout: ``scale`` (times ``factor``) Petrosian 90 % radii of
    ``grey`` (from `display_grey`), at least ``MIN_SIDE`` pixels.

    With ``segments`` (from `segment_display`) the radius is also
    measured with the other sources' pixels left out, blended
    neighbours removed by symmetry, the local sky subtracted and within
    a search radius set by the source's own segment; that value is used
    when it is below ``ROBUST_MARGIN`` times the plain one (a source
    whose profile is inflated by its neighbours). Without ``segments``
    only the plain radius is used.
    """
    r90 = petrosian_r90(grey, x, y)
    if segments is not None:
        r90_masked = petrosian_r90(grey, x, y, segments=segments)
        if r90_masked < ROBUST_MARGIN * r90:
            r90 = r90_masked
    return max(scale * r90 * factor, MIN_SIDE)


class Segments:
    """
    Labelled sources of a display image (see `segment_display`).

    Attributes
    ----------
    labels : 2D int `~numpy.ndarray`
        0 for the sky, ``k`` for the pixels of source ``k`` (grown by a
        few pixels).
    slices : list of tuple of slice
        Bounding box of each label (``slices[k - 1]``).
    smooth : 2D `~numpy.ndarray`
        The smoothed display image (where invalid: interpolated from the
        valid pixels nearby, 0 far from any).
    noise : float
        Noise of ``smooth``.
    """

    def __init__(self, labels, slices, smooth, noise):
        self.labels = labels
        self.slices = slices
        self.smooth = smooth
        self.noise = noise

    def own_label(self, x, y):
        """Label of the source at ``(x, y)`` (0 if on the sky)."""
        ny, nx = self.labels.shape
        ix = min(max(int(np.floor(x + 0.5)), 0), nx - 1)
        iy = min(max(int(np.floor(y + 0.5)), 0), ny - 1)
        return int(self.labels[iy, ix])

    def extent(self, label, x, y):
        """Largest distance from ``(x, y)`` to the label's bounding box."""
        sy, sx = self.slices[label - 1]
        dx = max(abs(sx.start - x), abs(sx.stop - 1 - x))
        dy = max(abs(sy.start - y), abs(sy.stop - 1 - y))
        return float(np.hypot(dx, dy))


def segment_display(grey):
    """
    Label the sources of a sky-subtracted display image.

    Pixels of the Gaussian-smoothed image above ``_SEG_NSIGMA`` times
    its noise are grouped into 8-connected sources; those whose peak
    stays below ``_SEG_PEAK`` times the noise (faint islands, such as a
    galaxy's own outskirts broken up at the threshold) are dropped, and
    the others grown by ``_SEG_GROW`` pixels (where grown sources meet,
    the higher label wins). Invalid (NaN) pixels belong to a source when
    they are enclosed by its detected pixels (a masked core) or when
    the smoothed image there, interpolated from the valid pixels around
    them (`_fill_invalid_smooth`), is above the threshold (a bad column
    through a source, which would otherwise split it in two); other
    invalid pixels are sky.

    Parameters
    ----------
    grey : 2D `~numpy.ndarray`
        From `display_grey`.

    Returns
    -------
    segments : `Segments` or `None`
        `None` when the noise cannot be measured (e.g. constant image).
    """
    valid = np.isfinite(grey)
    if valid.sum() < 16:
        return None
    smooth = ndimage.gaussian_filter(np.where(valid, grey, 0.0)
                                     .astype(np.float32), _SEG_SMOOTH)
    try:
        sky, noise = robust_sky_noise(smooth, valid)
    except ValueError:
        return None
    if not (np.isfinite(noise) and noise > 0):
        return None
    if not valid.all():
        smooth = _fill_invalid_smooth(smooth, valid)
    det = valid & (smooth > sky + _SEG_NSIGMA * noise)
    if not valid.all():
        det = _detect_invalid(det, smooth > sky + _SEG_NSIGMA * noise,
                              valid)
    labels, n = ndimage.label(det, structure=np.ones((3, 3), bool))
    if n:
        # Faint islands (e.g. a galaxy's own outskirts broken up at the
        # threshold) are not neighbours: keep only sources with a peak.
        peak = ndimage.maximum(smooth, labels, np.arange(1, n + 1))
        keep = np.concatenate([[False],
                               np.asarray(peak) > sky + _SEG_PEAK * noise])
        labels, n = ndimage.label(keep[labels],
                                  structure=np.ones((3, 3), bool))
    if _SEG_GROW > 0 and n:
        grown = ndimage.grey_dilation(labels, size=2 * _SEG_GROW + 1)
        labels = np.where(labels > 0, labels, grown)
    return Segments(labels, ndimage.find_objects(labels, max_label=n),
                    smooth, float(noise))


#: Smallest weight of valid pixels (fraction of the smoothing kernel)
#: for `_fill_invalid_smooth` to interpolate an invalid pixel.
_FILL_MIN_WEIGHT = 0.02


def _fill_invalid_smooth(smooth, valid):
    """
    ``smooth`` (the Gaussian-smoothed image with invalid pixels set to
    0) with its invalid pixels replaced by the normalised convolution of
    the valid ones (the smoothed image divided by the smoothed validity
    map): the local weighted mean of the valid pixels around them. Where
    the valid pixels weigh less than ``_FILL_MIN_WEIGHT`` of the kernel
    (deep inside a large invalid region) the value stays 0. Valid pixels
    are left as they are.
    """
    weight = ndimage.gaussian_filter(valid.astype(np.float32), _SEG_SMOOTH)
    fill = ~valid & (weight >= _FILL_MIN_WEIGHT)
    out = smooth.copy()
    out[fill] = smooth[fill] / weight[fill]
    return out


def _detect_invalid(det, above, valid):
    """
    ``det`` (the detected valid pixels) with the invalid pixels added
    that lie in holes of ``det`` (a masked core) or whose interpolated
    smoothed value is ``above`` the threshold (e.g. a bad column
    through a source), as long as they are connected to detected
    pixels.
    """
    holes = ndimage.binary_fill_holes(det) & ~det & ~valid
    add = holes | (~valid & above)
    # Keep only the invalid pixels connected to detected ones.
    lab, n = ndimage.label(det | add, structure=np.ones((3, 3), bool))
    if not n:
        return det
    touch = np.zeros(n + 1, bool)
    touch[np.unique(lab[det])] = True
    touch[0] = False
    return det | (add & touch[lab])


def _symmetric(grey, segments, x, y, yy, xx):
    """
    ``grey`` at pixels ``(yy, xx)``, replaced by its value at the pixel
    mirrored through ``(x, y)`` where the smoothed image there is brighter
    than at the mirrored pixel by more than ``_SYM_NSIGMA`` times its
    noise and ``_SYM_RATIO`` times the mirrored value: light that the
    source has on one side only (a neighbour blended into its segment) is
    removed, as in the SDSS deblender's symmetric templates, while noise
    and the source's own mild asymmetries are left alone.
    """
    ny, nx = grey.shape
    my = np.rint(2 * y - yy).astype(int)
    mx = np.rint(2 * x - xx).astype(int)
    inside = (my >= 0) & (my < ny) & (mx >= 0) & (mx < nx)
    my, mx = np.where(inside, my, 0), np.where(inside, mx, 0)
    mirror = np.where(inside, grey[my, mx], np.nan)
    s_here = segments.smooth[yy, xx]
    s_mirror = segments.smooth[my, mx]
    blended = (inside & np.isfinite(mirror)
               & (s_here - s_mirror > _SYM_NSIGMA * segments.noise)
               & (s_here > _SYM_RATIO * s_mirror))
    return np.where(blended, mirror, grey[yy, xx])


def _profile(grey, x, y, rmax, segments=None):
    """
    Annulus sums and pixel counts at integer radii; with ``segments``,
    the pixels of sources other than the one at ``(x, y)`` are left out,
    those of its own segment are made point-symmetric about ``(x, y)``
    (`_symmetric`), and the local sky (mean of the pixels of no source
    within ``rmax``) is subtracted. Invalid (NaN) pixels of the image
    that are not left out are counted in at the value of the source's
    radial profile at their radius (`_fill_profile`); pixels beyond the
    image edge are left out.
    """
    ny, nx = grey.shape
    y0, y1 = max(int(y) - rmax, 0), min(int(y) + rmax + 2, ny)
    x0, x1 = max(int(x) - rmax, 0), min(int(x) + rmax + 2, nx)
    box = grey[y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    r = np.hypot(xx - x, yy - y)
    finite = np.isfinite(box)
    ok = finite & (r < rmax)
    bad = ~finite & (r < rmax)
    values = box
    if segments is not None:
        lab = segments.labels[y0:y1, x0:x1]
        own = segments.own_label(x, y)
        sky = ok & (lab == 0)
        ok &= sky | (lab == own)
        bad &= (lab == 0) | (lab == own)
        if own:
            sym = _symmetric(grey, segments, x, y, yy, xx)
            values = np.where(lab == own, sym, box)
        if sky.sum() >= 16:
            values = values - np.mean(box[sky])
    idx = r[ok].astype(int)
    sums = np.bincount(idx, weights=values[ok], minlength=rmax)
    counts = np.bincount(idx, minlength=rmax)
    if bad.any() and ok.any():
        rsum = np.bincount(idx, weights=r[ok], minlength=rmax)
        fill = _fill_profile(sums, counts, rsum, r[bad], grey)
        bidx = r[bad].astype(int)
        sums = sums + np.bincount(bidx, weights=fill, minlength=rmax)
        counts = counts + np.bincount(bidx, minlength=rmax)
    return sums, counts


def _fill_profile(sums, counts, rsum, r_bad, grey):
    """
    Values of the radial profile at the radii ``r_bad`` of invalid
    pixels, from the annulus sums, valid-pixel counts and sums of the
    valid pixels' radii: the annulus means, placed at the mean radius of
    their valid pixels (a partly masked annulus is measured where its
    valid pixels are), interpolated linearly in radius. Inside the
    first of them (a masked core) the profile is extrapolated as an
    exponential through the first two when it rises inward there (on
    the display's asinh scale the profile of a galaxy's core is
    steeper than linear in radius), up to the brightest valid value of
    ``grey``, and flat otherwise; beyond the last one it is flat.
    """
    has = counts > 0
    rr = rsum[has] / counts[has]
    mean = sums[has] / counts[has]
    out = np.interp(r_bad, rr, mean)
    inner = r_bad < rr[0]
    if inner.any() and rr.size >= 2 and mean[0] > mean[1] > 0:
        r1, r2, m1, m2 = rr[0], rr[1], mean[0], mean[1]
        core = m1 * (m1 / m2) ** ((r1 - r_bad[inner]) / (r2 - r1))
        out[inner] = np.minimum(core, max(np.nanmax(grey), m1))
    return out


def petrosian_r90(grey, x, y, *, rmax_limit=256, default=2.0,
                  segments=None):
    """
    Petrosian 90 % radius of the source at ``(x, y)``.

    Parameters
    ----------
    grey : 2D `~numpy.ndarray`
        Sky-subtracted image (NaN where invalid; invalid pixels are
        counted at the source's radial profile, see `_profile`).
    x, y : float
        Source position.
    rmax_limit : int
        Largest radius considered.
    default : float
        Radius returned when no source profile is found (empty sky).
    segments : `Segments`, optional
        Sources of ``grey`` (from `segment_display`): the pixels of the
        other sources are left out of the profile, the local sky (mean
        of the pixels of no source) is subtracted, and the search radius
        is limited to ``4`` times the extent of the source's own
        segment (at least 16 pixels).

    Returns
    -------
    r90 : float
    """
    if segments is not None:
        own = segments.own_label(x, y)
        if own:
            cap = int(np.ceil(4 * segments.extent(own, x, y)))
            rmax_limit = min(rmax_limit, max(cap, 16))
    rmax = min(16, rmax_limit)
    while True:
        sums, counts = _profile(grey, x, y, rmax, segments)
        area = np.maximum(counts, 1)
        mu = sums / area
        cum = np.cumsum(sums)
        cum_mean = cum / np.maximum(np.cumsum(counts), 1)
        with np.errstate(divide='ignore', invalid='ignore'):
            eta = np.where(cum_mean > 0, mu / cum_mean, 0.0)
        below = np.nonzero((eta < _ETA) & (np.arange(rmax) >= 1))[0]
        if below.size and 2 * below[0] + 2 < rmax:
            rp = below[0] + 0.5
            break
        if rmax >= rmax_limit:
            rp = (below[0] + 0.5) if below.size else rmax / 2.0
            break
        rmax = min(2 * rmax, rmax_limit)
    total_r = min(int(np.ceil(2 * rp)), rmax)
    flux = cum[:total_r]
    if flux.size == 0 or flux[-1] <= 0:
        return float(default)
    k = int(np.searchsorted(flux, 0.9 * flux[-1]))
    if k == 0:
        return 1.0
    # Interpolate between the outer edges of annuli k-1 and k.
    f0, f1 = flux[k - 1], flux[k]
    frac = (0.9 * flux[-1] - f0) / (f1 - f0) if f1 > f0 else 0.0
    return float(max(k + frac, 1.0))


def cut_stamp(image, x, y, side):
    """
    A ``side`` x ``side`` stamp of ``(H, W, C)`` centred on ``(x, y)``;
    pixels beyond the image edge are NaN.
    """
    side = max(int(round(side)), 8)
    ny, nx = image.shape[:2]
    x0 = int(np.floor(x + 0.5)) - side // 2
    y0 = int(np.floor(y + 0.5)) - side // 2
    out = np.full((side, side, image.shape[-1]), np.nan, np.float32)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + side, ny), min(x0 + side, nx)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out
