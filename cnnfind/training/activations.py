"""
Activation (feature) maps of the cnnfind networks: what each layer of a
network responds to for a given input.

Works on the ONNX files themselves, so it needs no torch checkpoint:
the intermediate tensors of the graph (the output of every activation,
and of every convolution or dense layer that is not followed by one) are
exposed as extra graph outputs with the ``onnx`` package and computed
with onnxruntime. The network input is built the way each tool builds
it (CNNStarFinder, N2VDenoiser, PSFStarSelector, GalaxyMorphClassifier),
with the tools' own preparation functions.

From the command line::

    cnnfind activations MODEL IMAGE -o figure.png
"""

import argparse
from collections import OrderedDict
from pathlib import Path

import numpy as np

from cnnfind.runtime.normalize import robust_sky_noise, valid_pixel_mask
from cnnfind.runtime.registry import MODELS_DIR, list_models

__all__ = ['TOOLS', 'network_input', 'feature_maps', 'plot_feature_maps',
           'add_arguments', 'run']

#: The tools whose network input `network_input` can build.
TOOLS = ('starfinder', 'n2v', 'psfstars', 'galaxymorph')

#: Operators whose output is a layer's (non-linear) activation.
_ACTIVATIONS = {'Relu', 'LeakyRelu', 'PRelu', 'Elu', 'Selu', 'Celu',
                'Sigmoid', 'Tanh', 'Gelu', 'Softplus', 'Softsign',
                'HardSigmoid', 'HardSwish', 'Mish', 'Silu', 'Swish',
                'Softmax', 'LogSoftmax'}
#: Linear layers, shown when no activation follows them.
_LINEAR = {'Conv', 'ConvTranspose', 'Gemm', 'MatMul'}


def _model_path(model):
    """Path of a bundled model name or of a user's ``.onnx`` file."""
    path = Path(model)
    if path.suffix == '.onnx':
        if not path.is_file():
            msg = f'model file {str(path)!r} does not exist'
            raise FileNotFoundError(msg)
        return path
    if str(model) not in list_models():
        msg = (f'unknown model {model!r}: give the path of an .onnx file or '
               f'one of the bundled models {list_models()}')
        raise ValueError(msg)
    return MODELS_DIR / f'{model}.onnx'


def _signature(path):
    """``[(name, rank, channels)]`` of a model's inputs."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    out = []
    for vi in graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        ch = dims[1].dim_value if len(dims) > 1 and dims[1].HasField(
            'dim_value') else None
        out.append((vi.name, len(dims), ch))
    return out


def _tool_of(model):
    """Which tool's input preparation fits ``model`` (or `None`)."""
    if str(model) in TOOLS:
        return str(model)
    path = _model_path(model)
    card_path = path.with_suffix('.json')
    if card_path.is_file():
        import json
        card = json.loads(card_path.read_text())
        for name in (card.get('name'),
                     (card.get('fine_tuned_from') or {}).get('name')):
            if name in TOOLS:
                return name
    sig = _signature(path)
    for tool in TOOLS:
        ref = _signature(MODELS_DIR / f'{tool}.onnx')
        if [(n, r) for n, r, _ in sig] == [(n, r) for n, r, _ in ref] and (
                sig[0][2] is None or ref[0][2] is None
                or tool == 'starfinder' or sig[0][2] == ref[0][2]):
            return tool
    return None


# -- inputs ----------------------------------------------------------------
def _pad(arr, multiple):
    """Zero-pad the last two axes of ``arr`` to multiples of ``multiple``."""
    ny, nx = arr.shape[-2:]
    py, px = (-ny) % multiple, (-nx) % multiple
    if not (py or px):
        return arr
    width = [(0, 0)] * (arr.ndim - 2) + [(0, py), (0, px)]
    return np.pad(arr, width)


