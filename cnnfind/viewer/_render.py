# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Stretch an image and the heatmap and encode them as PNG (numpy + zlib)."""

import struct
import zlib

import numpy as np

__all__ = ['STRETCHES', 'encode_png', 'heatmap_rgba', 'stretch_image']

#: Display stretches the viewer offers.
STRETCHES = ('zscale', 'asinh')


def stretch_image(data, stretch='zscale'):
    """
    Map an image to 8-bit grey levels for display.

    Parameters
    ----------
    data : 2D `~numpy.ndarray`
        The image; NaN pixels are drawn black.
    stretch : {'zscale', 'asinh'}
        ``'zscale'``: IRAF's zscale limits, linear between them.
        ``'asinh'``: the 0.5-99.8 percentile range with an asinh stretch
        (``a=0.1``), which shows faint stars and bright cores together.

    Returns
    -------
    grey : 2D `~numpy.ndarray` of uint8
        Row 0 is the *top* of the display: the image is flipped so that
        pixel (0, 0) is at the bottom left, as with ``origin='lower'``.

    Examples
    --------
    >>> import numpy as np
    >>> grey = stretch_image(np.arange(12.0).reshape(3, 4), 'asinh')
    >>> grey.dtype, grey.shape, int(grey[-1, 0]), int(grey[0, -1])
    (dtype('uint8'), (3, 4), 0, 255)
    """
    from astropy.visualization import (
        AsinhStretch,
        LinearStretch,
        PercentileInterval,
        ZScaleInterval,
    )

    if stretch not in STRETCHES:
        msg = f'unknown stretch {stretch!r}; choose from {STRETCHES}'
        raise ValueError(msg)
    data = np.asarray(data, dtype=float)
    finite = np.isfinite(data)
    values = data[finite]
    if values.size == 0:
        return np.zeros(data.shape, np.uint8)
    if stretch == 'zscale':
        vmin, vmax = ZScaleInterval().get_limits(values)
        fn = LinearStretch()
    else:
        vmin, vmax = PercentileInterval(99.3).get_limits(values)
        fn = AsinhStretch(a=0.1)
    scaled = np.zeros(data.shape)
    if vmax > vmin:
        scaled[finite] = np.clip((values - vmin) / (vmax - vmin), 0.0, 1.0)
    grey = np.round(255.0 * fn(scaled, clip=True))
    grey[~finite] = 0
    return grey.astype(np.uint8)[::-1]


def heatmap_rgba(heat):
    """
    Colour a [0, 1] heatmap as a translucent overlay (RGBA, flipped like
    `stretch_image`): transparent where the network sees nothing, opaque
    orange to yellow where it sees a star centre.
    """
    h = np.clip(np.nan_to_num(np.asarray(heat, float)), 0.0, 1.0)[::-1]
    rgba = np.empty(h.shape + (4,), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = np.round(80 + 175 * h)
    rgba[..., 2] = np.round(40 * h)
    rgba[..., 3] = np.round(230 * np.minimum(1.0, 2.0 * h))
    return rgba


def _chunk(kind, payload):
    body = kind + payload
    return (struct.pack('>I', len(payload)) + body
            + struct.pack('>I', zlib.crc32(body) & 0xFFFFFFFF))


def encode_png(pixels):
    """
    Encode an 8-bit image as PNG bytes.

    Parameters
    ----------
    pixels : `~numpy.ndarray` of uint8
        ``(ny, nx)`` grey levels or ``(ny, nx, 4)`` RGBA.

    Returns
    -------
    png : bytes

    Examples
    --------
    >>> import numpy as np
    >>> encode_png(np.zeros((2, 3), np.uint8))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        colour_type, channels = 0, 1
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        colour_type, channels = 6, 4
    else:
        msg = f'expected (ny, nx) or (ny, nx, 4) pixels, got {pixels.shape}'
        raise ValueError(msg)
    ny, nx = pixels.shape[:2]
    rows = pixels.reshape(ny, nx * channels)
    # Filter type 0 (none) in front of every row.
    raw = np.hstack([np.zeros((ny, 1), np.uint8), rows]).tobytes()
    header = struct.pack('>IIBBBBB', nx, ny, 8, colour_type, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', header)
            + _chunk(b'IDAT', zlib.compress(raw, 6)) + _chunk(b'IEND', b''))
