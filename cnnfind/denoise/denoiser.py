"""
Noise2Void denoising of astronomical images with an ONNX network.
"""

import copy
import warnings

import numpy as np
from astropy.nddata import NDData
from astropy.units import Quantity
from astropy.utils.masked import Masked
from scipy import ndimage

from cnnfind._provenance import _mark_denoised
from cnnfind._validation import _positive_number_or_none
from cnnfind.denoise._prepare import (
    from_net_space,
    median_fill,
    noise_model,
    noise_var_net_space,
    saturated_mask,
    to_net_space,
)
from cnnfind.exceptions import CNNFindWarning
from cnnfind.runtime.normalize import (
    _as_float32,
    check_mask_shape,
    robust_sky_noise,
    valid_pixel_mask,
)
from cnnfind.runtime.registry import load_model
from cnnfind.runtime.session import get_session
from cnnfind.runtime.tiling import _progress_bar, tile_windows

__all__ = ['N2VDenoiser']

#: Smallest image side the denoiser accepts (the noise estimate and the
#: network's neighbourhood need at least this much sky).
MIN_SIZE = 16

_REQUIRED_KEYS = ('normalization', 'halo', 'size_multiple',
                  'blind_spot_grid')

#: Gaussian sigma, in units of the FWHM given as ``restore_flux``, of the
#: low-pass filter applied to the residual that is added back.
FLUX_SIGMA_PER_FWHM = 2.0 / 3.0

#: Gaussian sigma, in pixels, of the low-pass filter of the residual that
#: is added back on low-count photon-counting images (see `_low_counts`).
#: The network's bias there depends on the local level, so the filter
#: must follow the stars (2/3 of a FWHM of 3 pixels, as ``restore_flux``;
#: at 4 pixels SNR 10-40 stars stay 1.5 % low at one count of sky).
LOW_COUNT_SIGMA = 2.0

#: Largest sky level, in photon counts ``(mean / noise)**2``, of the
#: images that `_low_counts` takes for low-count photon counting (the
#: skewness of the sky's Poisson noise is then at least 0.18).
_LOW_COUNT_MAX = 30.0

#: Largest fraction of negative pixels of such an image (photon counts
#: are never negative; read noise or a subtracted sky make many).
_LOW_COUNT_MAX_NEGATIVE = 1e-3


