"""
Fully convolutional networks (torch). Imported only for training.
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ['StarNet']


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
        x = F.pixel_unshuffle(x, 2)
        a = self.enc0(F.relu(self.stem(x) + self.fwhm_bias * fwhm))
        b = self.enc1(a)
        c = self.enc2(b)
        u = F.interpolate(self.lat2(c), scale_factor=4.0, mode='nearest')
        u = self.dec1(b + u)
        u = F.interpolate(self.lat1(u), scale_factor=2.0, mode='nearest')
        u = self.dec0(a + u)
        return F.pixel_shuffle(self.head(u), 2)
