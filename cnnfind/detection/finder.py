"""
CNNStarFinder: a drop-in replacement for DAOStarFinder driven by a
fully convolutional centre-heatmap network.
"""

import warnings

import astropy.units as u
import numpy as np
from astropy.nddata import NDData
from astropy.utils.decorators import deprecated_renamed_argument
from astropy.utils.exceptions import AstropyDeprecationWarning
from photutils.detection import StarFinderBase
from photutils.utils.exceptions import NoDetectionsWarning

from cnnfind._provenance import _warn_if_denoised
from cnnfind._validation import _positive_int_or_none
from cnnfind._wcs import _add_sky_centroid
from cnnfind.detection._background import _LocalBackground
from cnnfind.detection._correlation import correlation_factor, roughness
from cnnfind.detection._input import _network_input
from cnnfind.detection._kernel import _DAOKernel
from cnnfind.detection._measure import (
    _centres,
    _dao_columns,
    _detection_amplitudes,
    _ellipse_coeffs,
    _fit_sources,
    _neighbour_stamps,
    _render_models,
    _stamps,
    _start_amplitudes,
)
from cnnfind.detection._saturation import _saturated_stars
from cnnfind.detection._vetting import FEATURES, vetting_features
from cnnfind.detection.catalog import _CNNStarFinderCatalog
from cnnfind.exceptions import CNNFindWarning
from cnnfind.runtime.normalize import (
    _as_float32,
    check_mask_shape,
    robust_sky_noise,
    valid_pixel_mask,
)
from cnnfind.runtime.registry import ModelError, load_model
from cnnfind.runtime.session import get_session
from cnnfind.runtime.tiling import run_tiled

__all__ = ['CNNStarFinder']


class _Unset:
    """Sentinel for deprecated arguments that were not given."""

    def __repr__(self):
        return '<unset>'


_UNSET = _Unset()

_CARD_KEYS = ('normalization', 'size_multiple', 'halo')
_VETTING_KEYS = ('features', 'raw_floor', 'calibration',
                 'default_min_probability')

#: Heatmap peaks whose linear amplitude at the start position is below
#: this fraction of the threshold are not fitted. On seeded sparse,
#: crowded, faint and realistic 1024x1024 fields (seeds 5 and 6,
#: ``threshold`` 3 and 5 sigma) the default catalogues are identical with
#: and without the cut; with vetting at ``threshold=5*std`` it removes a
#: third of the peaks (without vetting the probability cut comes first).
_START_CUT = 0.6

#: Candidates whose fitted amplitude is below this fraction of the
#: threshold are not vetted (nor kept).
_VET_CUT = 0.8


def _sigmoid(x):
    """Logistic function (float32 in, float32 out)."""
    with np.errstate(over='ignore'):
        return 1.0 / (1.0 + np.exp(-x))


def _input_channels(session):
    """Channels of the image input: 2 (the bundled model) or 3
    (a model trained with a matched-filter channel)."""
    n = session.get_inputs()[0].shape[1]
    return n if isinstance(n, int) and n in (2, 3) else 2


def _none_found():
    """photutils' answer when nothing is found."""
    warnings.warn('No sources were found.', NoDetectionsWarning, stacklevel=3)


def _merge_range(lower, upper, new, old_prefix, new_name):
    """Fold deprecated ``*lo``/``*hi`` arguments into a range."""
    if lower is _UNSET and upper is _UNSET:
        return new
    warnings.warn(f'"{old_prefix}lo" and "{old_prefix}hi" are deprecated '
                  f'(as in photutils 3.0); use "{new_name}=(lower, upper)" '
                  'instead.', AstropyDeprecationWarning, stacklevel=3)
    base = new if new is not None else (-np.inf, np.inf)
    return (base[0] if lower is _UNSET else lower,
            base[1] if upper is _UNSET else upper)


def _check_correlation(value):
    """``'auto'``, `None` or a finite number >= 1."""
    if value is None or (isinstance(value, str) and value == 'auto'):
        return value
    try:
        factor = float(value)
    except (TypeError, ValueError):
        factor = np.nan
    if not (np.isfinite(factor) and factor >= 1.0):
        msg = ("noise_correlation must be 'auto', None or a number >= 1, "
               f'not {value!r}')
        raise ValueError(msg)
    return factor


def _check_range(value, name):
    if value is None:
        return None
    if np.ndim(value) != 1 or np.size(value) != 2:
        msg = f'{name} must be a 2-element (lower, upper) tuple or None'
        raise ValueError(msg)
    return tuple(float(v) for v in value)


