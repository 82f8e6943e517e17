"""
Turn cutouts of any size, type and number of bands into the network's
input: display-scaled ``(N, 3, size, size)`` float32 in [0, 1].

The classifier was trained on Galaxy Zoo (SDSS gri JPEG) cutouts, which
are already display-scaled (an asinh stretch with the sky near black).
Linear data (FITS) are put on the same footing with `display_stretch`,
whose constants reproduce the typical sky level, noise and galaxy peak
of those JPEGs.

With ``stretch='auto'`` `_auto_stretch` decides whether pixel values are
display values or linear data: float data are linear, uint8 data are
display values (JPEG, 8-bit PNG), signed integers are linear (FITS
integer images, ``BITPIX`` 16/32/64, are signed), and wider unsigned
integers (16-bit PNG or TIFF, but also unsigned FITS counts and raw CCD
frames in ADU) are display values only if their sky noise shows at
8-bit display depth.
"""

import warnings

import numpy as np
from scipy import ndimage

from cnnfind.exceptions import CNNFindWarning
from cnnfind.runtime.normalize import robust_sky_noise

__all__ = []

#: Display values of the Galaxy Zoo JPEGs (grey level, 0-1): the median
#: sky, its noise, and the softening of the asinh stretch in noise units
#: that maps a typical SDSS galaxy peak (~500 sigma) to the median peak
#: of the JPEGs (0.6).
DISPLAY = {'sky': 0.013, 'noise': 0.012, 'beta': 11.0}

_STRETCHES = ('auto', 'none', 'asinh')

#: Sky noise, as a fraction of the dtype's maximum, below which unsigned
#: integer data (wider than 8 bits) are linear data: a quarter of a grey
#: level of an 8-bit display, invisible on any display (display images
#: show their sky noise: 1.0 to 3.7 grey levels, median 2.2, in the
#: Galaxy Zoo JPEGs; 6.6 in the NGC 6976 JPEG). From ``_DISPLAY_NOISE``
#: (half a grey level) up they are display values; in between the
#: choice is ambiguous and warned about.
_LINEAR_NOISE = 0.25 / 255
_DISPLAY_NOISE = 0.5 / 255

#: Radius of the core of the network's view, as a fraction of the
#: view's side: one eighth, about the half-light radius of an
#: exponential disc framed like a Galaxy Zoo cutout (R90 a fifth of the
#: cutout's side, the view its central half).
CORE_RADIUS = 0.125


def display_stretch(z, display=None):
    """
    Map data in noise units above the sky to display values in [0, 1].

    ``y = sky + noise * beta * asinh(z / beta)``, clipped to [0, 1]:
    linear with the JPEGs' noise level near the sky, logarithmic for
    bright sources.
    """
    d = DISPLAY if display is None else display
    y = np.arcsinh(np.asarray(z, dtype=np.float32) / np.float32(d['beta']))
    y *= np.float32(d['noise'] * d['beta'])
    y += np.float32(d['sky'])
    return np.clip(y, 0.0, 1.0, out=y)


