"""
The local background and noise of an image: the mesh that the star
finder's network sees subtracted, the local noise its threshold follows,
and the background under each source for the detection threshold.

The threshold compares each source's PSF amplitude with its error. Fitted
together with a free background on the small fitting stamp, the amplitude
is about 1.3 times noisier than with the background known (for a FWHM of
3 pixels the PSF and a constant are strongly correlated over 7 x 7
pixels), so faint stars and noise peaks are harder to tell apart than
with a matched filter on a background-subtracted image. Here the
background comes from many more pixels: a coarse mesh of clipped medians
(as SExtractor and SEP), which is precise but cannot follow structure
smaller than its boxes, and the clipped median of an annulus around each
source, which follows it but is noisier. They are averaged with weights
from the annulus noise and from how far the two disagree over the whole
image, so that on a flat sky the result is close to the mesh and on
nebulosity close to the annuli.
"""

import numpy as np
from scipy import ndimage

from cnnfind.detection._measure import _centres
from cnnfind.runtime.normalize import _NOISE_LAG

__all__ = []

#: Smallest mesh box in pixels (SExtractor's default ``BACK_SIZE``).
MIN_BOX = 64

#: Inner and outer annulus radii in units of the FWHM.
ANNULUS = (2.5, 5.0)

#: The noise mesh has boxes this many times the background mesh's: the
#: noise varies slowly (as the square root of the sky) and a box needs
#: thousands of samples for a precise spread.
NOISE_BOX_FACTOR = 4

# Noise of the median of n Gaussian values, in units of their sigma,
# times sqrt(n).
_MEDIAN_NOISE = 1.2533


def _mesh_box(fwhm):
    """Mesh box side for a PSF of ``fwhm`` pixels: wide enough that stars
    are a small part of every box; a multiple of 16 pixels."""
    return 16 * int(np.ceil(max(MIN_BOX, 16.0 * fwhm) / 16.0))


