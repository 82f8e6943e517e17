# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
One-to-one cross-matching of a detected catalogue with a true (or
reference) catalogue.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from cnnfind.evaluation._tables import _as_float_arrays, _check_pair

__all__ = ['match_sources']

#: Above this many cells (true x detected) a connected group of
#: candidate pairs is matched greedily instead of optimally.
_MAX_DENSE_CELLS = 4_000_000


def _candidate_pairs(x_true, y_true, x_det, y_det, radius):
    """All (true, detected, distance) pairs closer than ``radius``."""
    empty = (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    ok_t = np.flatnonzero(np.isfinite(x_true) & np.isfinite(y_true))
    ok_d = np.flatnonzero(np.isfinite(x_det) & np.isfinite(y_det))
    if ok_t.size == 0 or ok_d.size == 0:
        return empty
    tree_t = cKDTree(np.column_stack([x_true[ok_t], y_true[ok_t]]))
    tree_d = cKDTree(np.column_stack([x_det[ok_d], y_det[ok_d]]))
    # 'ndarray' output keeps pairs at distance exactly zero (a sparse
    # matrix would silently drop them).
    pairs = tree_t.sparse_distance_matrix(tree_d, radius,
                                          output_type='ndarray')
    if pairs.size == 0:
        return empty
    keep = pairs['v'] <= radius
    return (ok_t[pairs['i'][keep]], ok_d[pairs['j'][keep]],
            pairs['v'][keep].astype(float))


def _greedy(it, id_, dist, order):
    """Take candidate pairs in ``order``, skipping used sources."""
    used_t, used_d = set(), set()
    sel = []
    for k in order:
        t, d = it[k], id_[k]
        if t in used_t or d in used_d:
            continue
        used_t.add(t)
        used_d.add(d)
        sel.append(k)
    return np.asarray(sel, dtype=int)


def _optimal(it, id_, dist, n_true, radius):
    """
    Maximum-cardinality, minimum-total-distance assignment, solved
    separately on each connected group of the candidate graph.
    """
    n_pairs = it.size
    nodes_d = id_ + n_true
    n_nodes = n_true + int(id_.max()) + 1
    graph = coo_matrix((np.ones(n_pairs), (it, nodes_d)),
                       shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    comp = labels[it]
    # Groups made of a single candidate pair need no solver.
    n_in_comp = np.bincount(comp, minlength=labels.max() + 1)
    single = n_in_comp[comp] == 1
    sel = [np.flatnonzero(single)]
    multi = np.flatnonzero(~single)
    if multi.size:
        multi = multi[np.argsort(comp[multi], kind='stable')]
        splits = np.flatnonzero(np.diff(comp[multi])) + 1
        for group in np.split(multi, splits):
            rows, r_inv = np.unique(it[group], return_inverse=True)
            cols, c_inv = np.unique(id_[group], return_inverse=True)
            if rows.size * cols.size > _MAX_DENSE_CELLS:
                sel.append(group[_greedy(it[group], id_[group], dist[group],
                                         np.argsort(dist[group],
                                                    kind='stable'))])
                continue
            # Any non-candidate pair costs more than all real pairs
            # together, so the solver first maximises the number of
            # matches and then minimises their summed distance.
            big = radius * (min(rows.size, cols.size) + 1) + 1.0
            cost = np.full((rows.size, cols.size), big)
            where = np.full((rows.size, cols.size), -1)
            cost[r_inv, c_inv] = dist[group]
            where[r_inv, c_inv] = group
            r, c = linear_sum_assignment(cost)
            real = where[r, c]
            sel.append(real[real >= 0])
    return np.concatenate(sel).astype(int)


def _match_in_priority_order(x_true, y_true, x_det, y_det, priority,
                             radius):
    """
    Greedy matching in decreasing ``priority`` of the detections: each
    detection takes the nearest still-unmatched true source.

    Matching any prefix of the detections sorted by priority with this
    rule gives exactly the pairs of the full run restricted to that
    prefix, which makes threshold sweeps exact for this rule.
    """
    it, id_, dist = _candidate_pairs(x_true, y_true, x_det, y_det, radius)
    if it.size == 0:
        return it, id_, dist
    order = np.lexsort((dist, -np.asarray(priority, float)[id_]))
    sel = _greedy(it, id_, dist, order)
    return it[sel], id_[sel], dist[sel]


def match_sources(x_true, y_true, x_det, y_det, radius=3.0, *,
                  method='optimal'):
    """
    Match detections to true sources one to one within a radius.

    Candidate pairs closer than ``radius`` are found with a KD-tree.
    With ``method='optimal'`` each connected group of candidates is
    solved with `scipy.optimize.linear_sum_assignment`: the number of
    matched pairs is maximised first and their summed distance
    minimised second. ``method='greedy'`` takes candidate pairs nearest
    first. Either way every true source and every detection is used at
    most once.

    Parameters
    ----------
    x_true, y_true : array_like
        Positions of the true (or reference) sources.
    x_det, y_det : array_like
        Positions of the detections. Non-finite positions never match.
    radius : float
        Largest distance (same units as the positions, normally pixels)
        of a match.
    method : {'optimal', 'greedy'}
        Assignment rule (see above).

    Returns
    -------
    idx_true, idx_det : `~numpy.ndarray` of int
        Indices of the matched pairs into the true and detected arrays,
        sorted by ``idx_true``.
    distances : `~numpy.ndarray`
        Distance of each pair.

    Examples
    --------
    Two detections near the same star: only one of them matches it.

    >>> from cnnfind.evaluation import match_sources
    >>> it, idet, d = match_sources([10, 20], [10, 20],
    ...                             [10.5, 10.2, 50], [10, 10, 50])
    >>> it.tolist(), idet.tolist(), d.round(2).tolist()
    ([0], [1], [0.2])
    """
    if radius <= 0:
        msg = f'radius must be positive, got {radius}'
        raise ValueError(msg)
    if method not in ('optimal', 'greedy'):
        msg = f"method must be 'optimal' or 'greedy', got {method!r}"
        raise ValueError(msg)
    x_true, y_true, x_det, y_det = _as_float_arrays(x_true, y_true,
                                                    x_det, y_det)
    _check_pair(x_true, y_true, 'true')
    _check_pair(x_det, y_det, 'detected')
    it, id_, dist = _candidate_pairs(x_true, y_true, x_det, y_det, radius)
    if it.size:
        if method == 'optimal':
            sel = _optimal(it, id_, dist, x_true.size, radius)
        else:
            sel = _greedy(it, id_, dist, np.argsort(dist, kind='stable'))
        it, id_, dist = it[sel], id_[sel], dist[sel]
        order = np.argsort(it, kind='stable')
        it, id_, dist = it[order], id_[order], dist[order]
    return it.astype(int), id_.astype(int), dist