class N2VDenoiser:
    """
    Self-supervised (Noise2Void) denoiser for astronomical images.

    Each pixel is predicted from its neighbourhood alone by a blind-spot
    network (Krull et al. 2019, with the N2V2 changes of Höck et al.
    2022 against checkerboard artefacts), which gives a mean and a
    variance for the pixel's true value. The output is the posterior
    mean of that prediction and the pixel's own noisy value (Laine et
    al. 2019): in flat sky, where the neighbourhood predicts the pixel
    well, the output follows the prediction; at star peaks, cosmic-ray
    free sharp structure and other places the neighbourhood cannot
    predict, it stays close to the data, which keeps the flux of stars.

    The image is put in noise units with a robust sky and noise estimate
    and compressed with an asinh (linear within ten noise levels of the
    sky), and everything is inverted exactly. Masked and non-finite
    pixels are hidden from the network (they cannot contaminate their
    neighbours) and stay NaN in the output unless ``fill=True``.
    On low-count photon-counting images (no negative pixels, a sky of
    fewer than 30 counts), whose skewed noise the network does not
    average to its mean, the residual smoothed over 2 pixels is added
    back, so that the sky and the fluxes keep the data's local mean.
    Saturated plateaus are hidden from the network and passed through
    unchanged, and so are constant areas below the image maximum (the
    zero-filled edges of drizzled mosaics, chip gaps), which are no data
    (an `~cnnfind.exceptions.CNNFindWarning` says so; mask them to get
    NaN). Large images are processed in tiles whose halo covers the
    receptive field, so the result equals a single full-image pass.

    Parameters
    ----------
    model : str, path-like or `None`, optional
        A bundled model name, the path of an ``.onnx`` file (e.g. one
        made by `cnnfind.training.n2v.train_n2v`), or `None` for the
        bundled generic model ``'n2v'``.
    device : {'auto', 'cpu', 'cuda'}, optional
        Where the network runs.
    saturation : 'auto', float or `None`, optional
        Saturation level in data units; ``'auto'`` detects plateaus of
        pixels at the image maximum (so a hot pixel or cosmic ray
        brighter than the saturation level hides them, as do saturation
        levels that differ across a flat-fielded image: give the level
        then); `None` treats no pixel as saturated. Saturated pixels are
        hidden from the network and returned unchanged.
    outlier_sigma : float or `None`, optional
        Pixels further than this many predicted standard deviations
        from the network's prediction from their neighbourhood (hot
        pixels, cosmic rays, dead pixels; grown to the connected pixels
        beyond half of it) are hidden from the network in a second pass
        and returned unchanged, so that they are neither smeared into
        their neighbours nor removed. Cosmic rays of a few pixels (sharper
        than any PSF: single pixels, pairs, L shapes, 2x2 blocks and short
        tracks), cold (dead) pixels in such groups, and dead columns or
        rows more than this many noise levels below both sides are treated
        the same way. Hot (elevated) columns
        or rows one pixel wide, significant at this many noise levels
        over their length (a few noise levels above the sky over a few
        tens of pixels), are denoised with their excess over the columns
        beside them taken off, which is then added back: the line is
        kept, its noise removed, and its neighbours are not biased.
        `None` disables the check.
    tile : int, optional
        Core tile size in pixels (memory grows with its square).
    batch : int, optional
        Blind-spot passes run together per tile.
    n_threads : int or `None`, optional
        onnxruntime intra-op threads.
    restore_flux : float or `None`, optional
        The PSF FWHM in pixels, to restore aperture fluxes: the residual
        (data minus denoised image), smoothed with a Gaussian of sigma
        ``2/3 * restore_flux`` (masked and NaN pixels left out), is added
        back. Faint sources lose part of their flux to the denoising
        (about 20 % below SNR 10 with the bundled model); with this
        correction the flux in apertures of radius about 1.5 FWHM or
        more equals the data's, at the price of some of the noise
        reduction (about 0.5 dB of PSNR at FWHM 3 pixels). `None` (the
        default) leaves the denoised image as it is.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.denoise import N2VDenoiser
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(100.0, 5.0, (64, 64)).astype(np.float32)
    >>> denoised = N2VDenoiser()(image)
    >>> denoised.shape, denoised.dtype
    ((64, 64), dtype('float32'))
    >>> bool(np.std(denoised) < 0.5 * np.std(image))
    True
    """

    def __init__(self, model=None, device='auto', *, saturation='auto',
                 outlier_sigma=6.0, tile=256, batch=4, n_threads=None,
                 restore_flux=None):
        self.model = load_model(model, 'n2v', required_keys=_REQUIRED_KEYS)
        self.restore_flux = _positive_number_or_none(
            restore_flux, 'restore_flux (the PSF FWHM in pixels)')
        self.device = device
        if not (saturation is None or saturation == 'auto'):
            try:
                saturation = float(saturation)
            except (TypeError, ValueError):
                saturation = np.nan
            if not np.isfinite(saturation):
                msg = "saturation must be 'auto', None or a finite number"
                raise ValueError(msg)
        self.saturation = saturation
        if outlier_sigma is not None and not float(outlier_sigma) > 0:
            msg = 'outlier_sigma must be positive or None'
            raise ValueError(msg)
        self.outlier_sigma = (None if outlier_sigma is None
                              else float(outlier_sigma))
        if int(tile) < 16:
            msg = f'tile must be at least 16 pixels, not {tile}'
            raise ValueError(msg)
        self.tile = int(tile)
        self.batch = max(int(batch), 1)
        self.n_threads = n_threads
        card = self.model.card
        self._scale = float(card['normalization']['asinh_scale'])
        self._grid = int(card['blind_spot_grid'])
        self._halo = int(card['halo'])
        self._multiple = int(card['size_multiple'])
        # Fail early on an unusable file or device.
        self._session = get_session(self.model, device=device,
                                    n_threads=n_threads)

    def __repr__(self):
        return (f'<{self.__class__.__name__}(model={self.model.name!r}, '
                f'device={self.device!r}, saturation={self.saturation!r}, '
                f'tile={self.tile})>')

    def __call__(self, data, mask=None, *, fill=False, progress=False):
        """
        Denoise an image.

        Parameters
        ----------
        data : 2D array-like, `~astropy.units.Quantity`, masked array or `~astropy.nddata.NDData`
            The image: an array of real numbers of any type and byte
            order (converted to float32; see Raises for float64 and 32-
            and 64-bit integers), a Quantity, a NumPy masked array,
            an astropy `~astropy.utils.masked.Masked` array or Quantity,
            or an NDData (or subclass such as
            `~astropy.nddata.CCDData`). Non-finite pixels are treated as
            masked; the mask of a masked array or of an NDData is used
            too (combined with ``mask``), and the values under it are
            never used.
        mask : 2D bool array-like, optional
            `True` where a pixel is bad.
        fill : bool, optional
            Fill masked pixels with the network's prediction from their
            neighbours instead of NaN (large holes fill with the sky).
        progress : bool, optional
            Show a progress bar over tiles.

        Returns
        -------
        denoised : float32 `~numpy.ndarray`, `~astropy.units.Quantity`, masked array or NDData
            The denoised image, of the input's shape, as the input's
            type (float32 data in native byte order), with NaN at
            masked and non-finite pixels unless ``fill=True``. Saturated
            pixels and constant (zero-filled) areas are unchanged. A
            Quantity keeps its unit. A NumPy masked array or an astropy
            Masked array or Quantity comes back as the same type with
            the input's mask combined with ``mask`` (also where
            ``fill=True`` has filled the pixels under it). An NDData
            comes back as the same class with its data replaced by the
            denoised image, its mask combined with ``mask``, and copies
            of its ``unit``, ``wcs``, ``meta`` (with a ``HISTORY`` line
            naming the denoiser and its model added: `~cnnfind.CNNStarFinder`
            warns when it sees it), ``psf`` and (for
            `~astropy.nddata.CCDData`) ``flags``; its ``uncertainty``
            is dropped (`None`): it describes the noise of the raw
            pixels, which the denoised ones no longer have (their noise
            is lower and correlated between neighbours), as for other
            filtered images (``ccdproc.median_filter`` drops it too).
            Use the input's uncertainty with the raw data.

        Raises
        ------
        ValueError
            If the image is not 2-D, smaller than 16 pixels on a side,
            has no valid pixels or no noise (a constant image), or if
            ``mask`` has a different shape; if it is float64 or 32- or
            64-bit integers that float32, in which the denoiser works
            and returns its result, cannot hold: values beyond its range
            or a sky level at which its steps exceed half the noise
            (e.g. integers around ``2**40``; subtract a constant first).
        TypeError
            If the data are not real numbers (booleans, complex,
            strings).
        """
        if isinstance(data, NDData):
            mask2 = _combine_masks(data.mask, mask, np.shape(data.data))
            out = self._denoise(np.asarray(data.data), mask2, fill, progress)
            return _repack_nddata(data, out, mask2, self.model.name)
        if isinstance(data, Masked):
            # astropy's Masked arrays and Quantities: same type out, with
            # the combined mask (a copy: Masked would share the input's).
            mask2 = np.array(_combine_masks(data.mask, mask, data.shape),
                             dtype=bool)
            values = data.unmasked
            out = self._denoise(np.asarray(values), mask2, fill, progress)
            if isinstance(values, Quantity):
                out = Quantity(out, values.unit, copy=False)
            return Masked(out, mask=mask2)
        if isinstance(data, Quantity):
            return Quantity(self._denoise(data.value, mask, fill, progress),
                            data.unit, copy=False)
        if isinstance(data, np.ma.MaskedArray):
            # The values under the mask are never used (no fill value,
            # which an integer array could not hold as NaN). Same type
            # out, with the combined mask, as for astropy's Masked.
            mask2 = np.array(_combine_masks(np.ma.getmaskarray(data), mask,
                                            data.shape), dtype=bool)
            out = self._denoise(np.ma.getdata(data), mask2, fill, progress)
            return np.ma.MaskedArray(out, mask=mask2)
        return self._denoise(data, mask, fill, progress)

    def _denoise(self, data, mask, fill, progress):
        data = np.asarray(data)
        if data.ndim != 2:
            msg = f'data must be a 2-D image, not {data.ndim}-D'
            raise ValueError(msg)
        if min(data.shape) < MIN_SIZE:
            msg = (f'image of shape {data.shape} is too small: both sides '
                   f'must be at least {MIN_SIZE} pixels')
            raise ValueError(msg)
        if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
            msg = f'data must be real numbers, not {data.dtype}'
            raise TypeError(msg)
        data = _as_float32(data, mask)
        valid = valid_pixel_mask(data, mask)
        # Zero-filled (or otherwise constant) areas, such as the edges of
        # drizzled mosaics and chip gaps, are no data: left in, they bias
        # the sky and noise estimates and the pixels around them.
        level = None if self.saturation in (None, 'auto') else self.saturation
        filled = _fill_regions(data, valid, level)
        if filled.any():
            values = np.unique(data[filled])
            shown = ', '.join(f'{v:g}' for v in values[:3])
            more = ', ...' if values.size > 3 else ''
            warnings.warn(
                f'{int(filled.sum())} pixels in constant areas (value '
                f'{shown}{more}; zero-filled edges or gaps?) are treated as '
                'no data and returned unchanged; pass them in mask to get '
                'NaN instead', CNNFindWarning, stacklevel=3)
            valid &= ~filled
        sky, noise = robust_sky_noise(data, valid)
        keep = (np.zeros(data.shape, bool) if self.saturation is None else
                saturated_mask(data, valid, sky, noise, level))
        keep |= filled
        low_counts = _low_counts(data, valid & ~keep, sky, noise)
        with np.errstate(invalid='ignore'):
            x = (np.where(valid, data, sky) - sky) / noise
        s0, alpha = noise_model(x, valid & ~keep)
        net_valid = valid & ~keep
        z = to_net_space(x, self._scale)
        windows = list(tile_windows(data.shape, self.tile, self._halo,
                                    self._multiple))
        mean, logv = self._predict(z, net_valid, windows, progress)
        lines = None
        if self.outlier_sigma is not None:
            # Pixels the neighbourhood cannot explain at all (hot pixels,
            # cosmic rays, dead pixels): hide them and predict again
            # where they are, so they cannot leak into their neighbours.
            outliers = self._outliers(z, mean, logv, net_valid)
            outliers |= _sharp_outliers(x, net_valid, self.outlier_sigma,
                                        s0=s0, alpha=alpha)
            # Hot columns and rows are denoised with their excess taken
            # off, which is added back afterwards: hidden, whole lines
            # would bias the pixels beside them on bright nebulosity, and
            # returned raw, the faint line-like patterns of real frames
            # would stay noisy.
            lines, excess = _hot_lines(x, net_valid, self.outlier_sigma)
            outliers &= ~lines
            if lines.any():
                z = np.where(lines, to_net_space(x - excess, self._scale), z)
            held = outliers | lines
            if held.any():
                net_valid &= ~outliers
                keep |= outliers
                redo = [w for w in windows if held[w[1]].any()]
                m2, l2 = self._predict(z, net_valid, redo, progress)
                for core, _ in redo:
                    mean[core], logv[core] = m2[core], l2[core]
        # Gaussian posterior: prior N(mean, v - n2) from the
        # neighbourhood, likelihood N(z, n2) from the pixel itself.
        v = np.exp(np.clip(logv, -9.0, 12.0))
        n2 = noise_var_net_space(mean, self._scale, s0, alpha)
        w = np.clip(1.0 - n2 / v, 0.0, 1.0)
        zhat = np.where(net_valid, mean + w * (z - mean), mean)
        out = from_net_space(zhat, self._scale) * np.float32(noise)
        out += np.float32(sky)
        if lines is not None:
            out[lines] += excess[lines] * np.float32(noise)
        out[keep] = data[keep]
        if low_counts:
            # The network, trained on near-Gaussian noise, does not
            # return the local mean of skewed photon-counting noise
            # (the sky comes out a few per cent off): give the image
            # back the data's local mean (`_local_mean_correction`).
            out += _local_mean_correction(data, out, valid,
                                          LOW_COUNT_SIGMA)
            out[keep] = data[keep]
        if self.restore_flux is not None:
            out += _smoothed_residual(data, out, valid,
                                      FLUX_SIGMA_PER_FWHM * self.restore_flux)
            out[keep] = data[keep]
        if not fill:
            out[~(valid | filled)] = np.nan
        return out

    def _outliers(self, z, mean, logv, valid):
        """Hysteresis-grown pixels beyond ``outlier_sigma`` of prediction."""
        r = np.abs(z - mean) * np.exp(-0.5 * np.clip(logv, -9.0, 12.0))
        seeds = valid & (r > self.outlier_sigma)
        if not seeds.any():
            return seeds
        grown = valid & (r > 0.5 * self.outlier_sigma)
        labels, _ = ndimage.label(grown, structure=np.ones((3, 3)))
        return np.isin(labels, np.unique(labels[seeds])) & grown

    def _predict(self, z, valid, windows, progress):
        """Blind-spot mean and log variance maps over ``windows``' cores."""
        z = np.where(valid, z, np.float32(0.0))
        zmed = median_fill(z)
        mean = np.zeros(z.shape, np.float32)
        logv = np.zeros(z.shape, np.float32)
        bar = _progress_bar(len(windows), progress and len(windows) > 1,
                            'denoising')
        for core, window in windows:
            m, lv = self._run_window(z[window], zmed[window], valid[window],
                                     window)
            oy = core[0].start - window[0].start
            ox = core[1].start - window[1].start
            ny = core[0].stop - core[0].start
            nx = core[1].stop - core[1].start
            mean[core] = m[oy:oy + ny, ox:ox + nx]
            logv[core] = lv[oy:oy + ny, ox:ox + nx]
            if bar is not None:
                bar.update(1)
        if bar is not None and hasattr(bar, 'close'):
            bar.close()
        return mean, logv

    def _run_window(self, z, zmed, valid, window):
        """Blind-spot mean and log variance (net space) of one window."""
        ny, nx = z.shape
        m, g = self._multiple, self._grid
        py, px = -(-ny // m) * m, -(-nx // m) * m
        x = np.zeros((2, py, px), np.float32)
        x[0, :ny, :nx] = z
        x[1, :ny, :nx] = valid
        med = np.zeros((py, px), np.float32)
        med[:ny, :nx] = zmed
        # Grid offsets are global so that every tiling hides the same
        # pixels together.
        y0, x0 = window[0].start, window[1].start
        offsets = [(oy, ox) for oy in range(g) for ox in range(g)]
        mean = np.zeros((py, px), np.float32)
        logv = np.zeros((py, px), np.float32)
        name = self._session.get_inputs()[0].name
        for i in range(0, len(offsets), self.batch):
            chunk = offsets[i:i + self.batch]
            batch = np.repeat(x[None], len(chunk), axis=0)
            for b, (oy, ox) in enumerate(chunk):
                sy, sx = (oy - y0) % g, (ox - x0) % g
                batch[b, 0, sy::g, sx::g] = med[sy::g, sx::g]
                batch[b, 1, sy::g, sx::g] = 0.0
            pred = self._session.run(None, {name: batch})[0]
            for b, (oy, ox) in enumerate(chunk):
                sy, sx = (oy - y0) % g, (ox - x0) % g
                mean[sy::g, sx::g] = pred[b, 0, sy::g, sx::g]
                logv[sy::g, sx::g] = pred[b, 1, sy::g, sx::g]
        return mean[:ny, :nx], logv[:ny, :nx]


#: Footprint of the local sky of `_sharp_outliers`: the 5x5 box without
#: the 3x3 around the pixel, so that a cosmic ray of a few pixels does not
#: raise it.
_OUTER_RING = np.ones((5, 5), bool)
_OUTER_RING[1:4, 1:4] = False

#: Largest excess over the local sky, as a fraction of the pixel's own,
#: that the second brightest of the four side neighbours of a cosmic-ray
#: pixel may have. The PSF puts at least a quarter of the peak there
#: (FWHM 1.2 pixels) or more (0.38 at FWHM 1.5).
_SHARP_FRACTION = 0.1

#: Fewest pixels in a row or column below both their side neighbours that
#: make a bad column or row segment.
_MIN_LINE = 5

#: 3x3 structures that connect pixels down a column (index 0) or along a
#: row (index 1) only.
_ALONG = (np.array([[0, 1, 0]] * 3, bool), np.array([[0, 1, 0]] * 3, bool).T)


#: Most pixels of a cosmic-ray group (L shapes, 2x2 blocks, short tracks)
#: tested as a whole by `_small_groups`.
_GROUP_MAX = 4

#: Largest mean excess of the side neighbours of such a group, as a
#: fraction of the group's mean excess. The PSF puts more there: at least
#: 0.14 for a Moffat (beta = 3) PSF and 0.051 for a Gaussian one of FWHM
#: 1.2 pixels, whatever the sub-pixel position.
_GROUP_FRACTION = 0.04

#: Margin, in noise levels of the side neighbours' mean, by which it must
#: be below that fraction (faint stars of FWHM 1.2 whose light is split
#: between 2x2 pixels are otherwise taken for cosmic rays).
_GROUP_MARGIN = 3.0

#: Length in pixels of the running median along a column (or row) of
#: `_hot_lines`.
_LINE_WINDOW = 15

#: Length in pixels of the running median along a hot column (or row)
#: that estimates its excess: long, since the excess is added back to the
#: denoised line and its error stays there.
_EXCESS_WINDOW = 63

#: Fewest consecutive running medians above half the threshold that make
#: a candidate hot column or row segment.
_MIN_HOT_RUN = 12

#: Largest excess of the columns beside a hot column over the smooth
#: profile through the columns two and three away, as a fraction of the
#: hot column's own excess. A PSF has at least 0.34 (Gaussian, FWHM 1.2
#: pixels; 0.48 for Moffat), smooth light such as nebulosity much more.
_LINE_FRACTION = 0.2

#: Least excess of a hot column over each of the columns beside it, as a
#: fraction of its ``d`` (see `_is_hot_segment`).
_LINE_SIDE = 0.5


def _sharp_outliers(x, valid, nsigma, *, s0=1.0, alpha=0.0):
    """
    Cosmic rays of a few pixels and dead columns or rows, in the
    noise-normalised image ``x``: defects that the blind-spot test misses
    because their pixels predict each other.

    A cosmic-ray pixel is more than ``nsigma`` above the median of the
    5x5 box around it without the inner 3x3 (the local sky), none of its
    four side neighbours is brighter, and at most one of them has more
    than ``_SHARP_FRACTION`` of its excess: sharper than any PSF, which
    spreads its light over all four. These seeds grow (up to three
    pixels) over the connected pixels more than half of ``nsigma`` above
    their local sky, which catches the rest of a track. Groups of two to
    ``_GROUP_MAX`` such pixels whose brightest pixel is not sharp by
    itself (L shapes, 2x2 blocks) are tested as a whole, see
    `_small_groups`. Cold pixels and groups of them (dead or trapped
    pixels) are found with the same tests on ``-x``. A bad
    column pixel is more than ``nsigma`` below both its left and right
    neighbours, in a run of at least ``_MIN_LINE`` such pixels along the
    column (and likewise for rows), which stars and galaxies do not make.

    Parameters
    ----------
    x : 2D float `~numpy.ndarray`
        The image minus its sky, in units of the sky noise.
    valid : 2D bool `~numpy.ndarray`
        `True` for the pixels to use.
    nsigma : float
        The threshold in noise levels.
    s0, alpha : float, optional
        The noise model of `~cnnfind.denoise._prepare.noise_model`:
        variance ``s0 * (1 + alpha * max(x, 0))``.

    Returns
    -------
    outliers : 2D bool `~numpy.ndarray`
    """
    x = np.where(valid, x, np.float32(0.0)).astype(np.float32, copy=False)
    out = _spikes(x, valid, nsigma, s0, alpha)
    # cold pixels and groups (dead or trapped pixels, over-subtracted
    # cosmic rays) are the same test upside down
    out |= _spikes(-x, valid, nsigma, s0, alpha, sign=-1.0)
    pad = np.pad(np.where(valid, x, np.nan), 1, constant_values=np.nan)
    for axis, (before, after) in enumerate(((pad[1:-1, :-2], pad[1:-1, 2:]),
                                            (pad[:-2, 1:-1], pad[2:, 1:-1]))):
        with np.errstate(invalid='ignore'):
            low = valid & (np.minimum(before, after) - x > nsigma)
        if low.any():
            # runs along the columns (axis 0) for a left/right test, etc.
            out |= _long_runs(low, _MIN_LINE, axis)
    return out


def _spikes(x, valid, nsigma, s0=1.0, alpha=0.0, sign=1.0):
    """
    The cosmic-ray test of `_sharp_outliers` (sharp seeds, grown, and
    `_small_groups`) on ``x``, which is the noise-normalised image times
    ``sign`` (-1 for cold pixels), with invalid pixels at 0.
    """
    sky = ndimage.median_filter(x, footprint=_OUTER_RING, mode='mirror')
    excess = x - sky
    # the side neighbours' excess over the pixel's own local sky
    pad = np.pad(x, 1, mode='reflect')
    sides = np.sort([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2],
                     pad[1:-1, 2:]], axis=0) - sky
    seeds = (valid & (excess > nsigma) & (sides[3] <= excess)
             & (sides[2] < _SHARP_FRACTION * excess))
    # on the border a side neighbour is missing: a star cut by the edge
    # can look sharp there
    seeds[[0, -1], :] = seeds[:, [0, -1]] = False
    out = seeds
    if seeds.any():
        out = ndimage.binary_dilation(seeds, np.ones((3, 3), bool),
                                      iterations=3,
                                      mask=valid & (excess > 0.5 * nsigma))
    return out | _small_groups(x, valid, nsigma, sky, excess, s0, alpha,
                               sign)


