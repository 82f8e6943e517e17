# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Detection metrics: purity, completeness, F1, threshold sweeps and
completeness as a function of a source property.

Conventions
-----------
A *true positive* is a detection matched one to one (see
`~cnnfind.evaluation.match_sources`) to a true source within
``radius``; a *false positive* is an unmatched detection; a *false
negative* is an unmatched true source. ``required`` marks the true
sources that count: a detection matched to a true source that is not
required (e.g. a star below the SNR limit, or just outside the image)
is neither a true nor a false positive, and such a source that is
missed is not a false negative. Use `scoring_mask` to build it.

``purity = tp / (tp + fp)`` (NaN without detections), ``completeness
= tp / (tp + fn)`` (NaN without required sources) and ``f1 = 2 tp /
(2 tp + fp + fn)``.
"""

import numpy as np
from astropy.table import QTable

from cnnfind.evaluation._tables import _as_float_arrays, _check_pair
from cnnfind.evaluation.matching import _match_in_priority_order, match_sources

__all__ = ['scoring_mask', 'detection_scores', 'threshold_sweep',
           'best_f1', 'completeness_at_purity', 'completeness_per_bin']


def _ratio(num, den):
    """num / den with NaN where den == 0."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    with np.errstate(invalid='ignore', divide='ignore'):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out if out.ndim else float(out)


def _required(required, n):
    """Boolean ``required`` array of length n (default all True)."""
    if required is None:
        return np.ones(n, dtype=bool)
    required = np.asarray(required, dtype=bool)
    if required.shape != (n,):
        msg = (f'required must be a boolean array with one value per true '
               f'source ({n}), got shape {required.shape}')
        raise ValueError(msg)
    return required


def scoring_mask(x, y, shape, *, snr=None, snr_min=3.0, edge=0.0):
    """
    Select the true sources that a finder is expected to find.

    Parameters
    ----------
    x, y : array_like
        True positions (0-based, pixel centres at integers).
    shape : tuple of int
        Image shape ``(ny, nx)``.
    snr : array_like, optional
        Signal-to-noise ratio of each source.
    snr_min : float
        Sources with ``snr < snr_min`` are not required.
    edge : float
        Sources closer than this to the image border are not required.

    Returns
    -------
    required : `~numpy.ndarray` of bool
        `True` for sources inside the image (by at least ``edge``
        pixels) and with ``snr >= snr_min``.

    Examples
    --------
    >>> from cnnfind.evaluation import scoring_mask
    >>> scoring_mask([-2.0, 5.0, 5.0], [5.0, 5.0, 5.0], (10, 10),
    ...              snr=[50, 50, 2]).tolist()
    [False, True, False]
    """
    x, y = _as_float_arrays(x, y)
    ny, nx = shape
    ok = ((x >= -0.5 + edge) & (x <= nx - 0.5 - edge)
          & (y >= -0.5 + edge) & (y <= ny - 0.5 - edge))
    if snr is not None:
        ok &= np.asarray(snr, dtype=float) >= snr_min
    return ok


def detection_scores(x_true, y_true, x_det, y_det, radius=3.0, *,
                     required=None, method='optimal'):
    """
    Purity, completeness and F1 of a detected catalogue.

    Parameters
    ----------
    x_true, y_true : array_like
        True source positions.
    x_det, y_det : array_like
        Detected positions.
    radius : float
        Matching radius in pixels.
    required : array_like of bool, optional
        Which true sources count (see the module docstring); default
        all.
    method : {'optimal', 'greedy'}
        Matching rule, see `~cnnfind.evaluation.match_sources`.

    Returns
    -------
    scores : dict
        ``tp``, ``fp``, ``fn``, ``ignored`` (detections matched to
        sources that are not required), ``purity``, ``completeness``
        and ``f1``.

    Examples
    --------
    >>> from cnnfind.evaluation import detection_scores
    >>> s = detection_scores([10, 20, 30], [10, 20, 30],
    ...                      [10.3, 20.1, 80], [10, 20, 80])
    >>> s['tp'], s['fp'], s['fn'], round(s['f1'], 3)
    (2, 1, 1, 0.667)
    """
    x_true, y_true, x_det, y_det = _as_float_arrays(x_true, y_true,
                                                    x_det, y_det)
    req = _required(required, x_true.size)
    it, _, _ = match_sources(x_true, y_true, x_det, y_det, radius,
                             method=method)
    tp = int(req[it].sum())
    ignored = int(it.size - tp)
    fp = int(x_det.size - it.size)
    fn = int(req.sum() - tp)
    return {'tp': tp, 'fp': fp, 'fn': fn, 'ignored': ignored,
            'purity': _ratio(tp, tp + fp),
            'completeness': _ratio(tp, tp + fn),
            'f1': _ratio(2 * tp, 2 * tp + fp + fn)}


