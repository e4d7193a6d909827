"""Test helpers for the tensorpack importer: checkpoints with the reference code's variable names
and shapes (random weights), and an independent PyTorch (float64) implementation of the
architectures of facebookresearch/ImageNet-Adversarial-Training, written from the paper and
that code's definition (resnet_model.py, nets.py, adv_model.py), not from adamant's importer.
"""
import math

import numpy as np

BLOCKS = {
    "resnet50": [3, 4, 6, 3],
    "resnet101": [3, 4, 23, 3],
    "resnet152": [3, 8, 36, 3],
    "resnet152-denoise": [3, 8, 36, 3],
    "resnext101-denoiseall": [3, 4, 23, 3],
}


def _arch(arch):
    group, res2 = (32, 8) if arch == "resnext101-denoiseall" else (1, 64)
    return group, res2


def variable_shapes(arch, blocks=None, classes=1000):
    """{name: shape} of every model variable of `arch`, in creation order (HWIO convolutions)."""
    blocks = blocks or BLOCKS[arch]
    group, res2 = _arch(arch)
    factor = res2 * group // 64
    shapes = {}

    def conv(scope, k, cin, cout, g=1):
        shapes[scope + "/W"] = (k, k, cin // g, cout)

    def bn(scope, c):
        for v in ("gamma", "beta", "mean/EMA", "variance/EMA"):
            shapes[scope + "/bn/" + v] = (c,)

    def denoise(scope, c, embed):
        if embed:
            conv(scope + "/embedding_theta", 1, c, c // 2)
            conv(scope + "/embedding_phi", 1, c, c // 2)
        conv(scope + "/conv", 1, c, c)
        bn(scope + "/conv", c)

    conv("conv0", 7, 3, 64)
    bn("conv0", 64)
    cin = 64
    for gi, (n, width) in enumerate(zip(blocks, [64, 128, 256, 512])):
        for bi in range(n):
            s = "group%d/block%d" % (gi, bi)
            inner, cout = width * factor, width * 4
            conv(s + "/conv1", 1, cin, inner)
            bn(s + "/conv1", inner)
            conv(s + "/conv2", 3, inner, inner, group)
            bn(s + "/conv2", inner)
            conv(s + "/conv3", 1, inner, cout)
            bn(s + "/conv3", cout)
            if cin != cout:
                conv(s + "/convshortcut", 1, cin, cout)
                bn(s + "/convshortcut", cout)
            cin = cout
            if arch == "resnext101-denoiseall":
                denoise(s + "/non_local", cout, embed=False)
        if arch == "resnet152-denoise":
            denoise("group%d_denoise" % gi, cin, embed=True)
    shapes["linear/W"] = (2048, classes)
    shapes["linear/b"] = (classes,)
    return shapes


def make_checkpoint(arch, blocks=None, classes=1000, seed=0):
    """Random variables with realistic BN statistics; the last BN of each residual branch and of
    each denoising block gets a small gamma so activations stay bounded at any depth."""
    rng = np.random.RandomState(seed)
    shapes = variable_shapes(arch, blocks, classes)
    nblocks = sum(blocks or BLOCKS[arch])
    out = {}
    for name, shape in shapes.items():
        if name.endswith("/W") and len(shape) == 4:
            fan_in = shape[0] * shape[1] * shape[2]
            v = rng.normal(0, math.sqrt(2.0 / fan_in), shape)
            if "embedding" in name:
                v = rng.normal(0, 0.01, shape)   # the reference code's initializer
        elif name.endswith("/gamma"):
            v = rng.uniform(0.5, 1.5, shape)
            if "/conv3/" in name:
                v *= 1.0 / math.sqrt(nblocks)
            if name.endswith("_denoise/conv/bn/gamma") or "/non_local/" in name:
                v *= 0.1 / math.sqrt(nblocks)   # zero-initialized in the reference code: stays small
        elif name.endswith("/beta") or name.endswith("mean/EMA"):
            v = rng.normal(0, 0.1, shape)
        elif name.endswith("variance/EMA"):
            v = rng.uniform(0.5, 1.5, shape)
        elif name == "linear/W":
            v = rng.normal(0, 1.0 / math.sqrt(2048), shape)
        elif name == "linear/b":
            v = rng.normal(0, 0.1, shape)
        else:
            raise AssertionError(name)
        out[name] = v.astype(np.float32)
    return out


def _same_pad(size, k, s):
    """TensorFlow 'SAME': output ceil(size / s); the odd pixel of padding goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class Reference:
    """The reference architecture in PyTorch float64, from a dict of checkpoint variables."""

    def __init__(self, arch, variables, blocks=None):
        import torch
        self.torch = torch
        self.arch = arch
        self.blocks = blocks or BLOCKS[arch]
        self.group, res2 = _arch(arch)
        self.factor = res2 * self.group // 64
        self.v = {k: torch.from_numpy(np.asarray(a, np.float64)) for k, a in variables.items()}
        self._calibrating = False

    def calibrate(self, x):
        """Sets every BN's mean/EMA and variance/EMA to the statistics of its input on images x (as
        trained running averages would be), layer by layer; returns the updated variables as float32."""
        self._calibrating = True
        try:
            with self.torch.no_grad():
                self.logits(self.torch.from_numpy(np.asarray(x, np.float64)))
        finally:
            self._calibrating = False
        return {k: t.numpy().astype(np.float32) for k, t in self.v.items()}

    def conv(self, x, scope, stride=1, groups=1):
        F = self.torch.nn.functional
        w = self.v[scope + "/W"].permute(3, 2, 0, 1)  # HWIO -> OIHW
        k = w.shape[-1]
        ph = _same_pad(x.shape[2], k, stride)
        pw = _same_pad(x.shape[3], k, stride)
        x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return F.conv2d(x, w, stride=stride, groups=groups)

    def bn(self, x, scope):
        if self._calibrating:
            self.v[scope + "/bn/mean/EMA"] = x.mean(dim=(0, 2, 3))
            self.v[scope + "/bn/variance/EMA"] = x.var(dim=(0, 2, 3), unbiased=False)
        g, b = self.v[scope + "/bn/gamma"], self.v[scope + "/bn/beta"]
        m, var = self.v[scope + "/bn/mean/EMA"], self.v[scope + "/bn/variance/EMA"]
        sh = (1, -1, 1, 1)
        return (x - m.view(sh)) / self.torch.sqrt(var.view(sh) + 1e-5) * g.view(sh) + b.view(sh)

    def non_local(self, l, scope, embed, softmax):
        torch = self.torch
        n_in, H, W = l.shape[1:]
        if embed:
            theta = self.conv(l, scope + "/embedding_theta")
            phi = self.conv(l, scope + "/embedding_phi")
            g = l
        else:
            theta, phi, g = l, l, l
        if n_in > H * W or softmax:
            f = torch.einsum("niab,nicd->nabcd", theta, phi)
            if softmax:
                shape = f.shape
                f = f.reshape(-1, H * W, H * W) / math.sqrt(theta.shape[1])
                f = torch.softmax(f, dim=-1).reshape(shape)
            f = torch.einsum("nabcd,nicd->niab", f, g)
        else:
            f = torch.einsum("nihw,njhw->nij", phi, g)
            f = torch.einsum("nij,nihw->njhw", f, theta)
        if not softmax:
            f = f / (H * W)
        f = f.reshape(l.shape)
        f = self.bn(self.conv(f, scope + "/conv"), scope + "/conv")
        return l + f

    def logits(self, x):
        """x: (N, 3, H, W) BGR pixels in [0, 255] (a float64 tensor)."""
        torch, F = self.torch, self.torch.nn.functional
        x = x * (2.0 / 255) - 1.0  # AdvImageNetModel.image_preprocess
        x = F.relu(self.bn(self.conv(x, "conv0", 2), "conv0"))
        ph, pw = _same_pad(x.shape[2], 3, 2), _same_pad(x.shape[3], 3, 2)
        x = F.max_pool2d(F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=-math.inf), 3, 2)
        cin = 64
        for gi, (n, width) in enumerate(zip(self.blocks, [64, 128, 256, 512])):
            for bi in range(n):
                s = "group%d/block%d" % (gi, bi)
                stride = 2 if bi == 0 and gi > 0 else 1
                cout = width * 4
                h = F.relu(self.bn(self.conv(x, s + "/conv1"), s + "/conv1"))
                h = F.relu(self.bn(self.conv(h, s + "/conv2", stride, self.group), s + "/conv2"))
                h = self.bn(self.conv(h, s + "/conv3"), s + "/conv3")
                sc = x if cin == cout else self.bn(self.conv(x, s + "/convshortcut", stride), s + "/convshortcut")
                x = F.relu(h + sc)
                cin = cout
                if self.arch == "resnext101-denoiseall":
                    x = self.non_local(x, s + "/non_local", embed=False, softmax=False)
            if self.arch == "resnet152-denoise":
                x = self.non_local(x, "group%d_denoise" % gi, embed=True, softmax=True)
        x = x.mean(dim=(2, 3))
        return x @ self.v["linear/W"] + self.v["linear/b"]

    def logits_and_grad(self, x, y):
        """Logits and d(sum of per-sample cross-entropy)/dx for float32 pixels x and labels y."""
        torch = self.torch
        xt = torch.tensor(np.asarray(x, np.float64), requires_grad=True)
        z = self.logits(xt)
        loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(np.asarray(y, np.int64)), reduction="sum")
        loss.backward()
        return z.detach().numpy(), xt.grad.numpy()
