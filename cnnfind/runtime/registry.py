"""
Bundled ONNX models and their model cards.

A model is an ``.onnx`` file plus a JSON card of the same stem (name,
version, input contract, training command and data, metrics, SHA-256).
Bundled models live in ``cnnfind/models``; users may pass the path of
their own ``.onnx`` file, whose card (if any) sits beside it.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ['ModelError', 'Model', 'MODELS_DIR', 'list_models', 'load_model']

#: Folder of the models shipped with cnnfind.
MODELS_DIR = Path(__file__).resolve().parent.parent / 'models'


class ModelError(ValueError):
    """A model file is missing, corrupt or does not meet its contract."""


@dataclass(frozen=True)
class Model:
    """
    An ONNX model file with its card.

    Attributes
    ----------
    path : `~pathlib.Path`
        The ``.onnx`` file.
    card : dict
        The model card.
    """

    path: Path
    card: dict

    @property
    def name(self):
        """The model's name from its card."""
        return self.card.get('name', self.path.stem)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def list_models():
    """
    Names of the bundled models.

    Examples
    --------
    >>> from cnnfind.runtime import list_models
    >>> 'starfinder' in list_models()
    True
    """
    return sorted(p.stem for p in MODELS_DIR.glob('*.onnx'))


def load_model(model, default, *, required_keys=()):
    """
    Resolve a model name or path to a `Model`, checking its card.

    Parameters
    ----------
    model : str, path-like or `None`
        A bundled model name, the path of an ``.onnx`` file, or `None`
        for ``default``.
    default : str
        The bundled model used when ``model`` is `None`; its card is
        also the contract for a user file that has no card of its own.
    required_keys : iterable of str
        Card entries the calling tool needs.

    Returns
    -------
    model : `Model`

    Raises
    ------
    ModelError
        If the file does not exist, its card is unreadable, its SHA-256
        differs from the card's or the card lacks a required entry.
    """
    if model is None:
        model = default
    path = Path(model)
    if path.suffix != '.onnx':
        if str(model) not in list_models():
            msg = (f'unknown model {model!r}: give the path of an .onnx '
                   f'file or one of the bundled models {list_models()}')
            raise ModelError(msg)
        path = MODELS_DIR / f'{model}.onnx'
    if not path.is_file():
        msg = f'model file {str(path)!r} does not exist'
        raise ModelError(msg)
    card_path = path.with_suffix('.json')
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError) as exc:
            msg = f'cannot read the model card {str(card_path)!r}: {exc}'
            raise ModelError(msg) from exc
        expected = card.get('sha256')
        if expected and _sha256(path) != expected:
            msg = (f'model file {str(path)!r} does not match the SHA-256 '
                   f'in its card {card_path.name!r}: the file is corrupt '
                   'or was replaced without its card')
            raise ModelError(msg)
    else:
        # A user's own file follows the contract of the default model.
        base = load_model(default, default)
        card = {k: v for k, v in base.card.items()
                if k not in ('sha256', 'file', 'metrics', 'calibration',
                             'vetting')}
        card['name'] = path.stem
        card['note'] = f'no card found; using the contract of {default!r}'
    missing = [k for k in required_keys if k not in card]
    if missing:
        msg = f'model card for {str(path)!r} lacks {missing}'
        raise ModelError(msg)
    return Model(path=path, card=card)
