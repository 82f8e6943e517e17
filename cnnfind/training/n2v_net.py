"""
The Noise2Void network (torch): a small two-level U-Net with the N2V2
changes that remove checkerboard artefacts. Imported only for training.
"""

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ['N2VNet']


class _BlurPool(nn.Module):
    """Anti-aliased down-sampling: a fixed [1 2 1]^2 blur, then stride 2."""

    def __init__(self, channels):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :]) / 16.0
        self.register_buffer('kernel', k.expand(channels, 1, 3, 3).clone())
        self.channels = channels

    def forward(self, x):
        return F.conv2d(x, self.kernel, stride=2, padding=1,
                        groups=self.channels)


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.LeakyReLU(0.1),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.LeakyReLU(0.1))


class N2VNet(nn.Module):
    """
    Blind-spot denoising U-Net for `~cnnfind.denoise.N2VDenoiser`.

    Two down-sampling levels by blur-pooling (N2V2: no max-pooling
    aliasing), bilinear up-sampling, and skip connections only below the
    top level (N2V2: the full-resolution skip, which lets the network
    copy pixel-scale patterns into its output, is removed).

    Inputs: ``x`` (N, 2, H, W), the transformed image and a validity
    channel, with H and W multiples of 4. Output (N, 2, H, W): the
    predicted mean of each pixel from its neighbourhood and the log of
    the predicted variance of the pixel around that mean, both in the
    transformed space.
    """

    #: Spatial size multiple required by the down-sampling.
    stride = 4

    def __init__(self, channels=(24, 32, 48)):
        super().__init__()
        c0, c1, c2 = channels
        self.enc0 = _block(2, c0)
        self.pool0 = _BlurPool(c0)
        self.enc1 = _block(c0, c1)
        self.pool1 = _BlurPool(c1)
        self.mid = _block(c1, c2)
        self.dec1 = _block(c2 + c1, c1)
        self.dec0 = _block(c1, c0)
        self.head = nn.Conv2d(c0, 2, 1)

    def forward(self, x):
        a = self.enc0(x)
        b = self.enc1(self.pool0(a))
        c = self.mid(self.pool1(b))
        u = F.interpolate(c, scale_factor=2.0, mode='bilinear',
                          align_corners=False)
        u = self.dec1(torch.cat([u, b], dim=1))
        u = F.interpolate(u, scale_factor=2.0, mode='bilinear',
                          align_corners=False)
        return self.head(self.dec0(u))
