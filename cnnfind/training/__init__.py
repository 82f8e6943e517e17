"""
Training side of cnnfind (requires ``pip install cnnfind[train]``).

This is the only part of cnnfind that imports torch. It builds the
training data, trains the networks, exports them to ONNX with a parity
check, calibrates them and writes their model cards. Submodules are
imported on demand, e.g. ``python -m cnnfind.training.starfinder``.
"""
