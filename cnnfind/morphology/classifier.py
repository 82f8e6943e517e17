"""
GalaxyMorphClassifier: elliptical / spiral / no-galaxy from cutouts or
from sources of a field image.
"""

import warnings

import astropy.units as u
import numpy as np
from astropy.nddata import NDData
from astropy.table import QTable
from astropy.utils.masked import Masked

from cnnfind._compat import SOURCEFINDER_QUIET
from cnnfind._wcs import _add_sky_centroid
from cnnfind.exceptions import CNNFindWarning
from cnnfind.morphology._positions import positions_xy
from cnnfind.morphology._prepare import (
    _as_bands,
    _auto_stretch,
    _prepare_cutouts,
    _stretch_linear,
    _to_network_input,
    check_stretch,
)
from cnnfind.morphology._stamps import (
    cut_stamp,
    display_grey,
    framed_side,
    segment_display,
)
from cnnfind.runtime.normalize import check_mask_shape, robust_sky_noise
from cnnfind.runtime.registry import load_model
from cnnfind.runtime.session import get_session
from cnnfind.runtime.tiling import _progress_bar

__all__ = ['GalaxyMorphClassifier']

_CARD_KEYS = ('classes', 'input_size', 'crop', 'stamp_scale')


#: A source whose network view has more than this fraction of its core
#: (`~cnnfind.morphology._prepare._core_fraction`: the central disc
#: of radius an eighth of the view's side) invalid is warned about. On
#: 200 Galaxy Zoo test cutouts a NaN disc at the centre covering 8 % of
#: the core changed no label with a top probability >= 0.9 (8 % of all
#: labels, the uncertain ones), 16 % of it 0.7 % (10.5 %), 36 % of it
#: 9.5 % (17 %), 64 % of it 27 % (30.5 %); the same area away from the
#: core changed none of the confident labels (see docs/morphology.rst).
_CORE_WARN_FRACTION = 0.1


def _unwrap(data):
    """
    Plain array and the data's own mask (`None` if nothing is masked)
    from an ndarray, Quantity, `numpy.ma.MaskedArray`, astropy
    `~astropy.utils.masked.Masked` array or NDData. The mask has the
    shape of the array, or the NDData's mask shape where only it is set.
    """
    masks = []
    if isinstance(data, NDData):
        if data.mask is not None:
            masks.append(np.asarray(data.mask, bool))
        data = data.data
    if isinstance(data, Masked):
        masks.append(np.asarray(data.mask, bool))
        data = data.unmasked
    if isinstance(data, u.Quantity):
        data = data.value
    if isinstance(data, np.ma.MaskedArray):
        masks.append(np.ma.getmaskarray(data))
        data = data.filled(np.nan) if data.dtype.kind == 'f' else data.data
    data = np.asarray(data)
    if not masks:
        return data, None
    mask = masks[0]
    for other in masks[1:]:
        mask = mask | check_mask_shape(other, mask.shape)
    return data, (mask if mask.any() else None)


def _field_mask(own, mask, shape):
    """
    The bad-pixel mask ``(H, W)`` of a field image of ``shape`` from the
    data's own mask (per band for a colour image: a pixel masked in
    any band is bad) and the ``mask`` argument; `None` if neither.
    """
    if own is not None and len(shape) == 3 and own.shape == shape:
        own = own.any(axis=-1)
    masks = [check_mask_shape(m, shape[:2]).astype(bool)
             for m in (own, mask) if m is not None]
    if not masks:
        return None
    return masks[0] if len(masks) == 1 else masks[0] | masks[1]


def _check_field_shape(arr):
    """A clear `ValueError` unless ``arr`` is a 2D or colour image."""
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        msg = ('a field image must be 2D (H, W) or colour (H, W, 3), '
               f'not shape {arr.shape}')
        raise ValueError(msg)