def _long_runs(mask, least, axis=0):
    """
    The pixels of ``mask`` in runs of at least ``least`` pixels down a
    column (``axis=0``) or along a row (``axis=1``).
    """
    labels, n = ndimage.label(mask, _ALONG[axis])
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return (sizes >= least)[labels]


def _small_groups(x, valid, nsigma, sky, excess, s0=1.0, alpha=0.0,
                  sign=1.0):
    """
    Cosmic rays of two to ``_GROUP_MAX`` touching pixels that the
    single-pixel test of `_sharp_outliers` misses: L shapes whose corner
    is the brightest pixel, 2x2 blocks, short straight tracks.

    A group is a set of 8-connected valid pixels more than half of
    ``nsigma`` above their local sky (``excess``, over ``sky``), at least
    one of them more than ``nsigma``, away from the image border. It is a
    cosmic ray when its side neighbours (the pixels that share a side with
    it) are, on average, less than ``_GROUP_FRACTION`` of its mean excess
    above its sky, by a margin of ``_GROUP_MARGIN`` times the noise of
    that average (from the noise model ``s0 * (1 + alpha * max(sky, 0))``
    or the robust spread of the local sky around the group's brightest
    pixel, whichever is larger, so that structure under the group, such
    as the gradient of a galaxy, makes the test stricter): a PSF puts
    more light there, so that a cosmic ray on the sky must be some 30
    noise levels bright to be told from a faint under-sampled star.
    ``sign`` is -1 when ``x`` is the image upside down (cold groups): the
    noise model then takes the level ``-sky``.

    Returns
    -------
    groups : 2D bool `~numpy.ndarray`
        `True` on the pixels of the groups taken for cosmic rays.
    """
    grown = valid & (excess > 0.5 * nsigma)
    labels, n = ndimage.label(grown, np.ones((3, 3), bool))
    none = np.zeros(x.shape, bool)
    if n == 0:
        return none
    index = np.arange(1, n + 1)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    cand = ((sizes >= 2) & (sizes <= _GROUP_MAX)
            & (ndimage.maximum(excess, labels, index) > nsigma))
    border = np.concatenate([labels[0], labels[-1], labels[:, 0],
                             labels[:, -1]])
    cand[np.unique(border[border > 0]) - 1] = False
    if not cand.any():
        return none
    small = np.where(np.concatenate([[False], cand])[labels], labels, 0)
    # each side neighbour, labelled with the group it touches (no pixel of
    # another group can touch one: it would be part of it)
    side = ndimage.grey_dilation(small, footprint=ndimage.
                                 generate_binary_structure(2, 1))
    side = np.where((labels == 0) & valid, side, 0).ravel()
    nside = np.bincount(side, minlength=n + 1)[1:]
    sums = np.bincount(side, weights=x.ravel(), minlength=n + 1)[1:]
    level = ndimage.mean(sky, labels, index)
    sd = np.sqrt(s0 * (1.0 + alpha * np.maximum(sign * level, 0.0)))
    # the robust spread of the local sky (the ring around the brightest
    # pixel) where it is larger: Poisson noise, and the gradient of a
    # galaxy or nebula under the group, which biases its sky
    peaks = np.array(ndimage.maximum_position(excess, labels,
                                              index[cand])).reshape(-1, 2)
    dy, dx = np.nonzero(_OUTER_RING)
    ring = np.pad(x, 2, mode='reflect')[peaks[:, :1] + dy, peaks[:, 1:] + dx]
    ring = np.abs(ring - np.median(ring, axis=1, keepdims=True))
    sd[cand] = np.maximum(sd[cand], 1.4826 * np.median(ring, axis=1))
    with np.errstate(invalid='ignore', divide='ignore'):
        side_excess = sums / nside - level
        faint = (side_excess + _GROUP_MARGIN * sd / np.sqrt(nside)
                 < _GROUP_FRACTION * ndimage.mean(excess, labels, index))
    found = cand & (nside >= 4) & faint
    return np.concatenate([[False], found])[labels]


