"""
Argument checks shared by the tools.
"""

__all__ = []


def _positive_int_or_none(value, name):
    """``value`` as an int, `None` kept; a clear `ValueError` otherwise."""
    if value is None:
        return None
    if int(value) != value or value <= 0:
        msg = f'{name} must be a positive integer or None'
        raise ValueError(msg)
    return int(value)
