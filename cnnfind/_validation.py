"""
Argument checks shared by the tools.
"""

import numpy as np

__all__ = []


def _positive_int_or_none(value, name):
    """``value`` as an int, `None` kept; a clear `ValueError` otherwise."""
    if value is None:
        return None
    if int(value) != value or value <= 0:
        msg = f'{name} must be a positive integer or None'
        raise ValueError(msg)
    return int(value)


def _positive_number_or_none(value, name):
    """``value`` as a float, `None` kept; a clear `ValueError` for
    anything but a finite positive scalar."""
    if value is None:
        return None
    try:
        number = float(value) if np.ndim(value) == 0 else np.nan
    except (TypeError, ValueError):
        number = np.nan
    if not (np.isfinite(number) and number > 0):
        msg = f'{name} must be a positive number or None, not {value!r}'
        raise ValueError(msg)
    return number