def _starfinder_feed(model, data, mask, fwhm):
    from cnnfind.detection._background import _LocalBackground
    from cnnfind.detection._input import _network_input
    from cnnfind.detection.finder import CNNStarFinder, _input_channels
    from cnnfind.runtime.session import get_session
    fwhm = 3.0 if fwhm is None else float(fwhm)
    finder = CNNStarFinder(threshold=1.0, fwhm=fwhm, model=model)
    data, valid, _, sky, noise = finder._prepare(data, mask)
    card = finder.model.card
    norm = card['normalization']
    sess = get_session(finder.model, device='cpu')
    inputs = sess.get_inputs()
    # The finder's input: the image minus its background mesh.
    mesh = _LocalBackground(data, valid, sky, noise, fwhm).image(
        (slice(0, data.shape[0]), slice(0, data.shape[1])))
    x = _network_input(data, valid, mesh, noise, norm['asinh_scale'], fwhm,
                       _input_channels(sess))
    x = _pad(x, int(card['size_multiple']))[None]
    f = np.full((1, 1, 1, 1), np.log(fwhm / norm['fwhm_ref']), np.float32)
    return {inputs[0].name: x, inputs[1].name: f}


def _n2v_feed(model, data, mask):
    from cnnfind.denoise._prepare import to_net_space
    from cnnfind.denoise.denoiser import N2VDenoiser
    den = N2VDenoiser(model=model, device='cpu')
    data = np.asarray(data, dtype=np.float32)
    valid = valid_pixel_mask(data, mask)
    sky, noise = robust_sky_noise(data, valid)
    with np.errstate(invalid='ignore'):
        x = (np.where(valid, data, sky) - sky) / noise
    z = np.where(valid, to_net_space(x, den._scale), 0.0)
    inp = _pad(np.stack([z, valid]).astype(np.float32), den._multiple)
    return {den._session.get_inputs()[0].name: inp[None]}


def _psfstars_feed(model, data, mask, fwhm, position):
    from cnnfind.psfstars._features import _prepare_candidates
    from cnnfind.psfstars.selector import PSFStarSelector, _unpack
    from cnnfind.runtime.session import get_session
    sel = PSFStarSelector(fwhm=fwhm, model=model, device='cpu')
    table = sel.select(data, mask, keep_rejected=True)
    if table is None:
        msg = 'no candidate star found for the PSF-star network'
        raise ValueError(msg)
    plain, pmask, _ = _unpack(data, mask)
    valid = valid_pixel_mask(plain, pmask)
    x = np.asarray(table['x_centroid'], float)
    y = np.asarray(table['y_centroid'], float)
    m = _prepare_candidates(plain, valid, table.meta['sky'],
                            table.meta['noise'], x, y, table.meta['fwhm'],
                            half=sel.size // 2, isolation=sel.isolation,
                            flux_ratio=sel.neighbour_flux_ratio)
    if position is None:
        i = 0  # the best (selected first, brightest) candidate
    else:
        i = int(np.argmin(np.hypot(x - position[0], y - position[1])))
    names = [i_.name for i_ in get_session(sel.model,
                                           device='cpu').get_inputs()]
    feed = {names[0]: m['stamps'][i:i + 1], names[1]: m['scalars'][i:i + 1]}
    return feed, table[i]


def _galaxymorph_feed(model, data):
    from cnnfind.morphology._prepare import prepare_cutouts
    from cnnfind.morphology.classifier import GalaxyMorphClassifier
    clf = GalaxyMorphClassifier(model=model, device='cpu')
    arr = np.asarray(data)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3):
        arr = arr[None]
    x, _ = prepare_cutouts(arr, stretch=clf.stretch, crop=clf._crop,
                           size=clf._size)
    from cnnfind.runtime.session import get_session
    name = get_session(clf.model, device='cpu').get_inputs()[0].name
    return {name: x}