def _hot_lines(x, valid, nsigma):
    """
    Hot (elevated) columns and rows one pixel wide, in the
    noise-normalised image ``x``: the blind-spot test misses them because
    their pixels predict each other along the line, and they bias the
    columns beside them.

    See `_hot_columns`, applied to the image and to its transpose.

    Parameters
    ----------
    x : 2D float `~numpy.ndarray`
        The image minus its sky, in units of the sky noise.
    valid : 2D bool `~numpy.ndarray`
        `True` for the pixels to use.
    nsigma : float
        The threshold in noise levels.

    Returns
    -------
    lines : 2D bool `~numpy.ndarray`
        `True` on the pixels of the hot columns and rows.
    excess : 2D float32 `~numpy.ndarray`
        Their excess over the columns (or rows) beside them, in the units
        of ``x`` (a running median along each segment); 0 elsewhere.
    """
    xn = np.where(valid, x, np.nan).astype(np.float32)
    out, excess = _hot_columns(xn, nsigma)
    out_t, excess_t = _hot_columns(np.ascontiguousarray(xn.T), nsigma)
    out |= out_t.T
    excess += excess_t.T
    excess[~valid] = 0.0
    return out & valid, excess


def _hot_columns(x, nsigma):
    """
    Hot column segments of an image, see `_hot_lines`.

    At each pixel of column ``c``, ``d`` is its excess over the smooth
    profile (quadratic in the distance) through the means ``p1``, ``p2``
    of the columns one and two away, so that smooth light and the wings
    of stars give little; ``e`` is the excess of ``p1`` over the smooth
    profile through ``p2`` and the mean ``p3`` of the columns three away:
    none for a hot column, a large fraction of ``d`` for any PSF or
    extended source. Both are in units of the noise of ``d``, measured
    (mean absolute value over ``_LINE_WINDOW`` rows) in the columns three
    and four away, which counts Poisson noise and the structure of nearby
    sources. Candidate segments are runs of at least ``_MIN_HOT_RUN``
    rows where the running median of ``d`` over ``_LINE_WINDOW`` rows is
    significant at half of ``nsigma``, or of at least ``_MIN_LINE``
    pixels with ``d`` above ``nsigma`` each; their ends are trimmed, then
    extended (`_trim_segment`), and `_is_hot_segment` decides.

    Parameters
    ----------
    x : 2D float32 `~numpy.ndarray`
        The noise-normalised image, NaN where invalid.
    nsigma : float
        The threshold in noise levels.

    Returns
    -------
    lines : 2D bool `~numpy.ndarray`
        The hot column segments.
    excess : 2D float32 `~numpy.ndarray`
        Their ``d`` in the units of ``x`` (running median over
        ``_EXCESS_WINDOW`` rows); 0 elsewhere.
    """
    ny, nx = x.shape
    out = np.zeros(x.shape, bool)
    excess = np.zeros(x.shape, np.float32)
    if nx < 9:
        return out, excess

    xpad = np.pad(x, ((0, 0), (4, 4)), constant_values=np.nan)

    def columns(offsets):
        # mean of ``x`` shifted by ``offsets`` columns (NaN outside)
        return sum(xpad[:, 4 + o:4 + o + nx] for o in offsets) / len(offsets)

    p1 = columns((-1, 1))
    p2 = columns((-2, 2))
    raw = x - np.float32(4.0 / 3.0) * p1 + p2 / np.float32(3.0)
    e = p1 - np.float32(1.6) * p2 + np.float32(0.6) * columns((-3, 3))
    del p1, p2
    ok = np.isfinite(raw)
    num = ndimage.uniform_filter1d(np.where(ok, np.abs(raw), np.float32(0.0)),
                                   _LINE_WINDOW, axis=0, mode='nearest')
    den = ndimage.uniform_filter1d(ok.astype(np.float32), _LINE_WINDOW,
                                   axis=0, mode='nearest')
    with np.errstate(invalid='ignore', divide='ignore'):
        mad = np.where(den > 0.5, num / den, np.float32(np.nan))
    del num, den, ok
    pad = np.pad(mad, ((0, 0), (4, 4)), constant_values=np.nan)
    total = np.zeros(x.shape, np.float32)
    count = np.zeros(x.shape, np.float32)
    for o in (-4, -3, 3, 4):
        near = pad[:, 4 + o:4 + o + nx]
        good = np.isfinite(near)
        total += np.where(good, near, np.float32(0.0))
        count += good
    del pad, mad
    with np.errstate(invalid='ignore', divide='ignore'):
        sig = np.float32(np.sqrt(np.pi / 2)) * total / count
    sig[~(sig > 0)] = np.inf
    del total, count
    e /= sig
    with np.errstate(invalid='ignore'):
        dz = raw / sig
    dz[~np.isfinite(dz)] = 0.0
    # z score of the running median (efficiency 2/pi of the mean)
    z = (ndimage.median_filter(dz, size=(_LINE_WINDOW, 1), mode='nearest')
         * np.float32(np.sqrt(2.0 * _LINE_WINDOW / np.pi)))
    cand = (_long_runs(z > 0.5 * nsigma, _MIN_HOT_RUN)
            | _long_runs(dz > nsigma, _MIN_LINE))
    del z, dz
    labels, _ = ndimage.label(cand, _ALONG[0])
    for sl in ndimage.find_objects(labels):
        c = sl[1].start
        r0, r1 = _trim_segment(raw[:, c], sl[0].start, sl[0].stop)
        if r1 - r0 >= _MIN_LINE and _is_hot_segment(x, raw, sig, e, r0, r1, c,
                                                    nsigma):
            out[r0:r1, c] = True
            seg = raw[r0:r1, c]
            finite = np.isfinite(seg)
            seg = np.where(finite, seg, np.median(seg[finite]))
            excess[r0:r1, c] = ndimage.median_filter(
                seg, min(_EXCESS_WINDOW, seg.size), mode='nearest')
    return out, excess


