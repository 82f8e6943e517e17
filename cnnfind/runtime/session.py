"""
Lazily created, cached onnxruntime sessions (CPU or CUDA).
"""

import functools

__all__ = ['available_devices', 'get_session']


def available_devices():
    """
    Devices onnxruntime can use here.

    Examples
    --------
    >>> from cnnfind.runtime import available_devices
    >>> 'cpu' in available_devices()
    True
    """
    import onnxruntime as ort
    devices = ['cpu']
    if 'CUDAExecutionProvider' in ort.get_available_providers():
        devices.append('cuda')
    return devices


def _providers(device):
    if device not in ('auto', 'cpu', 'cuda'):
        msg = f"device must be 'auto', 'cpu' or 'cuda', not {device!r}"
        raise ValueError(msg)
    devices = available_devices()
    if device == 'cuda' and 'cuda' not in devices:
        msg = ("device='cuda' was requested but onnxruntime has no CUDA "
               "provider here (install onnxruntime-gpu); use device='cpu'")
        raise RuntimeError(msg)
    if device == 'cuda' or (device == 'auto' and 'cuda' in devices):
        return ('CUDAExecutionProvider', 'CPUExecutionProvider')
    return ('CPUExecutionProvider',)


@functools.lru_cache(maxsize=16)
def _cached_session(path, mtime, providers, n_threads):
    import onnxruntime as ort

    from cnnfind.runtime.registry import ModelError
    opts = ort.SessionOptions()
    if n_threads:
        opts.intra_op_num_threads = int(n_threads)
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(path, sess_options=opts,
                                    providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own error types
        msg = f'cannot load the ONNX model {path!r} (corrupt file?): {exc}'
        raise ModelError(msg) from exc


def get_session(model, *, device='auto', n_threads=None):
    """
    The onnxruntime session of a `~cnnfind.runtime.Model`, created once.

    Parameters
    ----------
    model : `~cnnfind.runtime.Model`
        The model.
    device : {'auto', 'cpu', 'cuda'}
        ``'auto'`` uses CUDA when onnxruntime offers it, else the CPU.
    n_threads : int or `None`
        Intra-op threads (default: onnxruntime's choice, all cores).

    Returns
    -------
    session : `onnxruntime.InferenceSession`
    """
    import os
    path = str(model.path)
    return _cached_session(path, os.path.getmtime(path), _providers(device),
                           n_threads)