def _auto_stretch(arr, *, colour, valid=None, what='data'):
    """
    The stretch that ``stretch='auto'`` uses for ``arr``.

    Parameters
    ----------
    arr : `~numpy.ndarray`
        A field image ``(H, W[, 3])`` or a stack of cutouts
        ``(N, H, W[, 3])``.
    colour : bool
        Whether the last axis holds the three colour bands.
    valid : bool `~numpy.ndarray`, optional
        `True` for the pixels to use (field images only).
    what : str, optional
        How to name the data in the warning.

    Returns
    -------
    stretch : {'none', 'asinh'}
        ``'none'`` (display values) for uint8 data and for wider
        unsigned integers whose sky noise is at least half a grey level
        of an 8-bit display (``0.5/255`` of the dtype's maximum), or
        zero (a sky clipped to black); ``'asinh'`` (linear data) for
        float data, signed integers and wider unsigned integers whose
        noise is below a quarter of a grey level (counts that use a
        tiny part of the dtype's range).

    Warns
    -----
    CNNFindWarning
        When the choice is ambiguous: unsigned integers with a noise
        between a quarter and half a grey level, or signed integers whose
        values all lie within 0-255 (8-bit display values in a wider
        type, or low counts). Linear data (``'asinh'``) are assumed,
        since display-scaling display values again only lowers their
        contrast, whereas reading counts as display values makes the
        image nearly black.
    """
    kind = arr.dtype.kind
    if kind == 'f':
        return 'asinh'
    if arr.dtype == np.uint8:
        return 'none'
    how = ("pass stretch='asinh' (linear data) or stretch='none' "
           '(display values, scaled by the maximum of the dtype) to '
           'choose, or convert 8-bit display values to uint8')
    if kind == 'i':
        values = arr if valid is None else arr[valid]
        if values.size and values.min() >= 0 and values.max() <= 255:
            warnings.warn(f'the {what} are signed integers within 0-255: '
                          'they were taken as linear data (counts) and '
                          f'asinh-stretched; {how}', CNNFindWarning,
                          stacklevel=4)
        return 'asinh'
    grey = arr.astype(np.float32)
    if colour:
        grey = grey.mean(axis=-1)
    grey = grey.reshape(-1, grey.shape[-1])
    if valid is not None:
        valid = valid.reshape(grey.shape)
    try:
        _, noise = robust_sky_noise(grey, valid)
    except ValueError:
        noise = 0.0
    frac = noise / float(np.iinfo(arr.dtype).max)
    if frac < _LINEAR_NOISE and noise > 0:
        return 'asinh'
    if frac >= _DISPLAY_NOISE or noise == 0:
        return 'none'
    warnings.warn(f'the {what} are {arr.dtype} integers whose sky noise '
                  f'({frac * 255:.2f} grey levels of an 8-bit display) '
                  'does not tell display values from counts: they were '
                  f'taken as linear data and asinh-stretched; {how}',
                  CNNFindWarning, stacklevel=4)
    return 'asinh'


def _as_bands(image):
    """``(H, W)`` or ``(H, W, 3)`` to ``(H, W, C)``."""
    return image[..., None] if image.ndim == 2 else image


def _stretch_linear(image, sky_noise=None, display=None):
    """
    Display-scale a linear ``(H, W, C)`` image band by band; NaN stay
    NaN. ``sky_noise`` is a list of (sky, noise) per band, estimated
    from the image when `None`.
    """
    out = np.empty(image.shape, np.float32)
    for c in range(image.shape[-1]):
        band = image[..., c].astype(np.float32)
        if sky_noise is None:
            sky, noise = robust_sky_noise(band)
        else:
            sky, noise = sky_noise[c]
        out[..., c] = display_stretch((band - sky) / noise, display)
        out[..., c][~np.isfinite(band)] = np.nan
    return out


def _resample(image, size):
    """
    Resample ``(H, W, C)`` to ``(size, size, C)`` with anti-aliasing
    (Gaussian pre-filter when shrinking, bilinear interpolation).
    """
    ny, nx = image.shape[:2]
    fy, fx = ny / size, nx / size
    sig = (max(fy - 1.0, 0.0) * 0.5, max(fx - 1.0, 0.0) * 0.5, 0.0)
    if sig[0] > 0 or sig[1] > 0:
        image = ndimage.gaussian_filter(image, sig, mode='nearest')
    yy = (np.arange(size) + 0.5) * fy - 0.5
    xx = (np.arange(size) + 0.5) * fx - 0.5
    out = np.empty((size, size, image.shape[-1]), np.float32)
    grid = np.meshgrid(yy, xx, indexing='ij')
    for c in range(image.shape[-1]):
        out[..., c] = ndimage.map_coordinates(image[..., c], grid, order=1,
                                              mode='nearest')
    return out


