"""
ONNX export with a torch/onnxruntime parity check, and model cards.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from cnnfind.runtime.registry import _sha256

__all__ = ['export_onnx', 'check_parity', 'write_card']


def export_onnx(model, example_inputs, path, *, input_names, output_names,
                dynamic_axes, opset=17):
    """Export ``model`` (in eval mode) to ONNX at ``path``."""
    model = model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(model, tuple(example_inputs), str(path),
                          input_names=list(input_names),
                          output_names=list(output_names),
                          dynamic_axes=dynamic_axes, opset_version=opset,
                          dynamo=False)
    return path


def check_parity(model, path, inputs, *, atol=1e-4):
    """
    Compare torch and onnxruntime outputs on ``inputs``.

    Returns the maximum absolute difference; raises `RuntimeError`
    above ``atol``.
    """
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs,
                                             strict=True)}
    onnx_out = sess.run(None, feed)[0]
    with torch.no_grad():
        torch_out = model.eval()(*inputs).numpy()
    diff = float(np.max(np.abs(onnx_out - torch_out)))
    if diff > atol:
        msg = f'ONNX/torch parity failed: max |diff| = {diff:.3g} > {atol}'
        raise RuntimeError(msg)
    return diff


def write_card(onnx_path, card):
    """
    Write the model card JSON beside ``onnx_path`` (same stem), adding
    the file's SHA-256.
    """
    onnx_path = Path(onnx_path)
    card = dict(card)
    card['sha256'] = _sha256(onnx_path)
    card['file'] = onnx_path.name
    out = onnx_path.with_suffix('.json')
    out.write_text(json.dumps(card, indent=2, sort_keys=False) + '\n')
    return out