def _is_hot_segment(x, raw, sig, e, start, stop, c, nsigma):
    """
    Whether rows ``start:stop`` of column ``c`` of the image ``x`` make a
    hot column, with ``d`` of `_hot_columns` in the units of the image
    (``raw``), its noise ``sig``, and ``e`` in units of ``sig``.

    Its inliers are the pixels whose ``d`` is within three typical noise
    levels (plus a quarter of the median) of the segment's median and
    whose ``e`` is within 3 of 0: a source crossing the line is left out.
    They must make at least three quarters of the segment, and over them
    the median ``d / sig`` must be significant at ``nsigma`` (a line of
    a few noise levels needs a few tens of pixels), larger than that of
    the columns one and two away (not the echo of a brighter line) and
    more than 1 / ``_LINE_FRACTION`` times the median ``e`` (not a
    source, however narrow). Last, the column must stand above the
    column on each side by at least half its ``d`` (medians over the
    inliers): the edge of a step in the sky (an overscan or amplifier
    boundary) has a ``d`` of half the step, but nothing above its
    neighbour on the high side.
    """
    seg = raw[start:stop, c]
    noise = sig[start:stop, c]
    ee = e[start:stop, c]
    level = np.nanmedian(seg)
    with np.errstate(invalid='ignore'):
        inliers = ((np.abs(seg - level)
                    < 3.0 * np.median(noise) + 0.25 * abs(level))
                   & (np.abs(ee) < 3.0))
    n = int(inliers.sum())
    if n < max(_MIN_LINE, 0.75 * seg.size):
        return False
    level = np.median((seg / noise)[inliers])
    if not (level * np.sqrt(2.0 * n / np.pi) > nsigma
            and abs(np.median(ee[inliers])) < _LINE_FRACTION * level):
        return False
    beside = [np.median((raw[start:stop, cc] / sig[start:stop, cc])[inliers])
              for cc in (c - 2, c - 1, c + 1, c + 2) if 0 <= cc < raw.shape[1]]
    beside = [b for b in beside if np.isfinite(b)]
    if not (beside and level > max(beside)):
        return False
    d = np.median(seg[inliers])
    rows = np.arange(start, stop)[inliers]
    for cc in (c - 1, c + 1):
        if 0 <= cc < x.shape[1]:
            step = np.nanmedian(x[rows, c] - x[rows, cc])
            if not step > _LINE_SIDE * d:
                return False
    return True