def threshold_sweep(x_true, y_true, x_det, y_det, score, radius=3.0, *,
                    cuts=None, required=None):
    """
    Purity, completeness and F1 as a function of a cut on a score.

    The detections are matched once, all of them, and the counts for
    every cut ``score >= cut`` follow from cumulative sums, so a sweep
    costs one matching.

    Notes
    -----
    Matching once at the lowest cut and then cutting is an
    approximation: a true source matched to a low-score detection
    becomes a false negative when that detection is cut, even if a
    higher-score detection that was matched elsewhere (or left
    unmatched) could have taken it. To keep that effect out, the
    matching here is greedy in order of *decreasing score*: each
    detection takes the nearest still-unmatched true source within
    ``radius``. With that rule, matching only the detections above a
    cut gives exactly the pairs of the full matching above that cut,
    so every row is exact *for this matching rule*. It can differ from
    the optimal assignment of `detection_scores` in rare configurations
    where two detections compete for one source (by a handful of
    matches in a crowded field).

    Parameters
    ----------
    x_true, y_true : array_like
        True source positions.
    x_det, y_det : array_like
        Detected positions.
    score : array_like
        Score of each detection (larger means more confident).
        Non-finite scores rank lowest.
    radius : float
        Matching radius in pixels.
    cuts : array_like, optional
        Cuts to evaluate; default every distinct score value.
    required : array_like of bool, optional
        Which true sources count (see the module docstring).

    Returns
    -------
    sweep : `~astropy.table.QTable`
        One row per cut, in increasing ``threshold``, with columns
        ``threshold``, ``n_det``, ``tp``, ``fp``, ``fn``, ``purity``,
        ``completeness`` and ``f1``. ``n_det = tp + fp`` excludes
        detections matched to sources that are not required.

    Examples
    --------
    >>> from cnnfind.evaluation import threshold_sweep
    >>> sweep = threshold_sweep([10, 20], [10, 20], [10, 20, 40],
    ...                         [10, 20, 40], score=[9.0, 5.0, 1.0])
    >>> sweep['threshold'].tolist(), sweep['f1'].round(2).tolist()
    ([1.0, 5.0, 9.0], [0.8, 1.0, 0.67])
    """
    x_true, y_true, x_det, y_det, score = _as_float_arrays(
        x_true, y_true, x_det, y_det, score)
    _check_pair(x_true, y_true, 'true')
    _check_pair(x_det, y_det, 'detected')
    if score.shape != x_det.shape:
        msg = (f'score must have one value per detection ({x_det.size}), '
               f'got shape {score.shape}')
        raise ValueError(msg)
    score = np.where(np.isfinite(score), score, -np.inf)
    req = _required(required, x_true.size)
    it, id_, _ = _match_in_priority_order(x_true, y_true, x_det, y_det,
                                          score, radius)
    status = np.zeros(x_det.size, dtype=int)  # 0 false positive
    status[id_[req[it]]] = 1                   # 1 true positive
    status[id_[~req[it]]] = 2                  # 2 ignored

    order = np.argsort(-score, kind='stable')
    s_desc = score[order]
    tp_cum = np.concatenate([[0], np.cumsum(status[order] == 1)])
    fp_cum = np.concatenate([[0], np.cumsum(status[order] == 0)])
    if cuts is None:
        cuts = np.unique(score)
    cuts = np.sort(np.atleast_1d(np.asarray(cuts, dtype=float)))
    # Number of detections with score >= cut (s_desc is decreasing).
    n_above = np.searchsorted(-s_desc, -cuts, side='right')
    tp = tp_cum[n_above]
    fp = fp_cum[n_above]
    fn = int(req.sum()) - tp
    sweep = QTable()
    sweep['threshold'] = cuts
    sweep['n_det'] = tp + fp
    sweep['tp'] = tp
    sweep['fp'] = fp
    sweep['fn'] = fn
    sweep['purity'] = _ratio(tp, tp + fp)
    sweep['completeness'] = _ratio(tp, tp + fn)
    sweep['f1'] = _ratio(2 * tp, 2 * tp + fp + fn)
    sweep.meta['radius'] = float(radius)
    sweep.meta['n_true'] = int(req.sum())
    return sweep


