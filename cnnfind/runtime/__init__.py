"""
The inference layer shared by every cnnfind tool: model registry,
onnxruntime sessions, tiling and normalisation. Never imports torch.
"""

from cnnfind.runtime.normalize import *  # noqa: F401, F403
from cnnfind.runtime.registry import *  # noqa: F401, F403
from cnnfind.runtime.session import *  # noqa: F401, F403
from cnnfind.runtime.tiling import *  # noqa: F401, F403
