# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Self-supervised (Noise2Void) denoising of astronomical images.
"""

from cnnfind.denoise.denoiser import *  # noqa: F401, F403