def _unpack_data(data, mask):
    """Plain float array, combined mask and unit from any input type."""
    unit = None
    if isinstance(data, NDData):
        if data.mask is not None:
            mask = data.mask if mask is None else (
                check_mask_shape(mask, np.shape(data.data)) | data.mask)
        unit = data.unit
        data = data.data
    if isinstance(data, u.Quantity):
        unit = data.unit
        data = data.value
    if isinstance(data, np.ma.MaskedArray):
        m = np.ma.getmaskarray(data)
        mask = m if mask is None else (
            check_mask_shape(mask, data.shape).astype(bool) | m)
        data = data.filled(np.nan)
    data = np.asarray(data)
    if data.ndim != 2:
        msg = f'data must be a 2D image, got an array of shape {data.shape}'
        raise ValueError(msg)
    if not (np.issubdtype(data.dtype, np.number)
            or data.dtype == bool) or np.iscomplexobj(data):
        msg = f'data must be real numbers, got dtype {data.dtype}'
        raise TypeError(msg)
    if min(data.shape) < 5:
        msg = f'the image is too small ({data.shape}); it needs >= 5x5'
        raise ValueError(msg)
    if mask is not None:
        mask = check_mask_shape(mask, data.shape)
    # Native byte order float32 (FITS data are big-endian), with a clear
    # error where float32 cannot hold the image.
    data = _as_float32(data, mask)
    return data, mask, unit


def _prepare_image(data, mask, what):
    """
    Plain float32 image, combined mask, unit, validity map, sky and noise
    from any input type; `ValueError` ending in ``what`` when no pixel is
    valid.
    """
    data, mask, unit = _unpack_data(data, mask)
    valid = valid_pixel_mask(data, mask)
    if not valid.any():
        msg = f'all pixels are masked or NaN: {what}'
        raise ValueError(msg)
    sky, noise = robust_sky_noise(data, valid)
    return data, mask, unit, valid, sky, noise


def _strip_unit(value, unit, name):
    """Value of ``threshold``/``peak_max`` in the data's unit."""
    if value is None:
        return None
    if isinstance(value, u.Quantity):
        if unit is None:
            msg = f'{name} has units but the data do not'
            raise ValueError(msg)
        return value.to_value(unit)
    if unit is not None:
        msg = f'{name} must have the same units as the data ({unit})'
        raise ValueError(msg)
    return value