def network_input(model, data, *, mask=None, tool=None, fwhm=None,
                  position=None):
    """
    The input a tool gives its network for ``data``.

    Parameters
    ----------
    model : str or path-like
        A bundled model name (``'starfinder'``, ``'n2v'``,
        ``'psfstars'``, ``'galaxymorph'``) or a user's ``.onnx`` file.
    data : array-like
        A 2D image (star finder, denoiser, PSF-star selector), or a
        galaxy cutout ``(H, W)`` / ``(H, W, 3)`` or a stack of them
        (morphology classifier).
    mask : 2D bool array, optional
        Bad pixels.
    tool : str, optional
        Which tool's preparation to use; guessed from the model's card
        or input signature when `None`.
    fwhm : float, optional
        PSF FWHM in pixels (star finder: default 3; PSF-star selector:
        estimated when `None`).
    position : (x, y), optional
        PSF-star selector: the candidate nearest to this position
        (default: the best candidate).

    Returns
    -------
    feed : dict
        Input name to array, ready for `feature_maps`.

    Notes
    -----
    The star finder's input is the whole image in one window (padded to
    the size multiple, no tiling). The denoiser's input is the image in
    the network's space with no blind-spot pixels hidden, so the maps
    show what the network sees around every pixel.
    """
    tool = _tool_of(model) if tool is None else tool
    if tool not in TOOLS:
        msg = (f'cannot tell how to prepare the input of {model!r}: pass '
               f'tool= (one of {TOOLS}) or give the input arrays to '
               'feature_maps directly')
        raise ValueError(msg)
    model = str(_model_path(model)) if Path(str(model)).suffix == '.onnx' \
        else model
    if tool == 'starfinder':
        return _starfinder_feed(model, data, mask, fwhm)
    if tool == 'n2v':
        return _n2v_feed(model, data, mask)
    if tool == 'psfstars':
        return _psfstars_feed(model, data, mask, fwhm, position)[0]
    return _galaxymorph_feed(model, data)


# -- feature maps ----------------------------------------------------------
def _layer_tensors(graph):
    """``[(tensor name, label)]`` of the layers shown, in graph order."""
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    outputs = {o.name for o in graph.output}
    chosen, labels = [], set()
    for k, node in enumerate(graph.node):
        op = node.op_type
        if not node.output or node.output[0] in outputs:
            continue
        out = node.output[0]
        if op in _ACTIVATIONS:
            pass
        elif op in _LINEAR:
            after = consumers.get(out, [])
            if len(after) == 1 and after[0] in _ACTIVATIONS:
                continue  # shown after its activation
        else:
            continue
        parts = [p for p in (node.name or out).split('/') if p]
        label = ' '.join(parts[-2:]) if len(parts) >= 2 else (
            parts[0] if parts else f'{op}_{k}')
        if label in labels:
            label = f'{label} #{k}'
        labels.add(label)
        chosen.append((out, label))
    return chosen


def _session_with_layers(path):
    """An onnxruntime session whose outputs include every layer."""
    import onnx
    import onnxruntime as ort
    proto = onnx.load(str(path))
    layers = _layer_tensors(proto.graph)
    for name, _ in layers:
        proto.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=['CPUExecutionProvider'])
    return sess, layers


def feature_maps(model, feed, *, include_inputs=True):
    """
    Every layer's output for one input.

    Parameters
    ----------
    model : str or path-like
        A bundled model name or the path of an ``.onnx`` file.
    feed : dict or `~numpy.ndarray`
        Input name to array (e.g. from `network_input`), or the array of
        a single-input model.
    include_inputs : bool, optional
        Put the inputs first in the result (labelled ``input <name>``).

    Returns
    -------
    maps : `~collections.OrderedDict`
        Layer label to array, in the order the network computes them:
        ``(N, C, H, W)`` feature maps or ``(N, F)`` features. The
        model's own outputs come last, under their output names, and
        equal what the model computes without the extra outputs.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnfind.training.activations import feature_maps
    >>> x = np.random.default_rng(0).random((1, 3, 64, 64), np.float32)
    >>> maps = feature_maps('galaxymorph', x)
    >>> list(maps)[-1], maps['probabilities'].shape
    ('probabilities', (1, 3))
    """
    path = _model_path(model)
    sess, layers = _session_with_layers(path)
    names = [i.name for i in sess.get_inputs()]
    if not isinstance(feed, dict):
        if len(names) != 1:
            msg = f'the model has inputs {names}: pass a dict'
            raise ValueError(msg)
        feed = {names[0]: feed}
    missing = [n for n in names if n not in feed]
    if missing:
        msg = f'missing input(s) {missing}; the model takes {names}'
        raise ValueError(msg)
    feed = {n: np.ascontiguousarray(feed[n], dtype=np.float32) for n in names}
    out_names = [o.name for o in sess.get_outputs()]
    values = sess.run(None, feed)
    by_name = dict(zip(out_names, values, strict=True))
    maps = OrderedDict()
    if include_inputs:
        for n in names:
            maps[f'input {n}'] = feed[n]
    for name, label in layers:
        maps[label] = by_name[name]
    n_layers = len(out_names) - len(layers)
    for name in out_names[:n_layers]:
        maps[name] = by_name[name]
    return maps


