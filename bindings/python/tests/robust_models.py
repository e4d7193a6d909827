"""PyTorch definitions of the robust-ML architectures whose ONNX exports adamant must run
(test_model_ops.py, benchmarks/nonlocal_bench.py): the feature-denoising non-local block of
Xie et al. 2019 (facebookresearch/ImageNet-Adversarial-Training, `denoising` in resnet_model.py,
re-expressed in PyTorch), a ResNeXt bottleneck (group = 32), Wide-ResNet-28-10 (Zagoruyko &
Komodakis, as in most published robust CIFAR-10 models) and small networks exercising Pad,
AveragePool, Concat, Reshape/Transpose, MatMul, Softmax and Dropout. torch is imported by the
callers; every reshape uses -1 for the batch, so the exports run at any batch size."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def randomize_bn(module, seed=0):
    """Random BN statistics and affine parameters (a zero-init BN would hide the branch it ends)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) * 0.5 + 0.5
            m.bias.data = torch.randn(c, generator=g) * 0.1
            m.running_mean.data = torch.randn(c, generator=g) * 0.1
            m.running_var.data = torch.rand(c, generator=g) * 0.5 + 0.75
    return module


class Denoise(nn.Module):
    """The non-local denoising block: 1x1 embeddings theta/phi (C/2 channels) or none,
    einsum('niab,nicd->nabcd'), softmax over the H*W positions (scaled by 1/sqrt(C')) or the
    dot-product version divided by H*W (as 'nihw,njhw->nij', 'nij,nihw->njhw' when C <= H*W),
    einsum('nabcd,nicd->niab'), 1x1 conv + BN, residual add."""

    def __init__(self, c, h, w, embed=True, softmax=True):
        super().__init__()
        self.c, self.h, self.w, self.embed, self.softmax = c, h, w, embed, softmax
        if embed:
            self.theta = nn.Conv2d(c, c // 2, 1, bias=False)
            self.phi = nn.Conv2d(c, c // 2, 1, bias=False)
        self.conv = nn.Conv2d(c, c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        h, w = self.h, self.w
        if self.embed:
            theta, phi, g = self.theta(x), self.phi(x), x
        else:
            theta, phi, g = x, x, x
        if self.c > h * w or self.softmax:
            f = torch.einsum("niab,nicd->nabcd", theta, phi)
            if self.softmax:
                f = f.reshape(-1, h * w, h * w)
                f = f / math.sqrt(self.c // 2 if self.embed else self.c)
                f = torch.softmax(f, dim=-1)
                f = f.reshape(-1, h, w, h, w)
            f = torch.einsum("nabcd,nicd->niab", f, g)
        else:
            f = torch.einsum("nihw,njhw->nij", phi, g)
            f = torch.einsum("nij,nihw->njhw", f, theta)
        if not self.softmax:
            f = f / float(h * w)
        return x + self.bn(self.conv(f))


class DenoiseNet(nn.Module):
    """Stem, a non-local block, a strided conv, another non-local block, pooling, classifier."""

    def __init__(self, size=16, c=32, embed=True, softmax=True, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.nl1 = Denoise(c, size, size, embed, softmax)
        self.down = nn.Sequential(nn.Conv2d(c, c, 3, stride=4, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.nl2 = Denoise(c, size // 4, size // 4, embed, softmax)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.nl2(self.down(self.nl1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ResNeXtBottleneck(nn.Module):
    """1x1 -> grouped 3x3 (stride here) -> 1x1, BN after each, projection shortcut when shapes change."""

    def __init__(self, cin, width, cout, stride=1, groups=32):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNeXtNet(nn.Module):
    def __init__(self, classes=10, denoise=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.b1 = ResNeXtBottleneck(64, 128, 256, 1)
        self.b2 = ResNeXtBottleneck(256, 256, 512, 2)
        # ResNeXt-DenoiseAll style: a dot-product block without embedding after a block
        self.nl = Denoise(512, 8, 8, embed=False, softmax=False) if denoise else nn.Identity()
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.nl(self.b2(self.b1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class WideBasic(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3, 1x1 shortcut when needed."""

    def __init__(self, cin, cout, stride, drop):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(drop)
        self.short = None if (stride == 1 and cin == cout) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(self.drop(F.relu(self.bn2(y))))
        return y + (x if self.short is None else self.short(o))


class WideResNet(nn.Module):
    """WRN-depth-k for 32x32 inputs: (depth - 4) / 6 blocks per group, widths 16k, 32k, 64k."""

    def __init__(self, depth=28, k=10, classes=10, drop=0.3):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * k, 32 * k, 64 * k]
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        layers, cin = [], 16
        for g, stride in zip(range(3), (1, 2, 2)):
            for i in range(n):
                layers.append(WideBasic(cin, widths[g + 1], stride if i == 0 else 1, drop))
                cin = widths[g + 1]
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.blocks(self.conv(x))))
        x = F.avg_pool2d(x, 8)
        return self.fc(torch.flatten(x, 1))


class PadPoolConcatNet(nn.Module):
    """Pad (constant, reflect, edge), AveragePool (count_include_pad both ways, ceil_mode), Concat,
    Mul/Div by constants, Dropout."""

    def __init__(self, classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3)
        self.c2 = nn.Conv2d(8, 8, 3)
        self.c3 = nn.Conv2d(8, 8, 3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(24 * 8 * 9, classes)

    def forward(self, x):
        x = F.relu(self.c1(F.pad(x, (1, 2, 0, 1), mode="constant", value=0.5)))
        x = F.relu(self.c2(F.pad(x, (1, 1, 2, 1), mode="reflect")))
        x = self.c3(F.pad(x, (2, 1, 1, 1), mode="replicate")) * 0.75
        a = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False, ceil_mode=True)
        b = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=True, ceil_mode=False)
        c = F.avg_pool2d(x, 2, stride=2, ceil_mode=True) / 1.5
        cat = torch.cat([a, b, c], dim=1)  # all [8, 9] for a 15x15 input (ceil-mode windows at the edges)
        return self.fc(self.drop(torch.flatten(cat, 1)))


class TokenNet(nn.Module):
    """Reshape/Transpose to tokens, Linear (MatMul by a constant), attention by MatMul of two
    activations with Softmax, Mul by a constant, Concat of token features, Dropout."""

    def __init__(self, classes=10, c=16, d=12, size=8):
        super().__init__()
        self.size, self.c, self.d = size, c, d
        self.stem = nn.Conv2d(3, c, 3, stride=2, padding=1)
        self.q, self.k, self.v = nn.Linear(c, d), nn.Linear(c, d), nn.Linear(c, d)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear((d + c) * size * size, classes)

    def forward(self, x):
        t = F.relu(self.stem(x))                       # n, c, s, s
        tok = t.reshape(-1, self.c, self.size * self.size).transpose(1, 2)  # n, s*s, c
        q, k, v = self.q(tok), self.k(tok), self.v(tok)
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d)), dim=-1)
        y = self.drop(torch.matmul(att, v))            # n, s*s, d
        y = torch.cat([y, tok], dim=2).permute(0, 2, 1)  # n, d + c, s*s
        return self.fc(torch.flatten(y, 1))


class Bottleneck(nn.Module):
    """ResNet bottleneck, stride on the 3x3 conv (tensorpack's resnet_bottleneck); with groups > 1
    a ResNeXt bottleneck (grouped 3x3). `cout` defaults to 4 x width."""

    def __init__(self, cin, width, stride, groups=1, cout=None):
        super().__init__()
        cout = cout or width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.cout = cout

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNetDenoise(nn.Module):
    """ImageNet ResNet (blocks per group, e.g. [3, 8, 36, 3] for ResNet-152) with a feature-denoising
    block after each group (ResNet-152-Denoise: embedded, softmax) or, with `denoise_all`, after
    every block (ResNeXt-DenoiseAll: no embedding, dot product), for 224x224 inputs. With
    groups > 1 the bottlenecks are ResNeXt's: 3x3 convs of `width` x 2^g channels in `groups`
    groups, 256 x 2^g outputs (32x4d: width 128; 32x8d: width 256)."""

    def __init__(self, blocks=(3, 8, 36, 3), denoise=True, embed=True, softmax=True, classes=1000, size=224,
                 groups=1, width=64, denoise_all=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        layers, cin, s = [], 64, size // 4
        for g, n in enumerate(blocks):
            if g > 0:
                s //= 2
            for i in range(n):
                stride = 2 if (i == 0 and g > 0) else 1
                if groups == 1:
                    b = Bottleneck(cin, width * 2 ** g, stride)
                else:
                    b = Bottleneck(cin, width * 2 ** g, stride, groups=groups, cout=256 * 2 ** g)
                layers.append(b)
                cin = b.cout
                if denoise and denoise_all:
                    layers.append(Denoise(cin, s, s, embed, softmax))
            if denoise and not denoise_all:
                layers.append(Denoise(cin, s, s, embed, softmax))
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1), 1))


class ShapeViewNet(nn.Module):
    """Sizes read from tensors, as much PyTorch code writes them: `n, c, h, w = y.shape`,
    `reshape(n, c, h * w)`, `x.view(x.size(0), -1)` (exported as Shape -> Gather -> Mul ->
    Unsqueeze -> Concat -> Reshape, folded by adamant at load; the batch stays dynamic)."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, classes)

    def forward(self, x):
        y = F.relu(self.conv(x))
        n, c, h, w = y.shape
        t = y.reshape(n, c, h * w).transpose(1, 2)
        a = torch.softmax(torch.matmul(t, t.transpose(1, 2)) / math.sqrt(c), dim=-1)
        y = torch.matmul(a, t).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(y.contiguous().view(y.size(0), -1))
