# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Centroid accuracy of matched detections and its comparison with the
Cramér–Rao bound.
"""

import numpy as np
from astropy.table import QTable

from cnnfind.evaluation._tables import _as_float_arrays
from cnnfind.evaluation.matching import match_sources

__all__ = ['centroid_errors', 'cramer_rao_bound', 'centroid_efficiency']

#: Cramér–Rao bound per axis in units of FWHM / SNR (SNR being the
#: matched-filter SNR), for a background-limited and a source-limited
#: star (see ``peers.md`` in the project notes).
_CRB_FACTOR = {'background': 0.60, 'source': 0.42}


def _matched_offsets(x_true, y_true, x_det, y_det, radius, method):
    """Matched pairs and their offsets detected - true."""
    it, id_, _ = match_sources(x_true, y_true, x_det, y_det, radius,
                               method=method)
    return it, x_det[id_] - x_true[it], y_det[id_] - y_true[it]


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a)))) if a.size else np.nan


def centroid_errors(x_true, y_true, x_det, y_det, radius=3.0, *,
                    select=None, method='optimal'):
    """
    Centroid errors of the detections matched to true sources.

    Parameters
    ----------
    x_true, y_true : array_like
        True positions.
    x_det, y_det : array_like
        Detected positions.
    radius : float
        Matching radius in pixels.
    select : array_like of bool, optional
        Which true sources to include in the statistics (e.g. ``snr >
        20``). All true sources take part in the matching.
    method : {'optimal', 'greedy'}
        Matching rule, see `~cnnfind.evaluation.match_sources`.

    Returns
    -------
    errors : dict
        ``n`` (number of matched, selected sources), ``bias_x``,
        ``bias_y`` (mean offsets detected - true), ``rms_x``, ``rms_y``
        (RMS offsets per axis), ``rms`` (RMS per axis, both axes
        pooled) and ``rms_robust`` (1.4826 times the median absolute
        offset, both axes pooled; insensitive to blends). NaN when
        nothing matched.

    Examples
    --------
    >>> from cnnfind.evaluation import centroid_errors
    >>> e = centroid_errors([10, 20], [10, 20], [10.1, 19.9], [10, 20])
    >>> e['n'], round(e['rms_x'], 3), round(e['rms_y'], 3)
    (2, 0.1, 0.0)
    """
    x_true, y_true, x_det, y_det = _as_float_arrays(x_true, y_true,
                                                    x_det, y_det)
    it, dx, dy = _matched_offsets(x_true, y_true, x_det, y_det, radius,
                                  method)
    if select is not None:
        keep = np.asarray(select, dtype=bool)[it]
        dx, dy = dx[keep], dy[keep]
    both = np.concatenate([dx, dy])
    return {'n': int(dx.size),
            'bias_x': float(np.mean(dx)) if dx.size else np.nan,
            'bias_y': float(np.mean(dy)) if dy.size else np.nan,
            'rms_x': _rms(dx), 'rms_y': _rms(dy), 'rms': _rms(both),
            'rms_robust': (float(1.4826 * np.median(np.abs(both)))
                           if both.size else np.nan)}


def cramer_rao_bound(fwhm, snr, regime='background'):
    """
    Cramér–Rao lower bound on the centroid error per axis.

    ``0.60 * fwhm / snr`` for a background-limited star and ``0.42 *
    fwhm / snr`` for a source-limited one, where ``snr`` is the
    matched-filter signal-to-noise ratio.

    Parameters
    ----------
    fwhm : float or array_like
        PSF FWHM in pixels.
    snr : float or array_like
        Matched-filter SNR.
    regime : {'background', 'source'}
        Which noise dominates.

    Returns
    -------
    sigma : float or `~numpy.ndarray`
        The bound in pixels, per axis.

    Examples
    --------
    >>> from cnnfind.evaluation import cramer_rao_bound
    >>> round(cramer_rao_bound(3.0, 20.0), 3)
    0.09
    >>> round(cramer_rao_bound(3.0, 20.0, regime='source'), 3)
    0.063
    """
    if regime not in _CRB_FACTOR:
        msg = f"regime must be 'background' or 'source', got {regime!r}"
        raise ValueError(msg)
    out = (_CRB_FACTOR[regime] * np.asarray(fwhm, dtype=float)
           / np.asarray(snr, dtype=float))
    return out if out.ndim else float(out)


def centroid_efficiency(x_true, y_true, snr, x_det, y_det, fwhm,
                        bins=(5.0, 10.0, 20.0, 50.0, np.inf), radius=3.0,
                        *, regime='background', method='optimal'):
    """
    Centroid RMS per SNR bin, relative to the Cramér–Rao bound.

    Parameters
    ----------
    x_true, y_true : array_like
        True positions.
    snr : array_like
        Matched-filter SNR of each true source.
    x_det, y_det : array_like
        Detected positions.
    fwhm : float
        PSF FWHM in pixels.
    bins : array_like
        SNR bin edges.
    radius : float
        Matching radius in pixels.
    regime : {'background', 'source'}
        Noise regime of the bound.
    method : {'optimal', 'greedy'}
        Matching rule.

    Returns
    -------
    table : `~astropy.table.QTable`
        Columns ``lo``, ``hi``, ``n`` (matched sources in the bin),
        ``rms`` (per axis, both axes pooled), ``crb`` (RMS of the bound
        over the same sources) and ``ratio = rms / crb`` (1 is
        optimal).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation import centroid_efficiency
    >>> rng = np.random.default_rng(0)
    >>> x = rng.uniform(0, 500, 2000)
    >>> y = rng.uniform(0, 500, 2000)
    >>> snr = np.full(2000, 30.0)
    >>> sig = 0.60 * 3.0 / 30.0   # a finder at the bound
    >>> t = centroid_efficiency(x, y, snr, x + rng.normal(0, sig, 2000),
    ...                         y + rng.normal(0, sig, 2000), 3.0,
    ...                         bins=[20, 50])
    >>> round(float(t['ratio'][0]), 1)
    1.0
    """
    x_true, y_true, snr, x_det, y_det = _as_float_arrays(
        x_true, y_true, snr, x_det, y_det)
    bins = np.asarray(bins, dtype=float)
    it, dx, dy = _matched_offsets(x_true, y_true, x_det, y_det, radius,
                                  method)
    s = snr[it]
    bound = cramer_rao_bound(fwhm, s, regime)
    rows = {'lo': [], 'hi': [], 'n': [], 'rms': [], 'crb': []}
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        k = (s >= lo) & (s < hi)
        rows['lo'].append(lo)
        rows['hi'].append(hi)
        rows['n'].append(int(k.sum()))
        rows['rms'].append(_rms(np.concatenate([dx[k], dy[k]])))
        rows['crb'].append(_rms(np.asarray(bound)[k]))
    table = QTable(rows)
    with np.errstate(invalid='ignore', divide='ignore'):
        table['ratio'] = np.asarray(table['rms']) / np.asarray(table['crb'])
    return table
