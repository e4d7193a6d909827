"""adamant.export.from_torch: dual-BN PyTorch networks (split BN with an auxiliary BN as in AdvProp /
timm's SplitBatchNorm2d, a ModuleList/ModuleDict of BNs chosen by an attribute, two state dicts of
one network) to adamant's single-file format; adamant's logits per domain against PyTorch's
eval-mode logits."""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import BINDINGS

torch = pytest.importorskip("torch")
nn = torch.nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """timm's SplitBatchNorm2d, re-written for the test (timm is not a dependency): the main BN
    normalizes the first split of a training batch, aux_bn[i] the others; eval uses the main BN."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, num_splits=2):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.num_splits = num_splits
        self.aux_bn = nn.ModuleList([nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
                                     for _ in range(num_splits - 1)])

    def forward(self, x):
        if self.training:
            parts = x.split(x.shape[0] // self.num_splits)
            out = [super().forward(parts[0])] + [a(p) for a, p in zip(self.aux_bn, parts[1:])]
            return torch.cat(out, 0)
        return super().forward(x)


class RoutedBN(nn.Module):
    """A ModuleList (or ModuleDict) of BNs; `route` picks the one the forward pass uses."""

    def __init__(self, c, keys=None):
        super().__init__()
        if keys is None:
            self.bns = nn.ModuleList([nn.BatchNorm2d(c), nn.BatchNorm2d(c)])
            self.route = 0
        else:
            self.bns = nn.ModuleDict({k: nn.BatchNorm2d(c) for k in keys})
            self.route = keys[0]
        self.channels = c   # an int attribute that is not the selector

    def forward(self, x):
        return self.bns[self.route](x)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """A small dual-BN-capable ResNet: stem, 3 basic blocks (16, 32, 32 channels), 10 classes."""

    def __init__(self, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = norm(16)
        self.layers = nn.Sequential(Block(16, 16, 1, norm), Block(16, 32, 2, norm), Block(32, 32, 1, norm))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.layers(torch.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def randomize_bn(net, seed):
    """Different random affine parameters and statistics for every BN (each domain its own)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return net


def inputs(n=4):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def compare(m, refs, x):
    assert m.domains == list(refs)
    for name, ref in refs.items():
        with torch.no_grad():
            want = ref.eval()(x).numpy()
        got = m.predict(x.numpy(), domain=name)
        err = float(np.abs(got - want).max())
        print("domain %s: max |adamant - PyTorch| = %.2e (max |logit| %.2f)" % (name, err, float(np.abs(want).max())))
        assert err <= 1e-4, (name, err)
    # the domains really differ
    a, b = (m.predict(x.numpy(), domain=d) for d in list(refs)[:2])
    assert np.abs(a - b).max() > 1e-3


def test_split_batchnorm_aux_bn(adamant_module, tmp_path):
    torch.manual_seed(0)
    net = randomize_bn(ResNet(norm=SplitBatchNorm2d), 1).eval()
    # The reference for "adv": the same network with each aux BN's tensors copied into the main BN.
    adv = copy.deepcopy(net)
    for m in adv.modules():
        if isinstance(m, SplitBatchNorm2d):
            aux = m.aux_bn[0]
            with torch.no_grad():
                for t in ("weight", "bias", "running_mean", "running_var"):
                    getattr(m, t).copy_(getattr(aux, t))
    path = str(tmp_path / "split.onnx")
    m = adamant_module.export.from_torch(net, inputs(1), {"clean": 0, "adv": 1}, path=path)
    compare(m, {"clean": net, "adv": adv}, inputs())
    assert adamant_module.load(path).domains == ["clean", "adv"]
    # the source network is untouched
    assert isinstance(net.bn, SplitBatchNorm2d)
    with pytest.raises(adamant_module.InvalidArgument, match="from 0 \\(the main BN\\) to 1"):
        adamant_module.export.from_torch(net, inputs(1), {"clean": 0, "adv": 2})


