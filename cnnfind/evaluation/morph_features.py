"""
Non-parametric morphology (concentration, asymmetry, smoothness, Gini,
M20, ellipticity, colour) of display-scaled galaxy stamps: the features
of the classical baseline the CNN is compared with.

The definitions follow Conselice (2003) for CAS and Lotz, Primack &
Madau (2004) for Gini and M20, simplified to centred stamps: the
source is the connected region above twice the noise that contains the
centre.
"""

import numpy as np
from scipy import ndimage

__all__ = ['FEATURE_NAMES', 'morphology_features']

FEATURE_NAMES = ('concentration', 'asymmetry', 'smoothness', 'gini', 'm20',
                 'ellipticity', 'r50_fraction', 'area_fraction',
                 'blue_green', 'green_red', 'peak')


def _segment(grey, noise):
    """The connected region above 2 noise that holds the centre."""
    ny, nx = grey.shape
    above = ndimage.binary_opening(grey > 2 * noise)
    lab, n = ndimage.label(above)
    if n == 0:
        return np.zeros_like(above)
    cy, cx = ny // 2, nx // 2
    box = lab[cy - ny // 8:cy + ny // 8 + 1, cx - nx // 8:cx + nx // 8 + 1]
    ids = box[box > 0]
    if ids.size == 0:
        return np.zeros_like(above)
    return lab == np.bincount(ids).argmax()


def _gini(values):
    x = np.sort(np.abs(values))
    n = x.size
    if n < 2 or x.sum() <= 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (x.mean() * n * (n - 1)))


def _m20(img, seg, xc, yc):
    yy, xx = np.nonzero(seg)
    f = img[yy, xx]
    if f.size < 5 or f.sum() <= 0:
        return 0.0
    m = f * ((xx - xc) ** 2 + (yy - yc) ** 2)
    order = np.argsort(f)[::-1]
    cum = np.cumsum(f[order])
    top = order[:max(1, int(np.searchsorted(cum, 0.2 * cum[-1])) + 1)]
    total = m.sum()
    return float(np.log10(max(m[top].sum(), 1e-12) / total)) if total > 0 \
        else 0.0


def morphology_features(image):
    """
    Non-parametric morphology of one display-scaled stamp.

    Parameters
    ----------
    image : ``(3, H, W)`` array-like
        A network input (`cnnfind.morphology` display values, the source
        centred), colour or grey repeated.

    Returns
    -------
    features : ``(len(FEATURE_NAMES),)`` float `~numpy.ndarray`

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation.morph_features import (
    ...     FEATURE_NAMES, morphology_features)
    >>> yy, xx = np.mgrid[:64, :64] - 31.5
    >>> disc = 0.5 * np.exp(-np.hypot(xx, yy) / 4) + 0.01
    >>> f = dict(zip(FEATURE_NAMES, morphology_features([disc] * 3)))
    >>> bool(f['asymmetry'] < 0.05), bool(f['ellipticity'] < 0.1)
    (True, True)
    """
    img3 = np.asarray(image, dtype=np.float64)
    grey = img3.mean(axis=0)
    ny, nx = grey.shape
    border = np.concatenate([grey[:4].ravel(), grey[-4:].ravel(),
                             grey[:, :4].ravel(), grey[:, -4:].ravel()])
    sky = np.median(border)
    noise = max(1.4826 * np.median(np.abs(border - sky)), 1e-3)
    g = grey - sky
    seg = _segment(g, noise)
    out = np.zeros(len(FEATURE_NAMES))
    out[FEATURE_NAMES.index('peak')] = g[ny // 2 - 2:ny // 2 + 3,
                                         nx // 2 - 2:nx // 2 + 3].max()
    if seg.sum() < 5:
        return out
    w = np.where(seg, np.clip(g, 0, None), 0.0)
    total = w.sum()
    yy, xx = np.mgrid[:ny, :nx]
    xc, yc = (w * xx).sum() / total, (w * yy).sum() / total
    # Growth curve around the centroid.
    r = np.hypot(xx - xc, yy - yc)
    order = np.argsort(r[seg])
    cum = np.cumsum(w[seg][order]) / total
    radii = r[seg][order]

    def radius(frac):
        return radii[min(np.searchsorted(cum, frac), radii.size - 1)]

    r20, r50, r80 = radius(0.2), radius(0.5), radius(0.8)
    out[0] = 5 * np.log10(max(r80, 0.5) / max(r20, 0.5))
    # Asymmetry: rotate 180 degrees about the centroid.
    rot = ndimage.rotate(ndimage.shift(g, (ny / 2 - 0.5 - yc,
                                           nx / 2 - 0.5 - xc), order=1),
                         180, reshape=False, order=1)
    cen = ndimage.shift(g, (ny / 2 - 0.5 - yc, nx / 2 - 0.5 - xc), order=1)
    segc = ndimage.shift(seg.astype(float), (ny / 2 - 0.5 - yc,
                                             nx / 2 - 0.5 - xc), order=0) > 0.5
    denom = np.abs(cen[segc]).sum()
    out[1] = np.abs(cen - rot)[segc].sum() / denom if denom > 0 else 0.0
    # Smoothness (clumpiness).
    sm = ndimage.gaussian_filter(g, max(0.25 * r50, 0.5))
    resid = np.clip(g - sm, 0, None)
    out[2] = resid[seg].sum() / max(g[seg].sum(), 1e-9)
    out[3] = _gini(g[seg])
    out[4] = _m20(np.clip(g, 0, None), seg, xc, yc)
    # Ellipticity from second moments.
    mxx = (w * (xx - xc) ** 2).sum() / total
    myy = (w * (yy - yc) ** 2).sum() / total
    mxy = (w * (xx - xc) * (yy - yc)).sum() / total
    tr, det = mxx + myy, mxx * myy - mxy ** 2
    disc = np.sqrt(max(tr ** 2 / 4 - det, 0.0))
    a2, b2 = tr / 2 + disc, max(tr / 2 - disc, 1e-12)
    out[5] = 1 - np.sqrt(b2 / a2)
    out[6] = r50 / nx
    out[7] = seg.mean()
    # Colours (0 for grey): log ratios of the source's display values
    # in the blue/green and green/red channels.
    bands = [(img3[c] - np.median(img3[c][:4])) for c in range(3)]
    flux = [max(np.clip(b, 0, None)[seg].sum(), 1e-6) for b in bands]
    out[8] = np.log10(flux[2] / flux[1])
    out[9] = np.log10(flux[1] / flux[0])
    return out
