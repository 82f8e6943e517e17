# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
PSFStarSelector: pick bright, round, isolated, unsaturated stars for
PSF modelling, ready for `~photutils.psf.EPSFBuilder`.
"""

import warnings

import numpy as np
from astropy.nddata import NDData
from astropy.table import QTable, Table
from photutils.utils.exceptions import NoDetectionsWarning

from cnnfind._columns import _candidate_xy
from cnnfind._validation import (
    _check_number,
    _positive_int_or_none,
    _real_scalar,
)
from cnnfind._wcs import _add_sky_centroid
from cnnfind.detection.finder import _prepare_image
from cnnfind.detection.finder import _unpack_data as _unpack
from cnnfind.exceptions import CNNFindWarning
from cnnfind.psfstars._features import (
    STAMP,
    _aperture_fwhm,
    _blend_statistics,
    _pileup_level,
    _prepare_candidates,
    _stellar_fwhm,
    _subtract_local_sky,
)
from cnnfind.runtime.normalize import valid_pixel_mask
from cnnfind.runtime.registry import load_model
from cnnfind.runtime.session import _providers, get_session

__all__ = ['PSFStarSelector']

_CARD_KEYS = ('stamp_size', 'default_min_score', 'normalization')

#: Readable rejection reasons, in the order they are tested.
REASONS = ('near edge or mask', 'saturated', 'too faint',
           'neighbour within {n} FWHM', 'cosmic ray / hot pixel',
           'cosmic ray / hot pixel', 'not point-like / extended',
           'other light in box', 'odd shape',
           'unresolved blend / double star')
#: The ``reason`` of a selected star. Not an empty string: astropy's
#: ECSV, CSV and FITS readers take empty strings for missing values, and
#: the column of a written table would read back masked.
SELECTED = 'selected'

#: A pixel outside the core that differs from the reference stamp by
#: more than this fraction of the peak, and by more than
#: ``_OUTLIER_SIGMA`` times the noise, rejects the star.
_OUTLIER_FRACTION = 0.1
_OUTLIER_SIGMA = 5.0
#: When the bright stars' peaks pile up (soft saturation, see
#: ``_pileup_level``), peaks above this fraction of the pile-up level
#: are taken as saturated.
_PILEUP_FRACTION = 0.8
#: A star whose second moments exceed the local PSF's with a
#: significance (chi-square, 3 degrees of freedom) above this, and that
#: is broader than the PSF, is taken as an unresolved blend (see
#: ``_blend_statistics``).
_BLEND_CHI2 = 20.0


def _sigmoid(x):
    with np.errstate(over='ignore'):
        return 1.0 / (1.0 + np.exp(-x))


def _cutout_size(size, box=None, *, minimum=1):
    """
    ``size`` as an odd int of at least ``minimum`` and at most ``box``,
    else a `ValueError`.
    """
    value = _real_scalar(size)
    if not (np.isfinite(value) and value.is_integer() and value >= minimum
            and int(value) % 2 == 1):
        what = ('an odd positive integer' if minimum <= 1
                else f'an odd integer >= {minimum}')
        msg = f'size must be {what}, not {size!r}'
        raise ValueError(msg)
    if box is not None and value > box:
        msg = (f'size={int(value)} is larger than the selector\'s size '
               f'({box}), the box within which the stars are checked for '
               'edges, masked pixels and other light; use '
               f'PSFStarSelector(size={int(value)}) for larger cutouts')
        raise ValueError(msg)
    return int(value)


#: First FWHM guesses (pixels) of the FWHM estimate, tried in turn.
_FWHM_STARTS = (3.0, 6.0, 9.0)


class PSFStarSelector:
    """
    Select the stars of an image that make the best PSF model.

    Candidates come from `~cnnfind.CNNStarFinder` (or from a table the
    caller passes). Each one is cut out and measured, and readable rules
    reject what is clearly unusable: a box that runs off the image or
    holds masked / NaN pixels, a saturated core, too low a
    signal-to-noise ratio, a comparably bright neighbour within
    ``isolation`` FWHM. A small CNN then scores every candidate as a
    good PSF star (``psf_score``, 0-1) from its normalised cutout next
    to the field's reference stamp (the median of the brightest
    candidates), so blends, binaries, galaxies, cosmic rays and odd
    shapes are rejected as well; its rejections are labelled by the
    measured shape (too sharp: cosmic ray / hot pixel; too broad:
    extended; otherwise odd shape). A pixel outside the core that
    departs from the reference stamp by more than 10 % of the peak and
    5 times the noise (the larger of the image noise and the cutout's
    own residual scatter) rejects the star too: as a cosmic ray / hot
    pixel when it is a single pixel or a one-pixel-wide track, else as
    other light in the box. Last, the stars that passed everything are
    the field's empirical PSF: each is fitted with their median (after
    a sub-pixel shift) and its derivatives, and a star whose second
    moments exceed the PSF's (less a smooth trend over the field, so a
    varying PSF is not a blend) with a chi-square above 20 (3 degrees
    of freedom), and is broader, is an
    unresolved blend or close double star (a companion inside the core
    that neither the isolation rule nor the cutout can show), as
    PSFEx-style residual tests find them. The network was trained on
    simulated fields and stars injected into real frames, labelled good
    when nothing but the star's own light lies in its box (see the
    model card).

    Parameters
    ----------
    fwhm : float or `None`, optional
        PSF FWHM in pixels. `None` (default) estimates it from the data:
        CNNStarFinder is run with a 3-pixel guess, a circular Gaussian
        plus a constant is fitted to the pixels within 1.5 times the
        guess (whatever their values) of the 50 brightest isolated
        unsaturated detections with SNR >= 20, and the median of the
        narrow end of their FWHMs (within 15 % of the 20th percentile:
        point sources, not galaxies) is taken; the search is repeated
        from the new value while it differs from the guess by more than
        25 % (at most three times). The estimate is in the attribute
        ``fwhm_used_`` after a call.
    min_score : float or `None`, optional
        Minimum ``psf_score``. `None` uses the model card's default
        (the cut that reached 99 % purity on the validation fields).
    size : int, optional
        Side of the box (pixels, odd) that must be inside the image and
        free of masked pixels, and (where it is larger than the
        network's 25-pixel stamp, e.g. for a broad PSF) free of other
        light above 10 % of the star's peak in its outer part; also the
        default and largest cutout size of `extract_stars`.
    min_snr : float or `None`, optional
        Minimum aperture signal-to-noise ratio (aperture of radius one
        FWHM); fainter candidates are rejected as too faint. `None` uses
        the model card's default, chosen with ``min_score`` on the
        validation fields (30 for a card without one).
    isolation : float, optional
        Radius, in FWHM, within which another candidate of at least
        ``neighbour_flux_ratio`` times the flux rejects a star.
    neighbour_flux_ratio : float, optional
        See ``isolation``.
    saturation : float or `None`, optional
        Saturation level in data units (positive). Whatever it is, a core whose
        maximum is shared by three or more pixels of the central 5x5
        (a plateau) is taken as saturated, and so is soft saturation
        found in the data: when the peaks of the brighter half of the
        usable candidates stop growing with their flux (a Theil-Sen
        slope of log peak against log flux below 0.5, as on
        photographic plates or non-linear detectors), every peak above
        80 % of the level where they pile up (the attribute
        ``pileup_level_`` and ``meta['pileup_level']``, above the local
        sky; `None` for a linear image). Those stars are also left out
        of the FWHM estimate and of the reference stamp.
    max_stars : int or `None`, optional
        Return at most this many stars (the brightest).
    threshold : float, optional
        Detection threshold of the CNNStarFinder candidates, in units
        of the image noise.
    model : str, path or `None`, optional
        A bundled model name or the path of an ONNX file following the
        ``psfstars`` contract (default: the bundled model).
    device : {'auto', 'cpu', 'cuda'}, optional
        Where onnxruntime runs.
    n_threads : int or `None`, optional
        onnxruntime intra-op threads.
    progress : bool, optional
        Show CNNStarFinder's progress bar over tiles.

    Raises
    ------
    ValueError
        At construction, for an argument out of its range: ``fwhm`` or
        ``saturation`` not a finite positive number (or `None`);
        ``min_score`` not within 0-1 (or `None`); ``min_snr`` (or
        `None`), ``isolation``, ``neighbour_flux_ratio`` or
        ``threshold`` not a finite non-negative number; ``size`` not an
        odd integer >= 5; ``max_stars`` or ``n_threads`` not a positive
        integer (or `None`); an unknown ``device``. Strings and
        booleans are not taken as numbers.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation.psf import simulate_psf_field
    >>> from cnnfind.psfstars import PSFStarSelector
    >>> sim = simulate_psf_field((256, 256), seed=3, density=600)
    >>> selector = PSFStarSelector(fwhm=3.5)
    >>> stars = selector(sim['image'])
    >>> stars.colnames[:6]
    ['id', 'x_centroid', 'y_centroid', 'flux', 'peak', 'psf_score']
    >>> epsf_stars = selector.extract_stars(sim['image'], size=25)
    >>> len(epsf_stars) == len(stars)
    True
    """

    def __init__(self, fwhm=None, min_score=None, size=25, *, min_snr=None,
                 isolation=3.0, neighbour_flux_ratio=0.02, saturation=None,
                 max_stars=None, threshold=5.0, model=None, device='auto',
                 n_threads=None, progress=False):
        fwhm = _check_number(fwhm, 'fwhm', positive=True, allow_none=True)
        if fwhm is not None:
            if not 1.5 <= fwhm <= 9.0:
                warnings.warn(f'fwhm={fwhm} is outside the range the '
                              'network was trained for (1.8-7 px)',
                              CNNFindWarning, stacklevel=2)
        self.fwhm = fwhm
        self.size = _cutout_size(size, minimum=5)
        self.isolation = _check_number(isolation, 'isolation')
        self.neighbour_flux_ratio = _check_number(neighbour_flux_ratio,
                                                  'neighbour_flux_ratio')
        self.threshold = _check_number(threshold, 'threshold')
        self.saturation = _check_number(saturation, 'saturation',
                                        positive=True, allow_none=True)
        self.max_stars = _positive_int_or_none(max_stars, 'max_stars')
        # Checked before the model is loaded, like the rest: the card
        # supplies only the defaults of min_snr and min_score.
        min_snr = _check_number(min_snr, 'min_snr', allow_none=True)
        min_score = _check_number(min_score, 'min_score', maximum=1.0,
                                  allow_none=True)
        self.n_threads = _positive_int_or_none(n_threads, 'n_threads')
        _providers(device)  # validates the device now
        self.device = device
        self.progress = bool(progress)
        self.model = load_model(model, 'psfstars', required_keys=_CARD_KEYS)
        if int(self.model.card['stamp_size']) != STAMP:
            msg = (f"model {self.model.name!r} expects {self.model.card['stamp_size']}"
                   f'-pixel stamps; this cnnfind makes {STAMP}-pixel stamps')
            raise ValueError(msg)
        if min_snr is None:
            min_snr = float(self.model.card.get('default_min_snr', 30.0))
        self.min_snr = min_snr
        if min_score is None:
            min_score = float(self.model.card['default_min_score'])
        self.min_score = min_score
        self.fwhm_used_ = fwhm
        self.pileup_level_ = None

    def __repr__(self):
        params = ('fwhm', 'min_score', 'size', 'min_snr', 'isolation',
                  'neighbour_flux_ratio', 'saturation', 'max_stars',
                  'threshold', 'device')
        vals = ', '.join(f'{p}={getattr(self, p)!r}' for p in params)
        return f'<PSFStarSelector({vals}, model={self.model.name!r})>'

    # -- candidates --------------------------------------------------------
    def _finder(self, fwhm, noise):
        from cnnfind.detection.finder import CNNStarFinder
        return CNNStarFinder(threshold=self.threshold * noise, fwhm=fwhm,
                             device=self.device, n_threads=self.n_threads,
                             progress=self.progress)

    def _find(self, data, mask, sky, noise, fwhm):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NoDetectionsWarning)
            warnings.simplefilter('ignore', CNNFindWarning)
            tab = self._finder(fwhm, noise)(data - np.float32(sky), mask=mask)
        if tab is None:
            return np.zeros(0), np.zeros(0)
        return (np.asarray(tab['x_centroid'], float),
                np.asarray(tab['y_centroid'], float))

    def _estimate_fwhm(self, data, mask, valid, sky, noise):
        """
        Median core FWHM of the brightest isolated detections, iterated
        from a first guess of 3 pixels, then (if too few stars are found
        at that scale: the finder takes much broader stars for extended
        sources) from 6 and 9 pixels.
        """
        guess = _FWHM_STARTS[0]
        for start in _FWHM_STARTS:
            fwhm, last = self._iterate_fwhm(data, mask, valid, sky, noise,
                                            start)
            if fwhm is not None:
                return fwhm
            if last != start:  # stars were found but it did not settle
                guess = last
                break
        warnings.warn('could not estimate the FWHM from the data (too few '
                      f'bright isolated stars); using {guess:.2f} pixels. '
                      'Pass fwhm= to set it.', CNNFindWarning, stacklevel=3)
        return guess

    def _iterate_fwhm(self, data, mask, valid, sky, noise, guess):
        """The estimate (or `None`) and the last guess, from ``guess``."""
        for _ in range(3):
            x, y = self._find(data, mask, sky, noise, guess)
            if len(x) == 0:
                break
            m = _prepare_candidates(data, valid, sky, noise, x, y, guess,
                                    half=self.size // 2, isolation=4.0,
                                    flux_ratio=0.0)
            ok = (~m['edge'] & ~m['crowded'] & (m['n_flat'] < 3)
                  & (m['snr'] >= 20))
            ok &= ~self._saturated(m, ok)  # soft saturation broadens
            idx = np.flatnonzero(ok)
            idx = idx[np.argsort(-m['snr'][idx])][:50]
            if len(idx) < 3:
                break
            new = guess
            for _ in range(2):  # the fit radius follows the estimate
                fw = _aperture_fwhm(data, valid, sky, x[idx], y[idx], new)
                if np.isfinite(fw).sum() < 3:
                    break
                new = _stellar_fwhm(fw)
            if abs(new / guess - 1.0) <= 0.25:
                return new, guess
            guess = float(np.clip(new, 1.0, 12.0))
        return None, guess

    # -- the call ----------------------------------------------------------
    def select(self, data, mask=None, *, candidates=None,
               keep_rejected=False):
        """
        Select PSF stars.

        Parameters
        ----------
        data : 2D array_like, `~astropy.units.Quantity` or `~astropy.nddata.NDData`
            The image (a constant background is estimated and removed).
            A masked array's or NDData's mask is used.
        mask : 2D bool array, optional
            `True` for bad pixels.
        candidates : table, optional
            Candidate positions instead of CNNStarFinder detections: any
            table with ``x_centroid``/``y_centroid`` (photutils >= 3),
            ``xcentroid``/``ycentroid`` (photutils < 3), ``x_fit``/
            ``y_fit``, ``x_0``/``y_0``, ``x_init``/``y_init``,
            ``xcenter``/``ycenter`` or ``x``/``y`` columns.
        keep_rejected : bool, optional
            Return every candidate, with a boolean ``selected`` column
            and a readable ``reason`` for each rejection (``'selected'``
            for the selected stars).

        Returns
        -------
        table : `~astropy.table.QTable` or `None`
            Columns ``id, x_centroid, y_centroid, flux, peak, psf_score,
            snr, nearest_neighbour, roundness, sharpness, blend_chi2``
            (and
            ``selected, reason`` with ``keep_rejected``; ``sky_centroid``
            when ``data`` is an `~astropy.nddata.NDData` with a celestial
            WCS), brightest first. ``flux`` is the sky-subtracted flux within 3 FWHM,
            ``peak`` the sky-subtracted peak pixel, ``snr`` the aperture
            SNR within 1 FWHM, ``nearest_neighbour`` the distance to
            the nearest other candidate (pixels), ``roundness`` 1 - b/a
            from weighted second moments and ``sharpness`` the peak /
            core flux ratio relative to the median of the stars that
            make the field's reference stamp (1 for the PSF, > 1
            sharper, < 1 broader), ``blend_chi2`` the significance of
            the star's excess second moments over the field's PSF
            (NaN for stars rejected before that test). `None` (with a
            `~photutils.utils.exceptions.NoDetectionsWarning`) when no
            candidate qualifies.

        Raises
        ------
        ValueError
            For non-2D data, a mask of the wrong shape, an image with no
            valid pixel or zero noise, or a candidates table without
            position columns.
        """
        original = data
        data, mask, unit, valid, sky, noise = _prepare_image(
            data, mask, 'nothing to select from')
        fwhm = self.fwhm
        if fwhm is None:
            fwhm = self._estimate_fwhm(data, mask, valid, sky, noise)
        self.fwhm_used_ = fwhm
        if candidates is None:
            x, y = self._find(data, mask, sky, noise, fwhm)
        else:
            x, y = _candidate_xy(candidates)
        if len(x) == 0:
            warnings.warn('No candidate stars were found.',
                          NoDetectionsWarning, stacklevel=2)
            return None
        kw = dict(half=self.size // 2, isolation=self.isolation,
                  flux_ratio=self.neighbour_flux_ratio)
        m = _prepare_candidates(data, valid, sky, noise, x, y, fwhm, **kw)
        usable = ~m['edge'] & ~m['crowded'] & (m['n_flat'] < 3)
        sat = self._saturated(m, usable & (m['snr'] >= self.min_snr))
        if self.pileup_level_ is not None and (sat & usable).any():
            # Soft saturation: keep the flattened bright stars out of
            # the reference stamp (a hard plateau is excluded already).
            m = _prepare_candidates(data, valid, sky, noise, x, y, fwhm,
                                    exclude=sat, **kw)
        score = self._score(m['stamps'], m['scalars'])
        sharp = m['conc'] / m['conc_ref']
        bad_xy = ~(np.isfinite(x) & np.isfinite(y))
        edge = m['edge'] | bad_xy
        faint = m['snr'] < self.min_snr
        crowded = m['crowded']
        low = score < self.min_score
        outlier = ((m['resid_max'] > _OUTLIER_FRACTION)
                   & (m['resid_sig'] > _OUTLIER_SIGMA))
        bad = low | outlier
        tests = (edge, sat & ~edge, faint, crowded,
                 outlier & m['resid_sharp'], bad & (sharp > 1.3),
                 bad & ((m['size'] > 1.25) | (sharp < 0.75)), outlier, low)
        reason = np.full(len(x), '', dtype=object)
        for text, hit in zip(REASONS[:-1], tests, strict=True):
            text = text.format(n=f'{self.isolation:g}')
            reason[(reason == '') & hit] = text
        # The survivors are the field's PSF; a star significantly
        # broader than its neighbours among them is a blend.
        passed = reason == ''
        chi2, broad = _blend_statistics(data, valid, m['local_sky'], x, y,
                                        fwhm, passed, passed)
        reason[passed & (chi2 > _BLEND_CHI2) & (broad > 0)] = REASONS[-1]
        selected = reason == ''
        if self.max_stars is not None:
            sel_idx = np.flatnonzero(selected)
            order = sel_idx[np.argsort(-m['flux'][sel_idx])]
            for i in order[self.max_stars:]:
                selected[i] = False
                reason[i] = f'beyond max_stars={self.max_stars}'
        flux = np.where(np.isfinite(m['flux']), m['flux'], -np.inf)
        order = np.lexsort((-flux, ~selected))
        keep = order if keep_rejected else order[selected[order]]
        if len(keep) == 0:
            warnings.warn('No candidate qualifies as a PSF star.',
                          NoDetectionsWarning, stacklevel=2)
            return None
        tab = QTable()
        tab['id'] = np.arange(1, len(keep) + 1)
        tab['x_centroid'] = x[keep]
        tab['y_centroid'] = y[keep]
        tab['flux'] = m['flux'][keep]
        tab['peak'] = m['peak'][keep]
        if unit is not None:
            tab['flux'] = tab['flux'] * unit
            tab['peak'] = tab['peak'] * unit
        tab['psf_score'] = score[keep]
        tab['snr'] = m['snr'][keep]
        tab['nearest_neighbour'] = m['nearest'][keep]
        tab['roundness'] = m['roundness'][keep]
        tab['sharpness'] = sharp[keep]
        tab['blend_chi2'] = chi2[keep]
        if keep_rejected:
            tab['selected'] = selected[keep]
            reason[selected] = SELECTED
            tab['reason'] = np.array([str(r) for r in reason[keep]])
        tab.meta['fwhm'] = fwhm
        tab.meta['sky'] = sky
        tab.meta['noise'] = noise
        tab.meta['n_reference'] = int(m['n_reference'])
        tab.meta['min_score'] = self.min_score
        tab.meta['pileup_level'] = self.pileup_level_
        return _add_sky_centroid(tab, original)

    def _saturated(self, m, usable):
        """
        Saturated candidates: a plateau in the core, a peak above
        ``saturation``, or (soft saturation) a peak above
        ``_PILEUP_FRACTION`` of the level at which the peaks of the
        ``usable`` bright stars pile up (stored in ``pileup_level_``,
        above the local sky; `None` when the peaks grow with the flux).
        """
        sat = m['n_flat'] >= 3
        if self.saturation is not None:
            sat |= m['raw_max'] >= self.saturation
        level = _pileup_level(m['peak'], m['flux'], usable & ~sat)
        self.pileup_level_ = level
        if level is not None:
            sat |= m['peak'] >= _PILEUP_FRACTION * level
        return sat

    __call__ = select

    def _score(self, stamps, scalars):
        """The network's good-PSF-star probability, in batches."""
        sess = get_session(self.model, device=self.device,
                           n_threads=self.n_threads)
        names = [i.name for i in sess.get_inputs()]
        out = np.empty(len(stamps), np.float32)
        for k in range(0, len(stamps), 1024):
            logits = sess.run(None, {names[0]: stamps[k:k + 1024],
                                     names[1]: scalars[k:k + 1024]})[0]
            out[k:k + 1024] = _sigmoid(logits[:, 0])
        return out

    def extract_stars(self, data, mask=None, size=None, *, candidates=None):
        """
        Cutouts of the selected stars, ready for
        `~photutils.psf.EPSFBuilder`.

        Each cutout has its own sky subtracted (a plane fitted to its
        2-pixel border, with outlying pixels left out), so a sky that
        varies over the image does not bias the ePSF; masked / NaN
        pixels are masked in the cutouts.

        Parameters
        ----------
        data : 2D array_like or `~astropy.nddata.NDData`
            The image.
        mask : 2D bool array, optional
            `True` for bad pixels.
        size : int or `None`, optional
            Cutout size (odd, at most the selector's ``size``: the box
            within which the stars were vetted for edges, masked pixels
            and other light); default the selector's ``size``. For
            larger cutouts, make the selector with that ``size``.
        candidates : table, optional
            As for `select`.

        Returns
        -------
        stars : `~photutils.psf.EPSFStars` or `None`
            `None` (with a warning) when no star qualifies.

        Raises
        ------
        ValueError
            If ``size`` is not an odd integer or exceeds the selector's
            ``size``.
        """
        from photutils.psf import extract_stars
        size = self.size if size is None else _cutout_size(size, self.size)
        table = self.select(data, mask, candidates=candidates)
        if table is None:
            return None
        plain, mask, _ = _unpack(data, mask)
        valid = valid_pixel_mask(plain, mask)
        x = np.asarray(table['x_centroid'], float)
        y = np.asarray(table['y_centroid'], float)
        img = np.where(valid, plain - np.float32(table.meta['sky']), 0.0)
        nd = NDData(img.astype(float), mask=None if valid.all() else ~valid)
        cat = Table({'x': x, 'y': y})
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return _subtract_local_sky(extract_stars(nd, cat, size=size))
