# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""What the viewer shows: one image, its heatmap and its catalogues."""

import os
import threading
import warnings

import numpy as np

from cnnfind.detection.finder import CNNStarFinder, _sigmoid
from cnnfind.exceptions import CNNFindWarning

__all__ = ['ViewerState']


class _MemoFinder(CNNStarFinder):
    """
    A `~cnnfind.CNNStarFinder` that runs the network once.

    The viewer asks for the catalogue of one image at many
    ``min_probability`` values; only the cuts and the fits after the
    network depend on it, so the logits of the first call are kept and
    reused (the image never changes).
    """

    _memo = None

    def _logits(self, data, valid, background, noise):
        if self._memo is None:
            self._memo = super()._logits(data, valid, background, noise)
        return self._memo.copy()


def _estimate_fwhm(data, mask):
    """The PSF FWHM as `~cnnfind.psfstars.PSFStarSelector` estimates it.

    Returns the FWHM and a note when the estimate failed (too few bright
    isolated stars; the fallback value is then used).
    """
    from cnnfind.detection.finder import _unpack_data
    from cnnfind.psfstars import PSFStarSelector
    from cnnfind.runtime.normalize import robust_sky_noise, valid_pixel_mask

    data, mask, _ = _unpack_data(data, mask)
    valid = valid_pixel_mask(data, mask)
    sky, noise = robust_sky_noise(data, valid)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', CNNFindWarning)
        fwhm = PSFStarSelector()._estimate_fwhm(data, mask, valid, sky, noise)
    notes = [str(w.message) for w in caught
             if issubclass(w.category, CNNFindWarning)]
    return float(fwhm), (notes[0] if notes else None)


