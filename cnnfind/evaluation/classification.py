"""
Metrics of probabilistic classifiers: accuracy, per-class recall,
confusion matrix and calibration (reliability).
"""

import numpy as np

__all__ = ['confusion_matrix', 'reliability', 'classification_metrics']


def confusion_matrix(true, pred, n_classes):
    """
    Counts ``C[i, j]`` of true class ``i`` predicted as ``j``.

    Examples
    --------
    >>> from cnnfind.evaluation.classification import confusion_matrix
    >>> confusion_matrix([0, 0, 1, 2], [0, 1, 1, 2], 3).tolist()
    [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    """
    true = np.asarray(true, int)
    pred = np.asarray(pred, int)
    return np.bincount(true * n_classes + pred,
                       minlength=n_classes**2).reshape(n_classes, n_classes)


def reliability(prob, true, n_bins=10):
    """
    Reliability of the top-class probability.

    Parameters
    ----------
    prob : ``(N, K)`` array-like
        Class probabilities.
    true : ``(N,)`` array-like of int
        True classes.
    n_bins : int
        Number of equal-width confidence bins over [0, 1].

    Returns
    -------
    bins : list of dict
        Per non-empty bin: ``lower``, ``upper``, ``count``,
        ``confidence`` (mean top probability), ``accuracy``.
    ece : float
        Expected calibration error: the count-weighted mean of
        ``|accuracy - confidence|``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.evaluation.classification import reliability
    >>> prob = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    >>> bins, ece = reliability(prob, [0, 0, 0, 1], n_bins=5)
    >>> round(ece, 3)
    0.1
    """
    prob = np.asarray(prob, float)
    true = np.asarray(true, int)
    conf = prob.max(axis=1)
    hit = prob.argmax(axis=1) == true
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = which == b
        if not sel.any():
            continue
        acc, c = float(hit[sel].mean()), float(conf[sel].mean())
        bins.append({'lower': float(edges[b]), 'upper': float(edges[b + 1]),
                     'count': int(sel.sum()), 'confidence': c,
                     'accuracy': acc})
        ece += sel.sum() * abs(acc - c)
    return bins, float(ece / max(len(conf), 1))


def classification_metrics(prob, true, classes, *, galaxy_classes=(0, 1)):
    """
    The metrics of a three-class morphology classifier.

    Parameters
    ----------
    prob : ``(N, K)`` array-like
        Class probabilities.
    true : ``(N,)`` array-like of int
        True classes.
    classes : sequence of str
        Class names.
    galaxy_classes : pair of int
        The two galaxy classes for the two-way accuracy: among objects
        of these true classes, the larger of their two probabilities.

    Returns
    -------
    metrics : dict
        ``accuracy``, ``balanced_accuracy``, ``recall`` per class,
        ``two_way_accuracy`` (e.g. elliptical vs spiral),
        ``confusion`` (rows true, columns predicted), ``ece`` and
        ``reliability`` bins.
    """
    prob = np.asarray(prob, float)
    true = np.asarray(true, int)
    pred = prob.argmax(axis=1)
    k = len(classes)
    cm = confusion_matrix(true, pred, k)
    recall = {c: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None
              for i, c in enumerate(classes)}
    a, b = galaxy_classes
    gal = np.isin(true, galaxy_classes)
    two = np.where(prob[gal, a] >= prob[gal, b], a, b)
    bins, ece = reliability(prob, true)
    return {
        'n': int(len(true)),
        'accuracy': float(np.mean(pred == true)),
        'balanced_accuracy': float(np.mean(
            [r for r in recall.values() if r is not None])),
        'recall': recall,
        'two_way_accuracy': float(np.mean(two == true[gal])) if gal.any()
        else None,
        'confusion': cm.tolist(),
        'ece': ece,
        'reliability': bins,
    }