def _central_crop(image, fraction):
    """The central ``fraction`` of ``(H, W, C)`` (at least 1 pixel)."""
    ny, nx = image.shape[:2]
    cy, cx = max(1, round(ny * fraction)), max(1, round(nx * fraction))
    y0, x0 = (ny - cy) // 2, (nx - cx) // 2
    return image[y0:y0 + cy, x0:x0 + cx]


def _pad_square(image):
    """
    ``(H, W, C)`` centred in a square of side ``max(H, W)``, NaN
    (invalid) around it; square images are returned as they are.
    """
    ny, nx = image.shape[:2]
    if ny == nx:
        return image
    n = max(ny, nx)
    out = np.full((n, n, image.shape[-1]), np.nan, np.float32)
    y0, x0 = (n - ny) // 2, (n - nx) // 2
    out[y0:y0 + ny, x0:x0 + nx] = image
    return out


def _core_fraction(bad):
    """
    Fraction of the ``True`` (invalid) pixels of the network's square
    view ``bad`` in its core: the disc of radius `CORE_RADIUS` times the
    view's side at its centre (at least the central pixel or 2x2
    pixels).
    """
    n = bad.shape[0]
    c = (n - 1) / 2
    yy, xx = np.ogrid[:n, :n]
    core = np.hypot(yy - c, xx - c) <= max(CORE_RADIUS * n, 0.75)
    return float(bad[core].mean())


def to_network_input(display_image, *, crop, size, fill=None):
    """
    One display-scaled ``(H, W, C)`` image (NaN where invalid) to a
    ``(3, size, size)`` float32 network input and the fraction of
    invalid pixels in the network's view (the central crop).

    A non-square image is framed by its longer side: it is centred in a
    square of that side, the missing pixels counting as invalid, so
    that the network sees it with its own aspect ratio (resampling it
    to a square would stretch the galaxy along one axis). Invalid
    pixels are replaced by the display sky level, grey images are
    repeated over the three channels.
    """
    x, masked, _ = _to_network_input(display_image, crop=crop, size=size,
                                     fill=fill)
    return x, masked


def _to_network_input(display_image, *, crop, size, fill=None):
    """
    `to_network_input`, plus the fraction of invalid pixels in the core
    of the network's view (`_core_fraction`).
    """
    fill = DISPLAY['sky'] if fill is None else fill
    img = _central_crop(_pad_square(display_image), crop)
    bad = ~np.isfinite(img)
    bad2d = bad.any(axis=-1)
    masked = float(bad2d.mean())
    core = _core_fraction(bad2d)
    if bad.any():
        img = np.where(bad, np.float32(fill), img)
    img = _resample(img.astype(np.float32), size)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return np.ascontiguousarray(img.transpose(2, 0, 1)), masked, core


def check_stretch(stretch):
    """Validate the ``stretch`` argument."""
    if stretch not in _STRETCHES:
        msg = f'stretch must be one of {_STRETCHES}, not {stretch!r}'
        raise ValueError(msg)
    return stretch


def prepare_cutouts(cutouts, *, stretch='auto', crop, size, mask=None):
    """
    A stack of cutouts to network inputs.

    Parameters
    ----------
    cutouts : array-like
        ``(N, H, W)`` single-band or ``(N, H, W, 3)`` colour, uint8
        (display values 0-255), other integers or float. Non-square
        cutouts are framed by their longer side (see
        `to_network_input`).
    stretch : {'auto', 'none', 'asinh'}
        ``'none'``: the values are display values (float 0-1, integers
        0 to the maximum of their dtype, e.g. uint8 0-255);
        ``'asinh'``: linear data, display-scaled per cutout and band
        with `display_stretch`; ``'auto'``: chosen by `_auto_stretch`
        (``'none'`` for uint8, ``'asinh'`` for float and signed
        integer data, decided from the sky noise for wider unsigned
        integers).
    crop, size : float, int
        Central fraction kept and network input size.
    mask : bool array-like, optional
        `True` for invalid pixels, like NaN: the shape of ``cutouts``
        (per band), or ``(N, H, W)`` for colour cutouts (all bands).
        Masked values are left out of the stretch's sky and noise.

    Returns
    -------
    x : ``(N, 3, size, size)`` float32 `~numpy.ndarray`
    masked : ``(N,)`` float `~numpy.ndarray`
        Fraction of invalid pixels in each cutout's central crop (what
        the network sees).
    """
    x, masked, _ = _prepare_cutouts(cutouts, stretch=stretch, crop=crop,
                                    size=size, mask=mask)
    return x, masked