@pytest.mark.parametrize("keys", [None, ["clean", "adv"]])
def test_modulelist_moduledict_selected_by_attribute(adamant_module, tmp_path, keys):
    torch.manual_seed(0)
    net = randomize_bn(ResNet(norm=lambda c: RoutedBN(c, keys)), 2).eval()
    sel = [0, 1] if keys is None else keys
    refs = {}
    for name, s in zip(["clean", "adv"], sel):
        r = copy.deepcopy(net)
        for mod in r.modules():
            if isinstance(mod, RoutedBN):
                mod.route = s
        refs[name] = r
    m = adamant_module.export.from_torch(net, inputs(1), {"clean": sel[0], "adv": sel[1]})
    compare(m, refs, inputs())
    # naming the attribute explicitly works too; a wrong name is an error naming it
    m2 = adamant_module.export.from_torch(net, inputs(1), {"clean": sel[0], "adv": sel[1]}, attribute="route")
    assert np.array_equal(m2.predict(inputs().numpy(), domain="adv"), m.predict(inputs().numpy(), domain="adv"))
    with pytest.raises(adamant_module.InvalidArgument, match="'bn_index'"):
        adamant_module.export.from_torch(net, inputs(1), {"clean": sel[0], "adv": sel[1]}, attribute="bn_index")
    with pytest.raises(adamant_module.InvalidArgument, match="is not one of"):
        adamant_module.export.from_torch(net, inputs(1), {"clean": sel[0], "adv": 7 if keys is None else "x"})


def test_two_state_dicts(adamant_module, tmp_path):
    torch.manual_seed(0)
    net = ResNet().eval()
    clean = randomize_bn(copy.deepcopy(net), 3)
    adv = randomize_bn(copy.deepcopy(net), 4)
    m = adamant_module.export.from_torch(net, inputs(1), {"clean": clean.state_dict(), "adv": adv.state_dict()},
                                         default_domain="adv", path=str(tmp_path / "sd.onnx"))
    compare(m, {"clean": clean, "adv": adv}, inputs())
    assert m.default_domain == "adv"
    # Two state dicts that differ outside the BNs are not two domains of one network.
    other = copy.deepcopy(adv)
    with torch.no_grad():
        other.fc.weight.add_(1.0)
    with pytest.raises(adamant_module.DomainError, match="not the same network"):
        adamant_module.export.from_torch(net, inputs(1), {"clean": clean.state_dict(), "adv": other.state_dict()})


def test_callable_domains_and_normalization(adamant_module):
    torch.manual_seed(0)
    net = randomize_bn(ResNet(norm=lambda c: RoutedBN(c)), 5).eval()

    def route(k):
        def f(n):
            for mod in n.modules():
                if isinstance(mod, RoutedBN):
                    mod.route = k
        return f

    m = adamant_module.export.from_torch(net, inputs(1), {"a": route(0), "b": route(1)},
                                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = inputs()
    ref = copy.deepcopy(net)
    for mod in ref.modules():
        if isinstance(mod, RoutedBN):
            mod.route = 1
    with torch.no_grad():
        want = ref((x - 0.5) / 0.25).numpy()
    assert np.abs(m.predict(x.numpy(), domain="b") - want).max() <= 1e-4


def test_errors_for_models_without_bn_domains(adamant_module):
    torch.manual_seed(0)
    net = ResNet().eval()
    # BN fused into the convolutions: no BatchNorm left to carry domains.
    fused = torch.nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                nn.Linear(8, 10)).eval()
    sd = fused.state_dict()
    with pytest.raises(adamant_module.DomainError, match="no BatchNorm layers"):
        adamant_module.export.from_torch(fused, inputs(1), {"clean": sd, "adv": sd})
    # Selectors on a network with plain BNs only.
    with pytest.raises(adamant_module.DomainError, match="no dual-BN modules"):
        adamant_module.export.from_torch(net, inputs(1), {"clean": 0, "adv": 1})
    # Two domains with the same BN tensors.
    with pytest.raises(adamant_module.DomainError, match="identical BatchNorm"):
        adamant_module.export.from_torch(net, inputs(1), {"clean": net.state_dict(), "adv": net.state_dict()})
    with pytest.raises(adamant_module.InvalidArgument, match="state dict does not fit"):
        adamant_module.export.from_torch(net, inputs(1), {"clean": {"x": torch.zeros(1)}})
    with pytest.raises(adamant_module.InvalidArgument, match="example must be a batch"):
        adamant_module.export.from_torch(net, torch.zeros(3, 16, 16), {"clean": net.state_dict()})


def test_torch_is_imported_only_when_used():
    code = ("import sys; sys.path.insert(0, %r); import adamant, adamant.export; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')" % BINDINGS)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