class GalaxyMorphClassifier:
    """
    Classify galaxies as elliptical or spiral, and tell them from stars
    and empty sky, with a convolutional network.

    The bundled model was trained on Galaxy Zoo 1 SDSS colour cutouts
    (elliptical vs. spiral) and on stars and empty sky cut from real
    colour and single-band frames (no galaxy). One model handles both
    colour composites and single-band data: single-band images are
    shown to it in grey, which it also saw in training.

    Parameters
    ----------
    model : str, path-like or `None`, optional
        A bundled model name, the path of an ``.onnx`` file, or `None`
        for the bundled ``'galaxymorph'`` model.
    device : {'auto', 'cpu', 'cuda'}, optional
        Where to run the network.
    stretch : {'auto', 'none', 'asinh'}, optional
        How pixel values become display values. ``'none'``: they
        already are (uint8 0-255, uint16 0-65535, or float 0-1, as in
        JPEG or PNG cutouts; integers are divided by the maximum of
        their dtype); ``'asinh'``: linear data (FITS), display-scaled
        band by band from the robust sky and noise; ``'auto'``
        (default): ``'none'`` for uint8 data, ``'asinh'`` for float
        and signed integer data (FITS integer images, e.g. int16 or
        int32 counts), and for wider unsigned integers (uint16 PNG or
        unsigned FITS counts) ``'none'`` only if their sky noise is at
        least half a grey level of an 8-bit display (0.5/255 of the
        dtype's maximum). Ambiguous integer data (signed values all
        within 0-255, or unsigned data with a noise between a quarter
        and half such a grey level) are taken as linear data with a
        `~cnnfind.CNNFindWarning`; pass ``'none'`` or ``'asinh'`` to
        choose.
    max_masked_fraction : float, optional
        Sources with more than this fraction of invalid (masked, NaN or
        off-image) pixels in the network's view of their stamp get NaN
        probabilities and the label ``'masked'``.
    tta : bool, optional
        Test-time augmentation: average the probabilities over the
        eight rotations and flips of each stamp (eight times slower).
    batch_size : int, optional
        Cutouts per network call (bounds the memory).
    n_threads : int or `None`, optional
        onnxruntime intra-op threads.
    progress : bool, optional
        Show a progress bar over batches.

    Examples
    --------
    Two synthetic cutouts, a round smooth blob and empty sky:

    >>> import numpy as np
    >>> from cnnfind import GalaxyMorphClassifier
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:128, :128] - 63.5
    >>> blob = 5000 * np.exp(-np.hypot(xx, yy / 0.7) / 6)
    >>> cutouts = rng.normal(0, 10, (2, 128, 128)) + [blob, 0 * blob]
    >>> tbl = GalaxyMorphClassifier()(cutouts)
    >>> tbl.colnames
    ['id', 'p_elliptical', 'p_spiral', 'p_no_galaxy', 'label', 'masked_fraction']
    >>> str(tbl['label'][1])
    'no_galaxy'
    """

    def __init__(self, model=None, device='auto', *, stretch='auto',
                 max_masked_fraction=0.5, tta=False, batch_size=256,
                 n_threads=None, progress=False):
        self.model = load_model(model, 'galaxymorph',
                                required_keys=_CARD_KEYS)
        self.device = device
        self.stretch = check_stretch(stretch)
        if not 0 <= max_masked_fraction <= 1:
            msg = 'max_masked_fraction must be within [0, 1]'
            raise ValueError(msg)
        self.max_masked_fraction = float(max_masked_fraction)
        self.tta = bool(tta)
        if int(batch_size) < 1:
            msg = 'batch_size must be a positive integer'
            raise ValueError(msg)
        self.batch_size = int(batch_size)
        self.n_threads = n_threads
        self.progress = progress
        card = self.model.card
        self.classes = tuple(card['classes'])
        self._size = int(card['input_size'])
        self._crop = float(card['crop'])
        self._stamp_scale = float(card['stamp_scale'])

    def __repr__(self):
        return (f'<{type(self).__name__}(model={self.model.name!r}, '
                f'device={self.device!r}, stretch={self.stretch!r})>')

    def __call__(self, data, mask=None, positions=None):
        """
        Classify cutouts, or sources of a field image.

        Parameters
        ----------
        data : array-like, `~astropy.units.Quantity` or `~astropy.nddata.NDData`
            Either a stack of cutouts centred on the objects, ``(N, H,
            W)`` single-band or ``(N, H, W, 3)`` colour, framed like
            Galaxy Zoo cutouts (the galaxy's Petrosian 90 % radius about
            a fifth of the side; a non-square cutout is framed by its
            longer side, the missing part counting as masked), when
            ``positions`` is `None`; or a
            field image, ``(H, W)`` or ``(H, W, 3)``, when ``positions``
            is given. A 2D image without positions is a field whose
            sources are found by image segmentation. The mask of a
            `numpy.ma.MaskedArray`, an astropy
            `~astropy.utils.masked.Masked` array or an NDData (cutouts
            too) marks invalid pixels, like NaN; for colour data a
            pixel masked in one band is invalid.
        mask : bool array-like, optional
            `True` for bad pixels (field images only; mask cutouts with
            NaN or pass them as a masked array).
        positions : `~astropy.table.Table` or ``(N, 2)`` array-like, optional
            Source positions: a finder's table (``x_centroid`` /
            ``y_centroid``, or the older ``xcentroid`` / ``ycentroid``)
            or ``(x, y)`` pairs, 0-based pixels.

        Returns
        -------
        table : `~astropy.table.QTable`
            ``id``, the positions (field mode), ``p_elliptical``,
            ``p_spiral``, ``p_no_galaxy`` (summing to 1), ``label``,
            ``masked_fraction`` and, in field mode, the stamp side used
            (``stamp_size``) and, for an `~astropy.nddata.NDData` field
            with a celestial WCS, ``sky_centroid``. ``masked_fraction``
            is the fraction of invalid (masked, NaN or off-image) pixels
            in the network's view (the central half of the stamp); they
            are shown to the network at the sky level.

        Warns
        -----
        CNNFindWarning
            When sources have more than ``max_masked_fraction`` of the
            view invalid (their probabilities are set to NaN and their
            label to ``'masked'``), and when others have more than 10 %
            of the *core* of the view invalid: the central disc of
            radius an eighth of the view's side (about the half-light
            radius of a galaxy framed like a Galaxy Zoo cutout). The
            network then sees a hole in the galaxy, and its labels are
            unreliable: on Galaxy Zoo test cutouts a NaN disc at the
            centre covering 16 % of the core (0.8 % of the view) changed
            10.5 % of the labels, one covering 64 % of it 30.5 %, while
            the same area away from the core changed at most 4 % (the
            uncertain ones). The warning gives the number of such
            sources; their probabilities are kept.
        """
        arr, own_mask = _unwrap(data)
        if (positions is None and arr.ndim == 3 and arr.shape[-1] == 3
                and min(arr.shape[1:]) < 8):
            msg = (f'data of shape {arr.shape} look like a colour field '
                   'image (H, W, 3), not a stack of cutouts: pass '
                   'positions= to classify its sources (sources are '
                   'searched for only in 2D images)')
            raise ValueError(msg)
        if positions is None and arr.ndim != 2:
            if mask is not None:
                msg = ('mask is only used with a field image; mask the '
                       'cutouts with NaN or pass a masked array instead')
                raise ValueError(msg)
            x, masked, core = _prepare_cutouts(
                arr, stretch=self.stretch, crop=self._crop, size=self._size,
                mask=own_mask)
            return self._table(self._predict(x), masked, core=core)
        _check_field_shape(arr)
        mask = _field_mask(own_mask, mask, arr.shape)
        xy = None if positions is None else positions_xy(positions)
        disp = self._field_display(arr, mask)
        if xy is None:
            xy = self._detect(arr, disp)
            if xy is None:
                return None
        return _add_sky_centroid(self._classify_field(disp, xy), data)

    def _field_display(self, arr, mask):
        """Display-scaled field ``(H, W, C)`` with NaN where invalid."""
        _check_field_shape(arr)
        if arr.dtype.kind not in 'uif' or arr.dtype == bool:
            msg = f'data must be numeric, not {arr.dtype}'
            raise TypeError(msg)
        bands = _as_bands(arr)
        valid = np.isfinite(bands).all(axis=-1)
        if mask is not None:
            valid &= ~check_mask_shape(mask, arr.shape[:2]).astype(bool)
        if not valid.any():
            msg = 'the image has no valid (finite, unmasked) pixels'
            raise ValueError(msg)
        stretch = self.stretch
        if stretch == 'auto':
            stretch = _auto_stretch(arr, colour=arr.ndim == 3, valid=valid,
                                   what='image values')
        if stretch == 'none':
            disp = bands.astype(np.float32)
            if arr.dtype.kind in 'ui':
                disp /= np.float32(np.iinfo(arr.dtype).max)
        else:
            sky_noise = [robust_sky_noise(bands[..., c], valid)
                         for c in range(bands.shape[-1])]
            disp = _stretch_linear(bands, sky_noise)
        disp[~valid] = np.nan
        return disp

    def _classify_field(self, disp, xy):
        ny, nx = disp.shape[:2]
        outside = ((xy[:, 0] < -0.5) | (xy[:, 0] > nx - 0.5)
                   | (xy[:, 1] < -0.5) | (xy[:, 1] > ny - 0.5)
                   | ~np.isfinite(xy).all(axis=1))
        if outside.any():
            msg = (f'{outside.sum()} position(s) lie outside the '
                   f'{ny}x{nx} image, e.g. {xy[outside][0].tolist()}')
            raise ValueError(msg)
        grey = display_grey(disp)
        segments = segment_display(grey)
        x = np.empty((len(xy), 3, self._size, self._size), np.float32)
        masked = np.empty(len(xy))
        core = np.empty(len(xy))
        sides = np.empty(len(xy))
        for i, (px, py) in enumerate(xy):
            sides[i] = framed_side(grey, px, py, self._stamp_scale,
                                   segments=segments)
            stamp = cut_stamp(disp, px, py, sides[i])
            x[i], masked[i], core[i] = _to_network_input(
                stamp, crop=self._crop, size=self._size)
        tbl = self._table(self._predict(x), masked, xy, core=core)
        tbl['stamp_size'] = np.round(sides).astype(int) * u.pix
        return tbl

    def _detect(self, arr, disp):
        """
        Centroids of the sources of a 2D image (segmentation); ``disp``
        is its display image from `_field_display` (NaN where invalid).
        """
        from photutils.segmentation import SourceCatalog, SourceFinder
        valid = np.isfinite(disp[..., 0])
        data = np.where(valid, arr, np.nan).astype(np.float32)
        sky, noise = robust_sky_noise(data, valid)
        sub = np.where(valid, data - sky, 0.0)
        finder = SourceFinder(n_pixels=10, **SOURCEFINDER_QUIET)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            segm = finder(sub, 3.0 * noise, mask=~valid)
        if segm is None:
            from photutils.utils.exceptions import NoDetectionsWarning
            warnings.warn('No sources were found.', NoDetectionsWarning,
                          stacklevel=3)
            return None
        cat = SourceCatalog(sub, segm, mask=~valid)
        return np.column_stack([cat.x_centroid, cat.y_centroid])

    def _predict(self, x):
        """Class probabilities of network inputs, batch by batch."""
        session = get_session(self.model, device=self.device,
                              n_threads=self.n_threads)
        name = session.get_inputs()[0].name
        out = np.empty((len(x), len(self.classes)), np.float32)
        starts = range(0, len(x), self.batch_size)
        bar = _progress_bar(len(starts), self.progress, 'cutouts')
        for s in starts:
            batch = x[s:s + self.batch_size]
            if self.tta:
                views = [np.rot90(v, k, axes=(2, 3))
                         for v in (batch, batch[..., ::-1]) for k in range(4)]
                prob = [session.run(None, {name: np.ascontiguousarray(v)})[0]
                        for v in views]
                out[s:s + self.batch_size] = np.mean(prob, axis=0)
            else:
                out[s:s + self.batch_size] = session.run(None,
                                                         {name: batch})[0]
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return out

    def _table(self, prob, masked, xy=None, *, core=None):
        prob = prob.astype(float)
        bad = masked > self.max_masked_fraction
        labels = np.array(self.classes, dtype=object)[prob.argmax(axis=1)]
        if bad.any():
            warnings.warn(f'{bad.sum()} source(s) have more than '
                          f'{self.max_masked_fraction:.0%} of the '
                          'network\'s view masked: probabilities set to NaN, label '
                          "'masked'", CNNFindWarning, stacklevel=3)
            prob[bad] = np.nan
            labels[bad] = 'masked'
        if core is not None:
            hollow = (core > _CORE_WARN_FRACTION) & ~bad
            if hollow.any():
                warnings.warn(
                    f'{hollow.sum()} source(s) have more than '
                    f'{_CORE_WARN_FRACTION:.0%} of the core of the '
                    "network's view (the central disc of radius an eighth "
                    'of its side) masked, NaN or off the image: the '
                    'network sees a hole at their centre, and their '
                    'probabilities and labels are unreliable',
                    CNNFindWarning, stacklevel=3)
        tbl = QTable()
        tbl['id'] = np.arange(1, len(prob) + 1)
        if xy is not None:
            tbl['x_centroid'] = xy[:, 0]
            tbl['y_centroid'] = xy[:, 1]
        for k, name in enumerate(self.classes):
            tbl[f'p_{name}'] = prob[:, k]
        tbl['label'] = labels.astype(str)
        tbl['masked_fraction'] = masked
        return tbl