def _trim_segment(d, start, stop):
    """
    ``start, stop`` of a run of ``d`` narrowed to the pixels above half
    its median, then widened over the neighbouring pixels between half
    and three times the new median (not into a source).
    """
    if not np.isfinite(d[start:stop]).any():
        return start, start
    half = 0.5 * np.nanmedian(d[start:stop])
    while stop - start > 1 and not d[start] > half:
        start += 1
    while stop - start > 1 and not d[stop - 1] > half:
        stop -= 1
    if not d[start] > half:
        return start, start
    half = 0.5 * np.nanmedian(d[start:stop])
    while start > 0 and half < d[start - 1] < 6.0 * half:
        start -= 1
    while stop < len(d) and half < d[stop] < 6.0 * half:
        stop += 1
    return start, stop


#: Fewest pixels equal to all their eight neighbours that make a constant
#: area of `_fill_regions` (a 10x10 block, or a gap 3 pixels wide and 66
#: long).
_FILL_MIN_CORE = 64

#: Largest fraction of pairs of side-by-side pixels of equal value in the
#: rest of the image for which constant areas are taken for fill values:
#: noise of a few quantisation steps or more gives fewer (0.06 at 5 steps);
#: coarsely quantised data (low-count photon counting, 8-bit images) make
#: natural plateaus, which are data.
_FILL_MAX_TIES = 0.1