def _cutout_mask(mask, shape):
    """``mask`` as a bool array of ``shape`` (broadcast over the bands
    of colour cutouts), or a clear `ValueError`."""
    mask = np.asarray(mask)
    if len(shape) == 4 and mask.shape == shape[:3]:
        mask = mask[..., None]
    elif mask.shape != shape:
        msg = (f'mask has shape {mask.shape} but the cutouts have shape '
               f'{shape}; they must be the same')
        raise ValueError(msg)
    return np.broadcast_to(mask.astype(bool), shape)


def _prepare_cutouts(cutouts, *, stretch='auto', crop, size, mask=None):
    """
    `prepare_cutouts`, plus the fraction of invalid pixels in the core
    of each cutout's network view (`_core_fraction`).
    """
    check_stretch(stretch)
    arr = np.asarray(cutouts)
    if arr.dtype.kind not in 'uif' or arr.dtype == bool:
        msg = f'cutouts must be numeric, not {arr.dtype}'
        raise TypeError(msg)
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] != 3):
        msg = ('cutouts must be a stack (N, H, W) of single-band or '
               f'(N, H, W, 3) of colour images, not shape {arr.shape}')
        raise ValueError(msg)
    if arr.shape[0] == 0:
        msg = 'the stack of cutouts is empty'
        raise ValueError(msg)
    if min(arr.shape[1:3]) < 8:
        msg = (f'cutouts must be at least 8x8 pixels, not '
               f'{arr.shape[1]}x{arr.shape[2]} (to classify sources in '
               'a field image, pass positions=)')
        raise ValueError(msg)
    if mask is not None:
        mask = _cutout_mask(mask, arr.shape)
        if not mask.any():
            mask = None
    if stretch == 'auto':
        valid = None
        if mask is not None:
            valid = ~(mask.any(axis=-1) if arr.ndim == 4 else mask)
        stretch = _auto_stretch(arr, colour=arr.ndim == 4, valid=valid,
                                what='cutouts')
    x = np.empty((arr.shape[0], 3, size, size), np.float32)
    masked = np.empty(arr.shape[0])
    core = np.empty(arr.shape[0])
    for i, cut in enumerate(arr):
        cut = _as_bands(cut)
        if mask is not None and mask[i].any():
            # Masked values become NaN (invalid) before the stretch, so
            # that they count in neither the sky nor the noise.
            cut = np.where(_as_bands(mask[i]), np.float32(np.nan),
                           cut.astype(np.float32))
        finite = np.isfinite(cut)
        if not finite.any():
            what = 'finite, unmasked' if mask is not None else 'finite'
            msg = f'cutout {i} has no {what} pixels'
            raise ValueError(msg)
        if stretch == 'none':
            disp = cut.astype(np.float32)
            if arr.dtype.kind in 'ui':
                disp /= np.float32(np.iinfo(arr.dtype).max)
        else:
            try:
                disp = _stretch_linear(cut)
            except ValueError as exc:
                msg = f'cutout {i} cannot be display-scaled: {exc}'
                raise ValueError(msg) from exc
        x[i], masked[i], core[i] = _to_network_input(disp, crop=crop,
                                                     size=size)
    return x, masked, core
