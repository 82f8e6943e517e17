"""
Tiled inference whose stitched result equals a single full-image pass.
"""

import numpy as np

__all__ = ['tile_windows', 'run_tiled']


def tile_windows(shape, tile, halo, multiple):
    """
    Core and input windows of a tiling.

    Core windows cover the image without overlap; each input window is
    its core grown by ``halo`` on every side (clipped at the image
    edge). ``tile`` and ``halo`` are rounded up to ``multiple`` so that
    every window starts on the network's stride grid.

    Yields
    ------
    core, window : tuple of slice
        ``(y, x)`` slices of the core and of the input window.
    """
    def up(v):
        return int(-(-max(v, 1) // multiple) * multiple)

    tile, halo = up(tile), up(halo) if halo > 0 else 0
    ny, nx = shape
    for y0 in range(0, ny, tile):
        for x0 in range(0, nx, tile):
            y1, x1 = min(y0 + tile, ny), min(x0 + tile, nx)
            wy0, wx0 = max(y0 - halo, 0), max(x0 - halo, 0)
            wy1, wx1 = min(y1 + halo, ny), min(x1 + halo, nx)
            yield ((slice(y0, y1), slice(x0, x1)),
                   (slice(wy0, wy1), slice(wx0, wx1)))


def _progress_bar(total, enabled, desc):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional
        from astropy.utils.console import ProgressBar
        return ProgressBar(total)
    return tqdm(total=total, desc=desc)


def run_tiled(shape, run_window, *, tile, halo, multiple, progress=False,
              desc='tiles'):
    """
    Apply a fully convolutional model tile by tile.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(ny, nx)``.
    run_window : callable
        ``run_window(window) -> 2D array`` returns the model output for
        the input window (a ``(y, x)`` slice pair) at the window's size.
        It is responsible for padding to ``multiple``; padding always
        falls at the image's far edges, as in a full pass.
    tile, halo, multiple : int
        Core tile size, halo (at least the receptive-field radius) and
        the network's stride multiple.
    progress : bool
        Show a progress bar over tiles.

    Returns
    -------
    out : 2D float32 `~numpy.ndarray`
        The stitched output.
    """
    windows = list(tile_windows(shape, tile, halo, multiple))
    out = np.empty(shape, np.float32)
    bar = _progress_bar(len(windows), progress and len(windows) > 1, desc)
    for core, window in windows:
        res = run_window(window)
        oy = core[0].start - window[0].start
        ox = core[1].start - window[1].start
        ny = core[0].stop - core[0].start
        nx = core[1].stop - core[1].start
        out[core] = res[oy:oy + ny, ox:ox + nx]
        if bar is not None:
            bar.update(1)
    if bar is not None and hasattr(bar, 'close'):
        bar.close()
    return out