def _fill_regions(data, valid, level=None):
    """
    Constant areas of an image: zero-filled mosaic edges and chip gaps.

    A constant area is an 8-connected set of valid pixels of one value,
    with at least ``_FILL_MIN_CORE`` pixels whose eight neighbours all
    have that value too (its core; the area is the core and the pixels
    next to it), below the saturation plateaus (its value is more
    than 2 % of the range from the median to the maximum below the
    maximum, and below the saturation ``level`` if given). They are
    returned only where the rest of the image is not quantised so
    coarsely that its noise makes such plateaus: less than
    ``_FILL_MAX_TIES`` of the pairs of side-by-side pixels away from
    them are equal.

    Parameters
    ----------
    data : 2D float32 `~numpy.ndarray`
        The image.
    valid : 2D bool `~numpy.ndarray`
        `True` for the pixels to use.
    level : float or `None`, optional
        The saturation level.

    Returns
    -------
    filled : 2D bool `~numpy.ndarray`
        `True` on the pixels of the constant areas.
    """
    out = np.zeros(data.shape, bool)
    pad = np.pad(np.where(valid, data, np.nan), 1, constant_values=np.nan)
    ny, nx = data.shape
    core = valid.copy()
    for dy in range(3):
        for dx in range(3):
            if (dy, dx) != (1, 1):
                core &= pad[dy:dy + ny, dx:dx + nx] == data
    if core.sum() < _FILL_MIN_CORE:
        return out
    top = float(np.max(data, where=valid, initial=-np.inf))
    upper = top - 0.02 * (top - float(np.median(data[valid])))
    if level is not None:
        upper = min(upper, level)
    values, counts = np.unique(data[core], return_counts=True)
    for value in values[(counts >= _FILL_MIN_CORE) & (values < upper)]:
        labels, n = ndimage.label(valid & (data == value),
                                  np.ones((3, 3), bool))
        ncore = np.bincount(labels[core], minlength=n + 1)
        ncore[0] = 0
        area = (ncore >= _FILL_MIN_CORE)[labels]
        # the pixels next to its core: not the data pixels of that value
        # which happen to touch its edge
        out |= area & ndimage.binary_dilation(area & core,
                                              np.ones((3, 3), bool))
    if out.any():
        rest = valid & ~ndimage.binary_dilation(out, np.ones((3, 3), bool))
        pairs = rest[:, 1:] & rest[:, :-1]
        if not (pairs.any() and np.mean(data[:, 1:][pairs]
                                        == data[:, :-1][pairs])
                < _FILL_MAX_TIES):
            out[:] = False
    return out