class ViewerState:
    """
    An image prepared for the viewer.

    The background is removed and the threshold set as ``cnnfind find``
    does (`cnnfind.cli.background_level`), so the catalogue
    written for a ``min_probability`` equals ``cnnfind find
    --threshold-sigma K --min-probability P`` on the same file.

    Parameters
    ----------
    data : 2D `~numpy.ndarray`
        The image (not background-subtracted).
    mask : 2D bool `~numpy.ndarray` or `None`
        `True` for bad pixels.
    fwhm : float or `None`
        PSF FWHM in pixels; `None` estimates it from the data (see
        `~cnnfind.psfstars.PSFStarSelector`).
    threshold_sigma : float
        Detection threshold in units of the background standard
        deviation.
    name : str
        What the page calls the image.
    out : str
        The ECSV file that `save` writes.
    meta : dict, optional
        Extra metadata for the written catalogue.
    wcs : `~astropy.wcs.WCS` or `None`
        Celestial WCS; the catalogue then gets ``ra``/``dec`` columns.
    **finder_kwargs
        Passed on to `~cnnfind.CNNStarFinder` (``model``, ``device``...).

    Examples
    --------
    >>> from cnnfind.simulation import make_scenario
    >>> sim = make_scenario('sparse', shape=(96, 96), seed=1)
    >>> state = ViewerState(sim['image'], None, fwhm=sim['fwhm'],
    ...                     threshold_sigma=3.0)
    >>> tab = state.catalogue(0.3)
    >>> bool(np.all(tab['probability'] >= 0.3))
    True
    """

    #: ``min_probability`` of the candidates whose histogram is shown.
    LOW_CUT = 0.0

    def __init__(self, data, mask=None, *, fwhm=None, threshold_sigma=5.0,
                 name='image', out='catalogue.ecsv', meta=None, wcs=None,
                 **finder_kwargs):
        from cnnfind.cli import background_level

        data = np.asarray(data, dtype=float)
        if data.ndim != 2:
            msg = f'data must be a 2D image, got shape {data.shape}'
            raise ValueError(msg)
        if not np.isfinite(threshold_sigma) or threshold_sigma < 0:
            msg = f'threshold_sigma must be >= 0, not {threshold_sigma!r}'
            raise ValueError(msg)
        median, std = background_level(data, mask)
        self.image = data
        self.mask = mask
        self.data = data - median
        self.background = float(median)
        self.background_std = float(std)
        self.threshold_sigma = float(threshold_sigma)
        self.threshold = float(threshold_sigma * std)
        self.fwhm_note = None
        self.fwhm_estimated = fwhm is None
        if fwhm is None:
            fwhm, self.fwhm_note = _estimate_fwhm(data, mask)
        if not np.isfinite(fwhm) or fwhm <= 0:
            msg = f'fwhm must be a positive number, not {fwhm!r}'
            raise ValueError(msg)
        self.fwhm = float(fwhm)
        self.name = name
        self.out = os.path.abspath(out)
        self.meta = dict(meta or {})
        self.wcs = wcs
        self.finder_kwargs = finder_kwargs
        self._lock = threading.Lock()
        self._tables = {}
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', CNNFindWarning)
            self._finder = _MemoFinder(self.threshold, self.fwhm,
                                       **finder_kwargs)
        self.default_min_probability = float(self._finder.min_probability)
        self.candidates = self.catalogue(self.LOW_CUT)

    # -- products -----------------------------------------------------------
    def heatmap(self):
        """The network's heatmap, as `~cnnfind.CNNStarFinder.heatmap`."""
        if self._finder._memo is None:
            self.catalogue(self.LOW_CUT)
        return _sigmoid(self._finder._memo)

    def catalogue(self, min_probability):
        """
        The `~cnnfind.CNNStarFinder` table at ``min_probability``.

        Exactly what a new finder with that ``min_probability`` returns
        (an empty table instead of `None`); the network runs only once.
        """
        from photutils.utils.exceptions import NoDetectionsWarning

        p = float(min_probability)
        if not 0.0 <= p <= 1.0:
            msg = f'min_probability must be between 0 and 1, not {p!r}'
            raise ValueError(msg)
        key = round(p, 6)
        with self._lock:
            if key not in self._tables:
                self._finder.min_probability = p
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore', NoDetectionsWarning)
                    table = self._finder(self.data, mask=self.mask)
                if table is None:
                    from cnnfind.cli import _empty_table
                    table = _empty_table()
                self._tables[key] = table
            return self._tables[key].copy()

    def detections(self, min_probability):
        """``{'count', 'x', 'y', 'probability'}`` lists for the page."""
        tab = self.catalogue(min_probability)
        cols = {}
        for name in ('x_centroid', 'y_centroid', 'probability'):
            col = np.asarray(getattr(tab[name], 'value', tab[name]), float)
            cols[name] = [round(float(v), 3) for v in col]
        return {'min_probability': float(min_probability), 'count': len(tab),
                'x': cols['x_centroid'], 'y': cols['y_centroid'],
                'probability': cols['probability']}

    def info(self):
        """What the page shows about the image and the settings."""
        ny, nx = self.image.shape
        return {'name': self.name, 'nx': nx, 'ny': ny, 'fwhm': self.fwhm,
                'fwhm_estimated': self.fwhm_estimated,
                'fwhm_note': self.fwhm_note,
                'threshold_sigma': self.threshold_sigma,
                'threshold': self.threshold,
                'background': self.background,
                'background_std': self.background_std,
                'default_min_probability': self.default_min_probability,
                'low_cut': self.LOW_CUT, 'out': self.out,
                'model': self._finder.model.name,
                'candidates': self.detections(self.LOW_CUT)}

    def save(self, min_probability):
        """
        Write the catalogue at ``min_probability`` to ``self.out`` (ECSV,
        overwritten) and return ``(path, n_rows)``.
        """
        tab = self.catalogue(min_probability)
        if self.wcs is not None:
            from cnnfind.cli import add_sky_columns
            add_sky_columns(tab, self.wcs)
        tab.meta.update(self.meta)
        tab.meta.update({
            'fwhm': self.fwhm, 'fwhm_estimated': self.fwhm_estimated,
            'threshold_sigma': self.threshold_sigma,
            'threshold': self.threshold,
            'background_median': self.background,
            'background_std': self.background_std,
            'min_probability': float(min_probability),
            'model': self._finder.model.name,
        })
        os.makedirs(os.path.dirname(self.out) or '.', exist_ok=True)
        tab.write(self.out, format='ascii.ecsv', overwrite=True)
        return self.out, len(tab)
