"""
Argument checks shared by the tools.
"""

import numpy as np

__all__ = []


def _real_scalar(value):
    """
    ``value`` as a float if it is a real, non-boolean scalar number,
    else NaN (strings, booleans, arrays and `None` included).
    """
    if (value is None or isinstance(value, (str, bytes, bool, np.bool_))
            or np.ndim(value) != 0):
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _check_number(value, name, *, positive=False, maximum=None,
                  allow_none=False):
    """
    ``value`` as a float, else a `ValueError` that names the argument
    and the value.

    The value must be a real scalar, finite and non-negative (positive
    with ``positive``, at most ``maximum`` if given); `None` is returned
    as it is with ``allow_none``.
    """
    if allow_none and value is None:
        return None
    number = _real_scalar(value)
    ok = (np.isfinite(number) and (number > 0 if positive else number >= 0)
          and (maximum is None or number <= maximum))
    if not ok:
        if maximum is not None:
            what = f'a number between 0 and {maximum:g}'
        else:
            what = f"a finite {'positive' if positive else 'non-negative'} number"
        if allow_none:
            what += ' or None'
        msg = f'{name} must be {what}, not {value!r}'
        raise ValueError(msg)
    return number


def _positive_int_or_none(value, name):
    """
    ``value`` as an int, `None` kept; else a `ValueError` that names the
    argument and the value (booleans, strings and non-integral numbers
    included).
    """
    if value is None:
        return None
    number = _real_scalar(value)
    if not (np.isfinite(number) and number.is_integer() and number >= 1):
        msg = f'{name} must be a positive integer or None, not {value!r}'
        raise ValueError(msg)
    return int(number)


def _positive_number_or_none(value, name):
    """``value`` as a float, `None` kept; a clear `ValueError` for
    anything but a finite positive scalar."""
    return _check_number(value, name, positive=True, allow_none=True)