class CNNStarFinder(StarFinderBase):
    """
    Detect stars with a convolutional network; a drop-in replacement
    for `~photutils.detection.DAOStarFinder`.

    A fully convolutional network predicts, for every pixel, the
    likelihood that a star is centred there. It was trained to keep
    faint and crowded stars and to reject cosmic rays, hot pixels,
    galaxies, gradients and the many peaks of saturated stars. Each
    peak of that heatmap is then measured on the data: a PSF-shaped
    (Gaussian of the given ``fwhm``, ``ratio`` and ``theta``) fit that
    ignores masked and NaN pixels and subtracts its neighbours gives
    the centroid, and a matched-filter amplitude with the local
    background known (a mesh of clipped medians combined with an
    annulus around each source) is what ``threshold`` is applied to;
    DAOFIND's sharpness, roundness, peak, flux and ``daofind_mag``
    columns are computed as `DAOStarFinder` does.

    So there are two cuts: ``threshold`` on the significance of the
    PSF amplitude, as for `DAOStarFinder`, and ``min_probability`` on
    the network's calibrated probability that the source is a star,
    which rejects what a significance cut cannot (cosmic rays, hot
    pixels, galaxies, the fragments of saturated stars). An optional
    second stage (``vetting=True``) re-scores the candidates with a
    gradient-boosted tree ensemble on features of the data around each
    source; it is off by default (see ``vetting``).

    Parameters
    ----------
    threshold : float, `~astropy.units.Quantity` or 2D array
        Detection threshold in data units, as for `DAOStarFinder`:
        ``threshold=5 * std`` keeps sources whose PSF amplitude is at
        least 5 times its standard error (with ``scale_threshold``) --
        a 5-sigma matched-filter detection. The statistic is a fit over
        the whole PSF core with the local background known, not
        DAOFIND's small kernel, so faint stars keep their significance.
        Where the noise varies over the image, a scalar threshold
        follows it (times the local noise over its median), so that
        ``5 * std`` means 5 local sigma; a 2D threshold is used as given.
        Where the noise is correlated between pixels the standard error
        includes it (see ``noise_correlation``).
    fwhm : float
        FWHM of the PSF major axis in pixels. It sizes the centroid fit
        and the DAOFIND columns and tells the network the scale of a
        point source (so galaxies can be rejected). Values from about
        1.5 to 9 pixels are supported.
    ratio, theta, sigma_radius : float, optional
        Axis ratio, position angle (degrees) and truncation radius (in
        sigma) of the Gaussian kernel, as for `DAOStarFinder`.
    sharplo, sharphi, roundlo, roundhi : float, optional
        Deprecated (as in photutils 3.0); use ``sharpness_range`` and
        ``roundness_range``.
    exclude_border : bool, optional
        Drop sources within half a kernel of the image border.
    n_brightest : int or `None`, optional
        Keep only the ``n_brightest`` sources by flux.
    peak_max : float or `None`, optional
        Drop sources whose peak pixel exceeds this value.
    xycoords : (N, 2) array or `None`, optional
        Skip detection and measure the sources at these (x, y)
        positions (their probability is still reported).
    min_separation : float or `None`, optional
        Minimum separation of sources in pixels. `None` (default) lets
        the network resolve pairs down to about 1.5-1.7 FWHM; unlike
        `DAOStarFinder` (2.5 FWHM) close pairs are kept.
    scale_threshold : bool, optional
        If `True` (default) ``threshold`` is multiplied by the fitted
        amplitude's relative standard error, making it a significance
        cut; if `False` it is a cut on the amplitude itself.
    noise_correlation : 'auto', float or `None`, optional
        How much noise correlated between neighbouring pixels (resampled,
        co-added or drizzled images, scanned photographic plates) raises
        the amplitude's standard error over the white-noise one, which
        is what ``threshold`` is compared with when ``scale_threshold``
        is `True`. ``'auto'`` (default) measures it from the data (1 for
        white noise; about 2 for a bilinearly resampled image or a DSS
        plate at FWHM 3 px) and records it as ``noise_correlation`` in
        the table's ``meta``; a number (at least 1) gives it; `None`
        assumes white noise, as `DAOStarFinder` does.
    sharpness_range, roundness_range : tuple or `None`, optional
        Optional DAOFIND shape cuts. The default `None` applies none:
        the network makes the star/artefact decision, and shape cuts
        would remove faint stars.
    min_probability : float or `None`, optional
        Minimum calibrated probability that a detection is a star.
        `None` uses the model card's default (the cut that maximised F1
        on the calibration fields).
    vetting : bool, optional
        If `True`, score sources with the model's vetting stage (when
        its card names one): better on simulated fields, but not shown
        to carry over to real images (on a photographic plate it agrees
        less with a SExtractor catalogue than the network alone; see the
        benchmarks page) and half as fast, so it is off by default.
        `False` (default) uses the network's calibrated heatmap alone.
    model : str, path or `None`, optional
        A bundled model name or the path of an ONNX file that follows
        the star-finder contract (default: the bundled model).
    device : {'auto', 'cpu', 'cuda'}, optional
        Where onnxruntime runs.
    progress : bool, optional
        Show a progress bar over tiles.
    tile_size : int, optional
        Core tile size; memory is bounded by the tile, not the image.
    n_threads : int or `None`, optional
        onnxruntime intra-op threads.

    See Also
    --------
    photutils.detection.DAOStarFinder

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind import CNNStarFinder
    >>> from cnnfind.simulation import FieldConfig, simulate_field
    >>> sim = simulate_field((128, 128), FieldConfig(density=600,
    ...                      snr_min=20), seed=2)
    >>> data = sim['image'] - np.median(sim['image'])
    >>> finder = CNNStarFinder(threshold=5 * sim['noise'], fwhm=3.0)
    >>> table = finder(data)
    >>> table.colnames[:3]
    ['id', 'x_centroid', 'y_centroid']
    """

    @deprecated_renamed_argument('brightest', 'n_brightest',
                                 'photutils 3.0')
    @deprecated_renamed_argument('peakmax', 'peak_max', 'photutils 3.0')
    def __init__(self, threshold, fwhm, ratio=1.0, theta=0.0,
                 sigma_radius=1.5, sharplo=_UNSET, sharphi=_UNSET,
                 roundlo=_UNSET, roundhi=_UNSET, exclude_border=False,
                 n_brightest=None, peak_max=None, xycoords=None,
                 min_separation=None, scale_threshold=True, *,
                 sharpness_range=None, roundness_range=None,
                 min_probability=None, vetting=False, model=None,
                 device='auto', progress=False, tile_size=1024,
                 n_threads=None, noise_correlation='auto'):
        if not np.isscalar(fwhm):
            msg = 'fwhm must be a scalar value'
            raise TypeError(msg)
        self.threshold = threshold
        self.fwhm = float(fwhm)
        self.ratio = float(ratio)
        self.theta = float(theta) % 360.0
        self.sigma_radius = float(sigma_radius)
        self.kernel = _DAOKernel(self.fwhm, ratio=self.ratio,
                                 theta=self.theta,
                                 sigma_radius=self.sigma_radius)
        if not 1.0 <= self.fwhm <= 12.0:
            warnings.warn(f'fwhm={self.fwhm} is outside the range the '
                          'network was trained for (about 1.3-9 px)',
                          CNNFindWarning, stacklevel=2)
        self.sharpness_range = _check_range(
            _merge_range(sharplo, sharphi, sharpness_range, 'sharp',
                         'sharpness_range'), 'sharpness_range')
        self.roundness_range = _check_range(
            _merge_range(roundlo, roundhi, roundness_range, 'round',
                         'roundness_range'), 'roundness_range')
        self.exclude_border = bool(exclude_border)
        self.n_brightest = _positive_int_or_none(n_brightest, 'n_brightest')
        self.peak_max = peak_max
        if xycoords is not None:
            xycoords = np.asarray(xycoords, dtype=float)
            if xycoords.ndim != 2 or xycoords.shape[1] != 2:
                msg = 'xycoords must be shaped as an Nx2 array'
                raise ValueError(msg)
        self.xycoords = xycoords
        if min_separation is not None and min_separation < 0:
            msg = 'min_separation must be >= 0'
            raise ValueError(msg)
        self.min_separation = min_separation
        self.scale_threshold = bool(scale_threshold)
        self.noise_correlation = _check_correlation(noise_correlation)
        self.model = load_model(model, 'starfinder',
                                required_keys=_CARD_KEYS)
        card = self.model.card
        self.vetting = None
        if vetting and card.get('vetting'):
            # The vetting model is fitted to this network's heatmap and
            # lives beside it.
            self.vetting = load_model(self.model.path.parent / card['vetting'],
                                      'starfinder', required_keys=_VETTING_KEYS)
            if tuple(self.vetting.card['features']) != FEATURES:
                msg = (f'vetting model {self.vetting.name!r} takes the '
                       f'features {self.vetting.card["features"]}, not '
                       f'the {list(FEATURES)} that this version computes')
                raise ModelError(msg)
            card = self.vetting.card
        # Lowest heatmap value a candidate needs to be measured at all.
        self._raw_floor = (float(card['raw_floor']) if self.vetting
                           else None)
        if min_probability is None:
            min_probability = card.get('default_min_probability', 0.5)
        if not 0.0 <= min_probability <= 1.0:
            msg = 'min_probability must be between 0 and 1'
            raise ValueError(msg)
        self.min_probability = float(min_probability)
        self.device = device
        self.progress = bool(progress)
        self.tile_size = int(tile_size)
        self.n_threads = n_threads
        # Validates the device now; the session itself is created lazily.
        from cnnfind.runtime.session import _providers
        _providers(device)

    def _repr_str_params(self):
        params = ('threshold', 'fwhm', 'ratio', 'theta', 'sigma_radius',
                  'sharpness_range', 'roundness_range', 'exclude_border',
                  'n_brightest', 'peak_max', 'min_separation',
                  'scale_threshold', 'noise_correlation', 'min_probability',
                  'device')
        return params

    def __repr__(self):
        vals = []
        for p in self._repr_str_params():
            v = getattr(self, p)
            if isinstance(v, np.ndarray):
                v = f'<array; shape={v.shape}>'
            vals.append(f'{p}={v!r}')
        return f'<{self.__class__.__name__}({", ".join(vals)}, model={self.model.name!r})>'

    # -- network -----------------------------------------------------------
    def heatmap(self, data, mask=None):
        """
        The network's per-pixel star-centre probability (uncalibrated).

        Parameters
        ----------
        data : 2D array_like
            The image.
        mask : 2D bool array, optional
            `True` for bad pixels.

        Returns
        -------
        heatmap : 2D float32 `~numpy.ndarray`
            Values in [0, 1]; 0 on masked and NaN pixels.
        """
        data, valid, _, sky, noise = self._prepare(data, mask)
        background = _LocalBackground(data, valid, sky, noise, self.fwhm)
        return _sigmoid(self._logits(data, valid, background, noise))

    @staticmethod
    def _prepare(data, mask):
        """Plain data, validity map, unit, sky and noise."""
        data, _, unit, valid, sky, noise = _prepare_image(
            data, mask, 'nothing to search')
        return data, valid, unit, sky, noise

    def _candidates(self, data, mask=None):
        """Heatmap peaks ``(x, y, raw score)`` before any other cut."""
        data, valid, _, sky, noise = self._prepare(data, mask)
        background = _LocalBackground(data, valid, sky, noise, self.fwhm)
        return self._peaks(self._logits(data, valid, background, noise))

    def _logits(self, data, valid, background, noise):
        """
        Network logits, tiled; ``-inf`` on invalid pixels. The network
        sees the image minus the mesh of ``background`` (a
        `_LocalBackground`): gradients and nebulosity on scales above
        the mesh box are gone before it looks for stars.
        """
        card = self.model.card
        norm = card['normalization']
        multiple = int(card['size_multiple'])
        sess = get_session(self.model, device=self.device,
                           n_threads=self.n_threads)
        fwhm_in = np.full((1, 1, 1, 1), np.log(self.fwhm / norm['fwhm_ref']),
                          np.float32)
        names = [i.name for i in sess.get_inputs()]
        n_channels = _input_channels(sess)

        def run_window(window):
            ny, nx = data[window].shape
            py, px = (-ny) % multiple, (-nx) % multiple
            inp = np.zeros((1, n_channels, ny + py, nx + px), np.float32)
            _network_input(data[window], valid[window],
                           background.image(window), noise,
                           norm['asinh_scale'], self.fwhm, n_channels,
                           out=inp[0])
            logits = sess.run(None, {names[0]: inp, names[1]: fwhm_in})[0]
            return logits[0, 0, :ny, :nx]

        logits = run_tiled(data.shape, run_window, tile=self.tile_size,
                           halo=int(card['halo']), multiple=multiple,
                           progress=self.progress, desc='CNNStarFinder')
        logits[~valid] = -np.inf
        return logits

    def _calibration(self):
        """The calibration knots for this finder's FWHM, or `None`."""
        cal = self.model.card.get('calibration')
        if cal and 'bins' in cal:
            # Calibrated per FWHM bin (broad stars peak lower).
            cal = cal['bins'][int(np.searchsorted(cal['fwhm_edges'],
                                                  self.fwhm, side='right'))]
        return cal or None

    def _calibrate(self, raw):
        cal = self._calibration()
        if cal is None:
            return raw
        return np.interp(raw, cal['raw'], cal['probability'])

    @property
    def _fit_radius(self):
        """
        Half-size of the fitting stamps: the PSF core carries the
        centroid information; a larger window only lets neighbours in.
        """
        return max(2, int(np.ceil(self.fwhm)))

    def _refit(self, data, fit_valid, sky, abc, xc, yc, amp):
        """Fit the sources again, each with the others subtracted."""
        radius = self._fit_radius
        others = _neighbour_stamps(data.shape, xc, yc, np.clip(amp, 0, None),
                                   abc, radius)
        xc, yc, amp, _, rel = _fit_sources(data, fit_valid, xc, yc, abc,
                                           radius, sky=sky, others=others,
                                           iters=3)
        return xc, yc, amp, rel

    def _features(self, data, sky, noise, src, subset=None):
        """Vetting features of the candidates ``src`` (see `_sources`),
        or of its ``subset``."""
        return vetting_features(data, src['fit_valid'], sky, noise,
                                self.fwhm, src['abc'], src['x'], src['y'],
                                src['amp'], src['raw'], subset=subset)

    def _vet(self, features):
        """Calibrated vetting probability of each candidate."""
        if len(features) == 0:
            return np.zeros(0)
        sess = get_session(self.vetting, device='cpu',
                           n_threads=self.n_threads)
        score = sess.run(None, {sess.get_inputs()[0].name:
                                features.astype(np.float32)})[0]
        cal = self.vetting.card['calibration']
        return _sigmoid(cal['slope'] * np.ravel(score).astype(float)
                        + cal['intercept'])

    def _peaks(self, logits):
        """Local maxima of the logits that can pass ``min_probability``."""
        cal = self._calibration()
        floor = 0.02
        if self._raw_floor is not None:
            # The vetting stage may keep any candidate above this floor.
            floor = self._raw_floor
        elif cal:
            # Lowest raw score that can reach min_probability.
            ok = np.asarray(cal['probability']) >= self.min_probability
            if ok.any():
                floor = max(floor, float(np.asarray(cal['raw'])[ok][0]) - 1e-6)
        else:
            floor = max(floor, self.min_probability)
        floor = min(floor, 1.0 - 1e-7)
        yy, xx = np.nonzero(logits >= np.log(floor / (1.0 - floor)))
        # Local maxima over 3x3 (edges repeated), tested only where the
        # floor is reached: a full maximum filter costs more than the rest.
        ny, nx = logits.shape
        v = logits[yy, xx]
        peak = np.ones(len(v), bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    peak &= v >= logits[np.clip(yy + dy, 0, ny - 1),
                                        np.clip(xx + dx, 0, nx - 1)]
        yy, xx = yy[peak], xx[peak]
        return xx, yy, _sigmoid(logits[yy, xx])

    def _threshold_at(self, threshold, x, y, rel, shape, background=None):
        """
        The amplitude each source at ``x, y`` must reach. With a
        ``background`` (a `_LocalBackground`), a scalar significance
        threshold follows the local noise: ``5 * std`` asks for 5 local
        sigma where the noise varies over the image (sky gradients,
        nebulosity). A 2D threshold is taken as given. A significance
        threshold includes the background's ``correlation`` factor.
        """
        thr = threshold
        if np.ndim(thr) == 2:
            xi, yi = _centres(x, y, shape)
            thr = np.asarray(thr)[yi, xi]
        elif background is not None and self.scale_threshold:
            thr = thr * background.noise_ratio(x, y)
        if not self.scale_threshold:
            return thr * np.ones_like(rel)
        factor = 1.0 if background is None else background.correlation
        return thr * rel * factor

    def _correlation(self, data, valid, abc):
        """The ``noise_correlation`` factor for this image."""
        if self.noise_correlation is None:
            return 1.0
        if self.noise_correlation == 'auto':
            return correlation_factor(roughness(data, valid), abc,
                                      self._fit_radius)
        return self.noise_correlation

    def _sources(self, data, valid, sky, noise, threshold=None):
        """
        Candidates measured on the data, before the probability cut:
        a dict of fitted positions ``x, y``, amplitudes ``amp`` and their
        relative errors ``rel``, heatmap values ``raw``, saturated-star
        positions ``sat_x, sat_y``, the pixels valid for fitting
        ``fit_valid``, the PSF coefficients ``abc`` and the image's
        ``background`` (a `_LocalBackground`); `None` if there is
        nothing.

        With ``threshold`` (data units), heatmap peaks whose amplitude
        at the start position is far below it are dropped before the
        fits (see ``_START_CUT``).
        """
        background = _LocalBackground(data, valid, sky, noise, self.fwhm)
        logits = self._logits(data, valid, background, noise)
        abc = _ellipse_coeffs((self.kernel.x_sigma, self.kernel.y_sigma),
                              self.theta)
        background.correlation = self._correlation(data, valid, abc)

        if self.xycoords is None:
            px, py, raw = self._peaks(logits)
        else:
            px = np.round(self.xycoords[:, 0]).astype(int)
            py = np.round(self.xycoords[:, 1]).astype(int)
            inside = ((px >= 0) & (px < data.shape[1]) & (py >= 0)
                      & (py < data.shape[0]))
            px, py = px[inside], py[inside]
            # The heatmap's best value within a pixel of each position.
            raw = _sigmoid(_stamps(logits, px, py, 1, 1, fill=-np.inf)
                           .max(axis=(1, 2)))
        if self.xycoords is None and self.vetting is None:
            # Without vetting the heatmap decides: cut before measuring.
            keep = self._calibrate(raw) >= self.min_probability
            px, py, raw = px[keep], py[keep], raw[keep]
        # Sub-pixel start from the heatmap's local quadratic.
        x0, y0 = self._subpixel(logits, px, py)
        sat_x, sat_y, sat_region = (
            _saturated_stars(data, valid, sky, noise, self.fwhm)
            if self.xycoords is None else (np.zeros(0), np.zeros(0), None))
        if sat_region is not None:
            # One detection per saturated star, at its plateau; the
            # network's peaks on its plateau and halo are fragments.
            off = ~sat_region[py, px]
            x0, y0, raw = x0[off], y0[off], raw[off]
        del logits
        if len(x0) == 0 and len(sat_x) == 0:
            return None
        # Saturated pixels carry no shape information: fit the wings.
        fit_valid = valid if sat_region is None else valid & ~sat_region
        if threshold is not None and self.xycoords is None:
            start, start_rel = _start_amplitudes(
                data, fit_valid, x0, y0, abc, self._fit_radius,
                sky=background.mesh(x0, y0)[:, None, None])
            keep = start >= _START_CUT * self._threshold_at(
                threshold, x0, y0, start_rel, data.shape, background)
            x0, y0, raw = x0[keep], y0[keep], raw[keep]
        # Four Gauss-Newton steps suffice from the heatmap's start (six
        # gave the same detections and centroids on seeded fields).
        xc, yc, amp, _, rel = _fit_sources(data, fit_valid, x0, y0, abc,
                                           self._fit_radius, sky=sky, iters=4)
        for _ in range(2):  # refit with the neighbours subtracted
            xc, yc, amp, rel = self._refit(data, fit_valid, sky, abc, xc, yc,
                                           amp)
        keep = self._dedupe(xc, yc, np.argsort(-raw))
        xc, yc, amp, rel, raw = (xc[keep], yc[keep], amp[keep], rel[keep],
                                 raw[keep])
        return {'x': xc, 'y': yc, 'amp': amp, 'rel': rel, 'raw': raw,
                'sat_x': sat_x, 'sat_y': sat_y, 'fit_valid': fit_valid,
                'abc': abc, 'background': background}

    # -- catalogue ---------------------------------------------------------
    def find_stars(self, data, mask=None):
        """
        Find stars in an astronomical image.

        Parameters
        ----------
        data : 2D array_like, `~astropy.units.Quantity` or `~astropy.nddata.NDData`
            The image, background-subtracted as for `DAOStarFinder`
            (a residual constant background is tolerated). A masked
            array's or NDData's mask is used.
        mask : 2D bool array, optional
            `True` for bad pixels. Neither masked nor NaN pixels can host
            a detection, nor do they enter centroids, fluxes or shape
            columns (they are replaced by the fitted source model).

        Returns
        -------
        table : `~astropy.table.QTable` or `None`
            The DAOStarFinder columns (``id, x_centroid, y_centroid,
            sharpness, roundness1, roundness2, n_pixels, peak, flux,
            mag, daofind_mag``) plus ``probability``, the calibrated
            probability that the source is a star, and, when ``data``
            is an `~astropy.nddata.NDData` (e.g. `~astropy.nddata.CCDData`)
            with a celestial WCS, ``sky_centroid`` (a
            `~astropy.coordinates.SkyCoord`, as in photutils'
            ``SourceCatalog``). `None` (with a
            `~photutils.utils.exceptions.NoDetectionsWarning`) if no
            star is found. Unlike `DAOStarFinder`, which drops them, a
            star whose DAOFIND ``sharpness``, ``roundness2`` or
            ``daofind_mag`` is undefined (a saturated flat top, or a
            faint star on which DAOFIND's small kernel sees no peak) is
            kept with NaN in those columns; select
            ``np.isfinite(table['daofind_mag'])`` for DAOStarFinder's
            rule.

        Warns
        -----
        CNNFindWarning
            If ``data`` is an `~astropy.nddata.NDData` whose ``meta``
            ``HISTORY`` says it was denoised by `~cnnfind.N2VDenoiser`:
            the network was trained on raw images, run it on the raw
            image.

        Raises
        ------
        ValueError
            For non-2D data, a mask of the wrong shape, an image with no
            valid pixel or of zero noise, or mismatched units.
        """
        original = data
        if isinstance(data, NDData):
            _warn_if_denoised(data.meta)
        data, valid, unit, sky, noise = self._prepare(data, mask)
        threshold = _strip_unit(self.threshold, unit, 'threshold')
        peak_max = _strip_unit(self.peak_max, unit, 'peak_max')
        if np.ndim(threshold) == 2 and np.shape(threshold) != data.shape:
            msg = 'a 2D threshold must have the same shape as the data'
            raise ValueError(msg)
        src = self._sources(data, valid, sky, noise, threshold)
        if src is None:
            return _none_found()
        xc, yc, amp, rel, raw, sat_x, sat_y, fit_valid, abc = (
            src[k] for k in ('x', 'y', 'amp', 'rel', 'raw', 'sat_x',
                             'sat_y', 'fit_valid', 'abc'))
        if self.vetting is not None:
            if self.xycoords is None:
                # Only candidates that may pass the threshold are vetted.
                near = amp >= _VET_CUT * self._threshold_at(
                    threshold, xc, yc, rel, data.shape, src['background'])
                prob = np.zeros(len(xc))
                prob[near] = self._vet(self._features(data, sky, noise, src,
                                                      subset=near))
                keep = near & (prob >= self.min_probability)
                xc, yc, amp, rel, prob = (xc[keep], yc[keep], amp[keep],
                                          rel[keep], prob[keep])
                # Refit without the rejected candidates as neighbours.
                xc, yc, amp, rel = self._refit(data, fit_valid, sky, abc,
                                               xc, yc, amp)
            else:
                prob = self._vet(self._features(data, sky, noise, src))
        else:
            prob = self._calibrate(raw)
        if len(sat_x):
            # Saturated stars pass any threshold; centroid of the plateau.
            # A plateau this far above the sky is a source for certain;
            # this is not a network decision, so it is not calibrated.
            # Their fragments were removed before the fit, so only the
            # separation rule may merge a detection into one.
            xc, yc = np.concatenate([sat_x, xc]), np.concatenate([sat_y, yc])
            amp = np.concatenate([np.full(len(sat_x), np.inf), amp])
            rel = np.concatenate([np.ones(len(sat_x)), rel])
            prob = np.concatenate([np.ones(len(sat_x)), prob])
            keep = self._dedupe(xc, yc, np.argsort(-prob, kind='stable'))
            xc, yc, amp, rel, prob = (xc[keep], yc[keep], amp[keep],
                                      rel[keep], prob[keep])

        # Threshold on the matched-filter amplitude, with the local
        # background known (see `_detection_amplitudes`).
        det_amp, rel = _detection_amplitudes(
            data, fit_valid, xc, yc, amp, abc, self._fit_radius,
            src['background'](xc, yc))
        det_amp[np.isinf(amp)] = np.inf
        xi, yi = _centres(xc, yc, data.shape)
        thr_eff = self._threshold_at(threshold, xc, yc, rel, data.shape,
                                     src['background'])
        # No detection may be centred on a masked or NaN pixel.
        good = (~np.isnan(det_amp) & (det_amp >= thr_eff) & (det_amp > 0)
                & valid[yi, xi])
        xc, yc, xi, yi = xc[good], yc[good], xi[good], yi[good]
        amp, prob = amp[good], prob[good]
        if len(xc) == 0:
            return _none_found()

        # DAOFIND columns on data whose bad pixels hold the fitted model.
        model = _render_models(data.shape, xc, yc,
                               np.where(np.isfinite(amp), amp, 0.0), abc,
                               self._fit_radius)
        model += sky
        cols = _dao_columns(data, valid, model, xi, yi, self.kernel)
        # DAOFIND's threshold scaling, for daofind_mag.
        dao_thr = self._threshold_at(threshold, xc, yc, self.kernel.rel_err,
                                     data.shape)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            cols['daofind_mag'] = -2.5 * np.log10(cols['conv_peak'] / dao_thr)
        cols['saturated'] = np.isinf(amp)

        cat = _CNNStarFinderCatalog(
            xc, yc, prob, cols, n_pixels=self.kernel.data.size, unit=unit,
            kernel=self.kernel)
        cat = cat.select(self._filters(cat, data.shape, peak_max))
        if len(cat) == 0:
            return _none_found()
        if self.n_brightest is not None:
            cat = cat.select(np.argsort(-cat.flux_value)[:self.n_brightest])
        table = cat.to_table()
        table.meta['noise_correlation'] = float(src['background'].correlation)
        return _add_sky_centroid(table, original)

    @staticmethod
    def _subpixel(heat, px, py):
        ny, nx = heat.shape
        xm, xp = np.clip(px - 1, 0, nx - 1), np.clip(px + 1, 0, nx - 1)
        ym, yp = np.clip(py - 1, 0, ny - 1), np.clip(py + 1, 0, ny - 1)
        c = heat[py, px]
        with np.errstate(divide='ignore', invalid='ignore'):
            dx = 0.5 * (heat[py, xm] - heat[py, xp]) / (
                heat[py, xm] - 2 * c + heat[py, xp])
            dy = 0.5 * (heat[ym, px] - heat[yp, px]) / (
                heat[ym, px] - 2 * c + heat[yp, px])
        dx = np.where(np.isfinite(dx), np.clip(dx, -0.5, 0.5), 0.0)
        dy = np.where(np.isfinite(dy), np.clip(dy, -0.5, 0.5), 0.0)
        return px + dx, py + dy

    def _dedupe(self, xc, yc, order):
        """Merge detections that converged on the same star."""
        from scipy.spatial import cKDTree
        sep = max(1.0, 0.5 * self.fwhm)
        if self.min_separation:
            sep = max(sep, self.min_separation)
        n = len(xc)
        pairs = cKDTree(np.column_stack([xc, yc])).query_pairs(
            sep, output_type='ndarray')
        keep = np.ones(n, bool)
        if len(pairs) == 0:
            return np.arange(n)
        # Greedy in ``order``: a source is dropped if an earlier kept one
        # lies within ``sep``. Only sources with a close pair can be.
        both = np.concatenate([pairs, pairs[:, ::-1]])
        both = both[np.argsort(both[:, 0], kind='stable')]
        starts = np.searchsorted(both[:, 0], np.arange(n + 1))
        involved = np.zeros(n, bool)
        involved[both[:, 0]] = True
        taken = np.zeros(n, bool)
        for i in np.asarray(order)[involved[order]]:
            if taken[i]:
                keep[i] = False
                continue
            taken[both[starts[i]:starts[i + 1], 1]] = True
        return np.flatnonzero(keep)

    def _filters(self, cat, shape, peak_max):
        ok = np.ones(len(cat), bool)
        v = cat.values
        # Positions, brightness and the probability must be finite.
        # DAOFIND's shape statistics and ``daofind_mag`` need not: they
        # are undefined where its small kernel sees no peak (faint or
        # crowded stars) or a flat top (saturated stars), and such a
        # source is kept with NaN there -- the network and the vetting
        # stage decide what is a star, not DAOFIND's statistic.
        for name in ('x_centroid', 'y_centroid', 'roundness1', 'peak',
                     'flux', 'probability'):
            ok &= np.isfinite(v[name])
        if self.sharpness_range is not None:
            s = cat.values['sharpness']
            ok &= (s >= self.sharpness_range[0]) & (s <= self.sharpness_range[1])
        if self.roundness_range is not None:
            for name in ('roundness1', 'roundness2'):
                r = cat.values[name]
                ok &= (r >= self.roundness_range[0]) & (
                    r <= self.roundness_range[1])
        if peak_max is not None:
            ok &= cat.values['peak'] <= peak_max
        if self.exclude_border:
            ry, rx = self.kernel.shape[0] // 2, self.kernel.shape[1] // 2
            x, y = cat.values['x_centroid'], cat.values['y_centroid']
            ok &= ((x >= rx) & (x <= shape[1] - 1 - rx) & (y >= ry)
                   & (y <= shape[0] - 1 - ry))
        return np.flatnonzero(ok)
