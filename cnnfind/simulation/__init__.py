"""
Seeded simulations of star fields with truth (numpy only).
"""

from cnnfind.simulation.fields import *  # noqa: F401, F403
from cnnfind.simulation.psf import *  # noqa: F401, F403
from cnnfind.simulation.scenarios import *  # noqa: F401, F403