def _repack_nddata(nd, out, mask, model_name):
    """
    ``nd``'s class with the denoised image ``out`` as data, the combined
    ``mask`` (or none) and copies of ``nd``'s unit, wcs, meta (with a
    ``HISTORY`` line naming the denoiser and ``model_name`` added), psf
    and flags; its uncertainty, which describes the noise of the raw
    pixels, is dropped.
    """
    meta = _mark_denoised(copy.deepcopy(nd.meta), model_name)
    kwargs = {'mask': None if mask is None else np.array(mask, dtype=bool),
              'meta': meta, 'wcs': copy.deepcopy(nd.wcs)}
    if nd.unit is not None:
        kwargs['unit'] = nd.unit
    for name in ('psf', 'flags'):
        value = getattr(nd, name, None)
        if value is not None:
            kwargs[name] = copy.deepcopy(value)
    return nd.__class__(out, **kwargs)


def _combine_masks(mask1, mask2, shape):
    """
    The union of two masks of ``shape`` (`True` where bad) as a bool
    array, or the one that is not `None` as it is, or `None`.
    """
    if mask1 is None or mask2 is None:
        return mask2 if mask1 is None else mask1
    return (check_mask_shape(mask1, shape).astype(bool)
            | check_mask_shape(mask2, shape).astype(bool))


def _low_counts(data, valid, sky, noise):
    """
    Whether an image is photon counting with a low sky: (almost) no
    negative pixels, and a sky of fewer than ``_LOW_COUNT_MAX`` counts,
    measured as ``(mean / noise)**2`` (in any units: a Poisson sky of
    ``n`` counts scaled by a gain has mean over noise ``sqrt(n)``). The
    mean is that of the valid pixels up to 5 noise levels above the
    (median) ``sky``: the median of a sky of under one count is 0.

    There the sky's noise is skewed and discrete, unlike the
    near-Gaussian noise of the network's training data, and the
    network's prediction is not the local mean: it is off by a few
    hundredths of the noise, some per cent of the sky (see the
    low-count section of the denoising documentation).
    """
    values = data[valid]
    if values.size == 0 or not noise > 0:
        return False
    if np.count_nonzero(values < 0) > _LOW_COUNT_MAX_NEGATIVE * values.size:
        return False
    mean = float(np.mean(values[values <= sky + 5.0 * noise],
                         dtype=np.float64))
    return mean > 0 and (mean / noise) ** 2 < _LOW_COUNT_MAX


def _local_mean_correction(data, out, valid, sigma):
    """
    ``data - out`` averaged with a Gaussian of ``sigma`` pixels over the
    valid pixels (normalised convolution), at every pixel (masked ones
    too, for ``fill=True``); zero where no valid pixel is near. Added to
    ``out``, it gives the denoised image the data's local mean, which is
    unbiased whatever the noise distribution.
    """
    resid = np.where(valid, data - out, np.float32(0.0)).astype(np.float32)
    weight = ndimage.gaussian_filter(valid.astype(np.float32), sigma,
                                     mode='constant')
    smooth = ndimage.gaussian_filter(resid, sigma, mode='constant')
    with np.errstate(invalid='ignore', divide='ignore'):
        corr = np.where(weight > 0.05, smooth / weight, np.float32(0.0))
    return corr.astype(np.float32)


def _smoothed_residual(data, out, valid, sigma):
    """
    ``data - out`` low-pass filtered with a Gaussian of ``sigma`` pixels
    over the valid pixels only (normalised convolution); zero where no
    valid pixel is near, and at the invalid pixels.
    """
    corr = _local_mean_correction(data, out, valid, sigma)
    return np.where(valid, corr, np.float32(0.0)).astype(np.float32)
