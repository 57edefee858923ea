"""Architectures that are not a plain timm/torchvision call."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import inception as tv_inception


class CustomCNN(nn.Module):
    """The groups' baseline: five Conv3x3-BN-ReLU-MaxPool blocks 32→512, GAP, 512→256→classes."""

    def __init__(self, num_classes: int, widths=(32, 64, 128, 256, 512), dropout: float = 0.5):
        super().__init__()
        blocks, in_ch = [], 3
        for width in widths:
            blocks.append(nn.Sequential(
                nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                nn.ReLU(inplace=True), nn.MaxPool2d(2)))
            in_ch = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(in_ch, 256), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class C3DSmall(nn.Module):
    """A small C3D for clips (3, frames, H, W): four Conv3d(3×3×3)-BN-ReLU-MaxPool3d blocks 32→256, global
    pool, Linear. The first pool keeps time (1×2×2), so motion between neighbouring frames survives it."""

    def __init__(self, num_classes: int, widths=(32, 64, 128, 256), dropout: float = 0.3):
        super().__init__()
        blocks, in_ch = [], 3
        for i, width in enumerate(widths):
            blocks.append(nn.Sequential(
                nn.Conv3d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm3d(width), nn.ReLU(inplace=True),
                nn.MaxPool3d((1, 2, 2) if i == 0 else 2)))
            in_ch = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_ch, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class VGG16GAP(nn.Module):
    """torchvision VGG16 convolutional base with the groups' light head (GAP instead of 4096-wide FCs)."""

    def __init__(self, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.features = torchvision.models.vgg16(weights=None).features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(512, 256), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def vgg16_gap(num_classes: int) -> nn.Module:
    return VGG16GAP(num_classes)


# ---- InceptionV3 with the pooling of Google's 2015 TensorFlow graph ------------------------
# TF average pooling ignores the zero padding, and the last block max-pools. The offline 2015
# backbone was trained that way, so its features are only reproduced with the same pooling.

def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class TFInceptionA(tv_inception.InceptionA):
    def _forward(self, x):
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(_tf_avg_pool(x))]


class TFInceptionC(tv_inception.InceptionC):
    def _forward(self, x):
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        return [self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(_tf_avg_pool(x))]


class TFInceptionE(tv_inception.InceptionE):
    max_pool = False  # the last block of the 2015 graph max-pools its pooling branch

    def _forward(self, x):
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return [self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)]


# the modules torchvision's Inception3 forward runs in order (AuxLogits branches off after Mixed_6e)
INCEPTION_STAGES = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


class InceptionV3(tv_inception.Inception3):
    """torchvision's Inception3 layout with TF pooling; aux logits are returned in training."""

    def __init__(self, num_classes: int, dropout: float = 0.5):
        blocks = [tv_inception.BasicConv2d, TFInceptionA, tv_inception.InceptionB, TFInceptionC,
                  tv_inception.InceptionD, TFInceptionE, tv_inception.InceptionAux]
        super().__init__(num_classes=num_classes, aux_logits=True, transform_input=False,
                         inception_blocks=blocks, init_weights=True, dropout=dropout)
        self.Mixed_7c.max_pool = True

    def forward(self, x):
        out = super().forward(x)
        # torchvision returns a namedtuple in training; training code unpacks (logits, aux)
        return (out.logits, out.aux_logits) if isinstance(out, tv_inception.InceptionOutputs) else out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 2048-d pooled features (what the 2015 TorchScript backbone returns)."""
        for name in INCEPTION_STAGES:
            x = getattr(self, name)(x)
        return torch.flatten(self.avgpool(x), 1)
