"""
Fully convolutional networks (torch). Imported only for training.
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ['StarNet', 'ExportStarNet', 'fold_stem_weight',
           'unfold_stem_weight']


def _conv(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1),
                         nn.ReLU(inplace=True))


class StarNet(nn.Module):
    """
    Centre-heatmap network for CNNStarFinder.

    The input channels (normalised image, validity and, from model
    version 2, the matched-filter SNR) are folded 2x2 into
    channels (pixel unshuffle), so that every convolution runs at half
    resolution or less while the output heatmap keeps full resolution
    (pixel shuffle). A three-level encoder with additive skips gives a
    receptive field of about 90 pixels. The PSF FWHM enters as a scalar
    that shifts the first layer's biases.

    Inputs: ``x`` (N, in_channels, H, W) with H and W multiples of 16, ``fwhm``
    (N, 1, 1, 1) = ``log(fwhm / 3)``. Output: logits (N, 1, H, W).
    """

    #: Spatial size multiple required by the strided layers.
    stride = 16

    def __init__(self, channels=(16, 32, 48), in_channels=2):
        super().__init__()
        c0, c1, c2 = channels
        self.stem = nn.Conv2d(4 * in_channels, c0, 3, 1, 1)
        self.fwhm_bias = nn.Parameter(torch.zeros(1, c0, 1, 1))
        self.enc0 = _conv(c0, c0)
        self.enc1 = nn.Sequential(_conv(c0, c1, 2), _conv(c1, c1))
        self.enc2 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2),
                                  _conv(c2, c2, 2), _conv(c2, c2))
        self.lat2 = nn.Conv2d(c2, c1, 1)
        self.dec1 = _conv(c1, c1)
        self.lat1 = nn.Conv2d(c1, c0, 1)
        self.dec0 = _conv(c0, c0)
        self.head = nn.Conv2d(c0, 4, 1)

    def forward(self, x, fwhm):
        return self._body(self.stem(F.pixel_unshuffle(x, 2)), fwhm)

    def _body(self, s, fwhm):
        """Everything after the stem convolution."""
        a = self.enc0(F.relu(s + self.fwhm_bias * fwhm))
        b = self.enc1(a)
        c = self.enc2(b)
        u = F.interpolate(self.lat2(c), scale_factor=4.0, mode='nearest')
        u = self.dec1(b + u)
        u = F.interpolate(self.lat1(u), scale_factor=2.0, mode='nearest')
        u = self.dec0(a + u)
        return F.pixel_shuffle(self.head(u), 2)


def fold_stem_weight(weight):
    """
    The stem as one full-resolution convolution.

    A 3x3 convolution (padding 1) of the 2x2 pixel-unshuffled input
    equals a 6x6 convolution of stride 2 and padding 2 of the input
    itself: input row ``2 * (Y + dy - 1) + i`` is kernel row
    ``2 * dy + i``. Turns weights of shape ``(c0, 4 * cin, 3, 3)`` into
    ``(c0, cin, 6, 6)``; `unfold_stem_weight` is its inverse.
    """
    c0, c4 = weight.shape[:2]
    w = weight.reshape(c0, c4 // 4, 2, 2, 3, 3)   # (o, c, i, j, dy, dx)
    return w.permute(0, 1, 4, 2, 5, 3).reshape(c0, c4 // 4, 6, 6)


def unfold_stem_weight(weight):
    """Inverse of `fold_stem_weight`: ``(c0, cin, 6, 6)`` to
    ``(c0, 4 * cin, 3, 3)``."""
    c0, cin = weight.shape[:2]
    w = weight.reshape(c0, cin, 3, 2, 3, 2)       # (o, c, dy, i, dx, j)
    return w.permute(0, 1, 3, 5, 2, 4).reshape(c0, 4 * cin, 3, 3)


class ExportStarNet(StarNet):
    """
    A trained `StarNet` in the form written to ONNX: the same function,
    with the pixel unshuffle and the stem folded into one strided
    convolution (`fold_stem_weight`). That saves the 6-D transpose the
    unshuffle becomes in ONNX, about a fifth of the inference time on a
    CPU. The parameter names are those of `StarNet`.
    """

    def __init__(self, net):
        c0, c4 = net.stem.weight.shape[:2]
        super().__init__((c0, net.enc1[0][0].out_channels,
                          net.enc2[0][0].out_channels),
                         in_channels=c4 // 4)
        self.load_state_dict(net.state_dict())
        stem = nn.Conv2d(c4 // 4, c0, 6, 2, 2)
        with torch.no_grad():
            stem.weight.copy_(fold_stem_weight(net.stem.weight))
            stem.bias.copy_(net.stem.bias)
        self.stem = stem

    def forward(self, x, fwhm):
        return self._body(self.stem(x), fwhm)