def _clipped_row_medians(values, sigma=3.0, iters=3, min_count=10):
    """
    Sigma-clipped median of every row of ``values`` (NaN = missing), as
    `astropy.stats.sigma_clipped_stats` with ``maxiters=iters``;
    ``iters=0`` gives ``np.nanmedian(values, axis=1)``.

    One sort per row; each clipping pass only moves the bounds of the
    kept, contiguous range of sorted values, with its standard deviation
    from cumulative sums. Rows with fewer than ``min_count`` values give
    NaN.
    """
    s = np.sort(values, axis=1)  # NaNs last
    n = (~np.isnan(s)).sum(axis=1)
    filled = np.where(np.isnan(s), 0.0, s).astype(np.float64)
    rows = np.arange(len(s))
    last = max(s.shape[1] - 1, 0)

    def median(lo, hi):
        m = np.maximum(hi - lo, 1)
        return 0.5 * (filled[rows, np.minimum(lo + (m - 1) // 2, last)]
                      + filled[rows, np.minimum(lo + m // 2, last)])

    lo, hi = np.zeros(len(s), int), n
    if iters:
        zero = np.zeros((len(s), 1))
        c1 = np.concatenate([zero, np.cumsum(filled, axis=1)], axis=1)
        c2 = np.concatenate([zero, np.cumsum(filled**2, axis=1)], axis=1)
    for _ in range(iters):
        med = median(lo, hi)
        m = np.maximum(hi - lo, 1)
        mean = (c1[rows, hi] - c1[rows, lo]) / m
        std = np.sqrt(np.maximum((c2[rows, hi] - c2[rows, lo]) / m
                                 - mean**2, 0.0))
        # NaNs compare False, so they are never counted.
        lo = (s < (med - sigma * std)[:, None]).sum(axis=1)
        hi = np.maximum((s <= (med + sigma * std)[:, None]).sum(axis=1),
                        lo + 1)
    return np.where(n >= min_count, median(lo, hi), np.nan)


def _block_rows(sub, mesh_shape, b):
    """
    The values of the sub-sampled image ``sub`` grouped by mesh box: one
    row of ``b * b`` values per box (NaN-padded beyond the image), boxes
    in row-major order of the ``mesh_shape`` mesh.
    """
    my, mx = mesh_shape
    padded = np.full((my * b, mx * b), np.nan, np.float32)
    padded[:sub.shape[0], :sub.shape[1]] = sub
    return padded.reshape(my, b, mx, b).transpose(0, 2, 1, 3).reshape(
        my * mx, b * b)


def mesh_background(data, valid, box, *, step=None):
    """
    Background mesh of ``data``: the clipped median of the valid pixels
    of every ``box`` x ``box`` block (every ``step``-th pixel along each
    axis; by default a 16 x 16 grid of samples per box), boxes with too
    few valid pixels filled from their neighbours, then a 3 x 3 median
    filter over the mesh.

    Returns
    -------
    mesh : 2D float64 array
        Shape ``(ceil(ny / box), ceil(nx / box))``; all NaN if no box has
        enough valid pixels.
    """
    ny, nx = data.shape
    my, mx = -(-ny // box), -(-nx // box)
    if step is None:
        step = max(1, box // 16)
    if box % step:
        msg = f'the mesh box ({box}) must be a multiple of step ({step})'
        raise ValueError(msg)
    sub = np.where(valid[::step, ::step], data[::step, ::step],
                   np.nan).astype(np.float32)
    mesh = _clipped_row_medians(
        _block_rows(sub, (my, mx), box // step)).reshape(my, mx)
    missing = np.isnan(mesh)
    if missing.all():
        return mesh
    if missing.any():
        # Each empty box takes the value of the nearest box with data.
        _, (iy, ix) = ndimage.distance_transform_edt(
            missing, return_indices=True)
        mesh = mesh[iy, ix]
    if min(my, mx) >= 3:
        mesh = ndimage.median_filter(mesh, size=3, mode='nearest')
    return mesh


def noise_ratio_mesh(data, valid, box, *, step=4):
    """
    Relative noise of ``data`` per ``box`` x ``box`` block: the median
    absolute deviation of differences of pixels three columns apart (as
    `cnnfind.runtime.robust_sky_noise`; every ``step``-th row and
    column), divided by its median over the blocks, then 3 x 3
    median-filtered. Blocks with fewer than 64
    differences get 1. The median normalisation makes the ratio 1 on
    an image of uniform noise whatever the estimator's bias.

    Returns
    -------
    ratio : 2D float64 array
        Shape ``(ceil(ny / box), ceil(nx / box))``.
    """
    ny, nx = data.shape
    my, mx = -(-ny // box), -(-nx // box)
    lag = _NOISE_LAG if nx > _NOISE_LAG else 1
    rows, ok = data[::step], valid[::step]
    d = np.where(ok[:, lag::step] & ok[:, :-lag:step],
                 rows[:, lag::step].astype(np.float32) - rows[:, :-lag:step],
                 np.float32(np.nan))
    rows = _block_rows(d, (my, mx), box // step)
    med = _clipped_row_medians(rows, iters=0, min_count=64)
    spread = _clipped_row_medians(np.abs(rows - med[:, None]), iters=0,
                                  min_count=64)
    spread = np.where(spread > 0, spread, np.nan).reshape(my, mx)
    if np.isnan(spread).all():
        return np.ones((my, mx))
    ratio = np.where(np.isnan(spread), 1.0, spread / np.nanmedian(spread))
    if min(my, mx) >= 3:
        ratio = ndimage.median_filter(ratio, size=3, mode='nearest')
    return ratio


def _mesh_index(pixel, box):
    """Fractional mesh index of pixel coordinates (box centres at integers)."""
    return (np.asarray(pixel, float) - (box - 1) / 2.0) / box


def background_at(mesh, box, x, y):
    """The mesh interpolated (bilinear) at pixel positions ``x, y``."""
    coords = [_mesh_index(y, box), _mesh_index(x, box)]
    return ndimage.map_coordinates(mesh, coords, order=1, mode='nearest')


def _linear_knots(coords, n):
    """
    Lower knot index and weight of the upper knot for linear
    interpolation at the fractional indices ``coords`` of ``n`` knots,
    clamped at both ends (``scipy.ndimage.map_coordinates`` with
    ``order=1, mode='nearest'``).
    """
    c = np.clip(np.asarray(coords, float), 0.0, n - 1.0)
    i0 = np.minimum(np.floor(c).astype(int), max(n - 2, 0))
    return i0, np.minimum(i0 + 1, n - 1), c - i0


def background_image(mesh, box, rows, cols):
    """
    The mesh interpolated as `background_at` on every pixel of the
    block ``rows x cols`` (two slices of the image). Separable: along y
    on the mesh columns, then along x; by indexing, not matrix products,
    so that no BLAS thread pool competes with onnxruntime's.
    """
    y0, y1, wy = _linear_knots(
        _mesh_index(np.arange(rows.start, rows.stop), box), mesh.shape[0])
    x0, x1, wx = _linear_knots(
        _mesh_index(np.arange(cols.start, cols.stop), box), mesh.shape[1])
    along_y = (mesh[y0] * (1.0 - wy)[:, None]
               + mesh[y1] * wy[:, None]).astype(np.float32)
    wx = wx.astype(np.float32)
    return along_y[:, x0] * (np.float32(1.0) - wx) + along_y[:, x1] * wx


def annulus_background(data, valid, x, y, r_in, r_out, *, chunk=4096):
    """
    Clipped median of the valid pixels between ``r_in`` and ``r_out``
    pixels from the rounded positions ``x, y``; NaN where fewer than 10.
    Sources are processed ``chunk`` at a time, which bounds the memory.
    """
    xi, yi = _centres(np.asarray(x, float), np.asarray(y, float),
                      data.shape)
    r = int(np.ceil(r_out))
    oy, ox = np.mgrid[-r:r + 1, -r:r + 1]
    ring = (oy**2 + ox**2 >= r_in**2) & (oy**2 + ox**2 <= r_out**2)
    oy, ox = oy[ring][None, :], ox[ring][None, :]
    ny, nx = data.shape
    out = np.empty(len(xi))
    for start in range(0, len(xi), chunk):
        sl = slice(start, start + chunk)
        # Only the ring's pixels are gathered (half of its bounding box).
        rows, cols = yi[sl, None] + oy, xi[sl, None] + ox
        inside = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
        rows, cols = np.clip(rows, 0, ny - 1), np.clip(cols, 0, nx - 1)
        vals = np.where(inside & valid[rows, cols], data[rows, cols],
                        np.nan).astype(np.float32)
        out[sl] = _clipped_row_medians(vals)
    return out


class _LocalBackground:
    """
    The local background of one image at any source position (see the
    module docstring): ``mesh(x, y)`` alone, cheap, or ``__call__(x, y)``,
    the mesh and annulus estimates combined.

    Parameters
    ----------
    data, valid : 2D arrays
        Image and validity map.
    sky, noise : float
        Global sky (used where the image is too small or too masked for
        a mesh) and pixel noise.
    fwhm : float
        PSF FWHM in pixels (sets the mesh box and the annulus).
    """

    def __init__(self, data, valid, sky, noise, fwhm):
        self._data, self._valid = data, valid
        self._sky, self._noise, self._fwhm = float(sky), float(noise), fwhm
        self._box = _mesh_box(fwhm)
        mesh = mesh_background(data, valid, self._box)
        self._mesh = None if np.isnan(mesh).all() else mesh
        self._noise_ratio = None
        #: How much noise correlation raises a PSF amplitude's error over
        #: the white-noise one (set by the finder; see `_correlation`).
        self.correlation = 1.0

    def mesh(self, x, y):
        """The mesh background at ``x, y``."""
        if self._mesh is None:
            return np.full(np.shape(x), self._sky)
        return background_at(self._mesh, self._box, x, y)

    def image(self, window):
        """
        The mesh background on the pixels of ``window`` (a pair of
        slices with explicit bounds), or the global sky if there is no
        mesh.
        """
        if self._mesh is None:
            return self._sky
        return background_image(self._mesh, self._box, *window)

    def _noise_mesh(self):
        if self._noise_ratio is None:
            box = NOISE_BOX_FACTOR * self._box
            self._noise_ratio = (box, noise_ratio_mesh(self._data,
                                                       self._valid, box))
        return self._noise_ratio

    def noise_ratio(self, x, y):
        """
        The local pixel noise at ``x, y`` over its median over the
        image (`noise_ratio_mesh`, interpolated bilinearly).
        """
        box, mesh = self._noise_mesh()
        return background_at(mesh, box, x, y)

    def __call__(self, x, y):
        """The combined background at ``x, y``."""
        mesh = self.mesh(x, y)
        r_in, r_out = (k * self._fwhm for k in ANNULUS)
        ring = annulus_background(self._data, self._valid, x, y, r_in, r_out)
        ok = np.isfinite(ring)
        if ok.sum() < 10:
            return mesh
        # Noise of an annulus median (a full annulus; partial ones near
        # edges and masks are noisier, a small effect on few sources).
        var_ring = (_MEDIAN_NOISE * self._noise)**2 / (
            np.pi * (r_out**2 - r_in**2))
        # Structure the mesh misses: the scatter of annulus minus mesh
        # beyond the annulus noise (robust, over all the sources).
        diff = ring[ok] - mesh[ok]
        mad = 1.4826 * np.median(np.abs(diff - np.median(diff)))
        var_mesh = max(mad**2 - var_ring, 1e-6 * var_ring)
        w_ring = var_mesh / (var_mesh + var_ring)
        return np.where(ok, w_ring * ring + (1.0 - w_ring) * mesh, mesh)