def _scaled(img):
    """A map scaled to its 1-99.5 percentile range (NaN-safe)."""
    img = np.asarray(img, float)
    finite = np.isfinite(img)
    if not finite.any():
        return np.zeros_like(img)
    lo, hi = np.percentile(img[finite], [1.0, 99.5])
    if hi <= lo:  # constant: mid grey
        return np.where(finite, 0.5, 0.0)
    return np.clip((img - lo) / (hi - lo), 0, 1)


def plot_feature_maps(maps, *, max_channels=8, sample=0, layers=None,
                      title=None, cmap='magma', panel_size=1.2,
                      origin='lower', fontsize=8):
    """
    Draw feature maps: one row per layer, its first channels across.

    Parameters
    ----------
    maps : dict
        From `feature_maps`.
    max_channels : int, optional
        Channels shown per layer (the first ones).
    sample : int, optional
        Which item of the batch to show.
    layers : list of str, optional
        Only layers whose label contains one of these strings.
    title : str, optional
        Figure title.
    cmap : str, optional
        Colour map; each panel is scaled to its own 1-99.5 percentiles.
    panel_size : float, optional
        Size of one panel in inches.
    origin : {'lower', 'upper'}, optional
        Where row 0 of the maps goes: 'lower' for FITS images, 'upper'
        for pictures (JPEG cutouts).
    fontsize : float, optional
        Size of the labels (points).

    Returns
    -------
    fig : `matplotlib.figure.Figure`
    """
    from matplotlib.figure import Figure
    items = [(k, np.asarray(v)) for k, v in maps.items()
             if layers is None or any(s in k for s in layers)]
    if not items:
        msg = 'no layer to plot'
        raise ValueError(msg)
    k = max(1, int(max_channels))
    ncol = min(k, max(v.shape[1] if v.ndim >= 2 else 1 for _, v in items))
    left, top = 1.6, (0.7 if title else 0.1)  # inches for labels, title
    width = panel_size * ncol + left + 0.1
    height = panel_size * len(items) + top + 0.1
    fig = Figure(figsize=(width, height))
    grid = fig.add_gridspec(len(items), ncol, left=left / width,
                            right=1 - 0.1 / width, top=1 - top / height,
                            bottom=0.1 / height, wspace=0.05, hspace=0.08)
    for r, (label, arr) in enumerate(items):
        a = arr[sample] if arr.ndim >= 2 else arr
        if a.size <= 8 or a.ndim == 1:  # features or scalars: one strip
            a = a.reshape(-1)
            ax = fig.add_subplot(grid[r, :])
            ax.imshow(_scaled(a)[None], cmap=cmap, aspect='auto', vmin=0, vmax=1,
                      interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if a.size <= 8:
                for j, v in enumerate(a):
                    ax.text(j, 0, f'{v:.3g}', ha='center', va='center',
                            color='cyan', fontsize=fontsize)
            ax.set_ylabel(f'{label}\n({a.size})', rotation=0, ha='right',
                          va='center', fontsize=fontsize)
            continue
        for c in range(ncol):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c < a.shape[0]:
                ax.imshow(_scaled(a[c]), cmap=cmap, origin=origin, vmin=0, vmax=1,
                          interpolation='nearest')
            if c == 0:
                ax.set_ylabel(f'{label}\n({a.shape[0]}x{a.shape[1]}x'
                              f'{a.shape[2]})', rotation=0, ha='right',
                              va='center', fontsize=fontsize)
    if title:
        import textwrap
        width = max(20, int(fig.get_figwidth() * 72 / (0.6 * fontsize + 2)))
        fig.suptitle('\n'.join(textwrap.wrap(title, width)),
                     fontsize=fontsize + 1)
    return fig


# -- command line ----------------------------------------------------------
def add_arguments(parser):
    """Add the ``activations`` arguments to an `argparse` parser."""
    parser.add_argument('model', help='bundled model name (starfinder, n2v, '
                        'psfstars, galaxymorph) or path of an .onnx file')
    parser.add_argument('image', help='FITS image (or a JPEG/PNG cutout for '
                        'the morphology classifier)')
    parser.add_argument('-o', '--output', default='activations.png',
                        help='figure file (default: activations.png)')
    parser.add_argument('--ext', default=None,
                        help='FITS extension of the image')
    parser.add_argument('--tool', choices=TOOLS, default=None,
                        help='input preparation for a user model')
    parser.add_argument('--fwhm', type=float, default=None,
                        help='PSF FWHM in pixels (star finder, PSF stars)')
    parser.add_argument('--position', type=float, nargs=2, default=None,
                        metavar=('X', 'Y'), help='PSF stars: the candidate '
                        'nearest this pixel position')
    parser.add_argument('--cutout', type=int, nargs=4, default=None,
                        metavar=('X0', 'Y0', 'NX', 'NY'),
                        help='use only this part of the image')
    parser.add_argument('--channels', type=int, default=8,
                        help='channels shown per layer (default 8)')
    parser.add_argument('--layers', nargs='+', default=None,
                        help='only layers whose name contains one of these')
    parser.add_argument('--dpi', type=int, default=80)
    return parser


def _read_any(path, ext):
    """A FITS image (2D) or a picture (``(H, W)`` or ``(H, W, 3)`` uint8)."""
    suffix = Path(path).suffix.lower()
    if suffix in ('.jpg', '.jpeg', '.png', '.tif', '.tiff'):
        from PIL import Image
        with Image.open(path) as im:
            arr = np.asarray(im.convert('RGB' if im.mode != 'L' else 'L'))
        return arr, None
    from cnnfind.cli import _parse_ext, read_image
    data, mask, _, _ = read_image(str(path), ext=None if ext is None
                                  else _parse_ext(ext))
    return data, mask


def run(args):
    """Run the ``activations`` command; returns the exit status."""
    data, mask = _read_any(args.image, args.ext)
    if args.cutout:
        x0, y0, nx, ny = args.cutout
        data = data[y0:y0 + ny, x0:x0 + nx]
        mask = None if mask is None else mask[y0:y0 + ny, x0:x0 + nx]
    tool = args.tool or _tool_of(args.model)
    feed = network_input(args.model, data, mask=mask, tool=tool,
                         fwhm=args.fwhm, position=args.position)
    maps = feature_maps(args.model, feed)
    picture = Path(args.image).suffix.lower() in ('.jpg', '.jpeg', '.png',
                                                  '.tif', '.tiff')
    fig = plot_feature_maps(maps, max_channels=args.channels,
                            layers=args.layers,
                            origin='upper' if picture else 'lower',
                            title=f'{Path(str(args.model)).stem} on '
                                  f'{Path(args.image).name}')
    fig.savefig(args.output, dpi=args.dpi)
    n = sum(1 for k in maps if not k.startswith('input '))
    print(f'wrote {args.output} ({n} layers)')
    return 0


def main(argv=None):
    """``python -m cnnfind.training.activations MODEL IMAGE -o fig.png``."""
    parser = argparse.ArgumentParser(
        prog='python -m cnnfind.training.activations',
        description='Plot the feature maps of each layer of a cnnfind '
                    'network for an image.')
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    import sys
    sys.exit(main(sys.argv[1:]))