def best_f1(sweep):
    """
    The operating point of a sweep with the highest F1.

    Parameters
    ----------
    sweep : `~astropy.table.QTable`
        Output of `threshold_sweep`.

    Returns
    -------
    row : `~astropy.table.Row`
        The row with the largest ``f1`` (the highest threshold among
        ties).

    Raises
    ------
    ValueError
        If the sweep is empty or has no finite F1.

    Examples
    --------
    >>> from cnnfind.evaluation import best_f1, threshold_sweep
    >>> sweep = threshold_sweep([10, 20], [10, 20], [10, 20, 40],
    ...                         [10, 20, 40], score=[9.0, 5.0, 1.0])
    >>> float(best_f1(sweep)['threshold'])
    5.0
    """
    f1 = np.asarray(sweep['f1'], dtype=float)
    if f1.size == 0 or not np.isfinite(f1).any():
        msg = 'the sweep has no finite F1 value'
        raise ValueError(msg)
    f1 = np.where(np.isfinite(f1), f1, -1.0)
    best = f1.size - 1 - int(np.argmax(f1[::-1]))
    return sweep[best]


def completeness_at_purity(sweep, purity=0.95, *, return_threshold=False):
    """
    The highest completeness reached with at least a given purity.

    Parameters
    ----------
    sweep : `~astropy.table.QTable`
        Output of `threshold_sweep`.
    purity : float
        Required purity.
    return_threshold : bool
        Also return the lowest cut that reaches it.

    Returns
    -------
    completeness : float
        NaN if no cut reaches ``purity``.
    threshold : float
        Only with ``return_threshold=True`` (NaN if never reached).

    Examples
    --------
    >>> from cnnfind.evaluation import completeness_at_purity, threshold_sweep
    >>> sweep = threshold_sweep([10, 20], [10, 20], [10, 20, 40],
    ...                         [10, 20, 40], score=[9.0, 5.0, 1.0])
    >>> completeness_at_purity(sweep, 0.95)
    1.0
    """
    pur = np.asarray(sweep['purity'], dtype=float)
    comp = np.asarray(sweep['completeness'], dtype=float)
    ok = np.flatnonzero(np.isfinite(pur) & (pur >= purity)
                        & np.isfinite(comp))
    if ok.size == 0:
        return (np.nan, np.nan) if return_threshold else np.nan
    # Among the cuts with the best completeness take the lowest one.
    k = ok[np.argmax(comp[ok])]
    value = float(comp[k])
    if return_threshold:
        return value, float(sweep['threshold'][k])
    return value


def completeness_per_bin(x_true, y_true, values, x_det, y_det, bins,
                         radius=3.0, *, required=None, method='optimal'):
    """
    Completeness in bins of a property of the true sources.

    All true sources take part in the one-to-one matching (so that a
    detection is never counted twice); only those inside a bin and
    ``required`` are counted.

    Parameters
    ----------
    x_true, y_true : array_like
        True source positions.
    values : array_like
        The property to bin (e.g. SNR or magnitude), one per true
        source.
    x_det, y_det : array_like
        Detected positions.
    bins : array_like
        Bin edges (``len(bins) - 1`` bins, ``lo <= value < hi``); the
        last edge may be ``inf``.
    radius : float
        Matching radius in pixels.
    required : array_like of bool, optional
        Which true sources count; default all.
    method : {'optimal', 'greedy'}
        Matching rule.

    Returns
    -------
    table : `~astropy.table.QTable`
        Columns ``lo``, ``hi``, ``n_true``, ``n_found`` and
        ``completeness`` (NaN for empty bins).

    Examples
    --------
    >>> from cnnfind.evaluation import completeness_per_bin
    >>> t = completeness_per_bin([10, 20, 30, 40], [0, 0, 0, 0],
    ...                          [4, 8, 15, 30], [10, 30, 40], [0, 0, 0],
    ...                          bins=[3, 10, 100])
    >>> t['n_true'].tolist(), t['completeness'].tolist()
    ([2, 2], [0.5, 1.0])
    """
    x_true, y_true, values, x_det, y_det = _as_float_arrays(
        x_true, y_true, values, x_det, y_det)
    if values.shape != x_true.shape:
        msg = (f'values must have one entry per true source '
               f'({x_true.size}), got shape {values.shape}')
        raise ValueError(msg)
    bins = np.asarray(bins, dtype=float)
    if bins.ndim != 1 or bins.size < 2 or np.any(np.diff(bins) <= 0):
        msg = 'bins must be at least two increasing edges'
        raise ValueError(msg)
    req = _required(required, x_true.size)
    it, _, _ = match_sources(x_true, y_true, x_det, y_det, radius,
                             method=method)
    found = np.zeros(x_true.size, dtype=bool)
    found[it] = True
    lo, hi = bins[:-1], bins[1:]
    inbin = ((values[None, :] >= lo[:, None]) & (values[None, :] < hi[:, None])
             & req[None, :])
    n_true = inbin.sum(axis=1)
    n_found = (inbin & found[None, :]).sum(axis=1)
    table = QTable()
    table['lo'] = lo
    table['hi'] = hi
    table['n_true'] = n_true
    table['n_found'] = n_found
    table['completeness'] = _ratio(n_found, n_true)
    return table
