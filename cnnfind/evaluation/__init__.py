# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Evaluation of source finders: one-to-one matching, purity/completeness
sweeps, centroid accuracy against the Cramér–Rao bound, injection and
recovery, fair wrappers around the classical peers, and plots.

Only numpy, scipy and astropy are needed to import this subpackage;
matplotlib, SEP and SExtractor are imported or called only by the
functions that use them.
"""

from cnnfind.evaluation.centroids import *  # noqa: F401, F403
from cnnfind.evaluation.injection import *  # noqa: F401, F403
from cnnfind.evaluation.matching import *  # noqa: F401, F403
from cnnfind.evaluation.metrics import *  # noqa: F401, F403
from cnnfind.evaluation.peers import *  # noqa: F401, F403
from cnnfind.evaluation.plotting import *  # noqa: F401, F403
