"""
The mark that cnnfind leaves in the FITS header (``HISTORY``) or the
``meta`` of a denoised image, and the check that reads it back.

`CNNStarFinder` was trained on raw images: on images denoised by
`~cnnfind.N2VDenoiser` it finds fewer faint stars at a given purity
(see the denoising page of the documentation), so it warns when the
data say they were denoised.
"""

import warnings

from cnnfind.exceptions import CNNFindWarning

__all__ = []

#: The word that marks a denoised image in its ``HISTORY``.
_DENOISED_MARK = 'N2VDenoiser'


def _denoised_history(version, model_name, source=None):
    """The ``HISTORY`` text written with a denoised image."""
    text = f'cnnfind {version} {_DENOISED_MARK}, model {model_name}'
    return text if source is None else f'{text}, from {source}'


def _history(meta):
    """The ``HISTORY`` entries of a FITS header or a metadata mapping."""
    if meta is None:
        return []
    try:
        entries = meta['HISTORY']
    except (KeyError, TypeError, IndexError):
        return []
    if isinstance(entries, str):
        return [entries]
    try:
        return [str(e) for e in entries]
    except TypeError:
        return [str(entries)]


def _was_denoised(meta):
    """
    `True` if the ``HISTORY`` of ``meta`` (a `~astropy.io.fits.Header`
    or a mapping) says that cnnfind's denoiser made the image.
    """
    return any('cnnfind' in e and _DENOISED_MARK in e for e in _history(meta))


def _warn_if_denoised(meta, stacklevel=3):
    """Warn (`CNNFindWarning`) if ``meta`` marks a denoised image."""
    if _was_denoised(meta):
        msg = ('the image\'s HISTORY says it was denoised by cnnfind\'s '
               'N2VDenoiser; CNNStarFinder was trained on raw images and '
               'finds fewer faint stars at a given purity on denoised ones '
               '(on the denoising benchmark 0.15 against 0.62 of the SNR '
               '3-10 stars at purity 0.9): run it on the raw image')
        warnings.warn(msg, CNNFindWarning, stacklevel=stacklevel)
        return True
    return False


def _mark_denoised(meta, model_name):
    """
    ``meta`` (a `~astropy.io.fits.Header` or a mapping, modified in place)
    with the denoiser's ``HISTORY`` line added; a new `dict` when ``meta``
    is `None` or not a mapping.
    """
    from cnnfind import __version__

    text = _denoised_history(__version__, model_name)
    if hasattr(meta, 'add_history'):  # a FITS header
        meta.add_history(text)
        return meta
    if not hasattr(meta, 'keys'):
        meta = {}
    entries = _history(meta)
    # One entry stays a string, which a FITS header built from the
    # mapping (``CCDData.write``) accepts; more go in a list.
    value = [*entries, text] if entries else text
    try:
        meta['HISTORY'] = value
    except TypeError:  # an immutable mapping
        meta = {**meta, 'HISTORY': value}
    return meta
