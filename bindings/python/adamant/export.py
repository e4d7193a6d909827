"""Dual-BN PyTorch models to adamant's single-file format (``adamant.export.from_torch``).

PyTorch code keeps two (or more) BatchNorm domains of one network in a few common ways; each
domain here is given as a value saying how to put a copy of the network into that domain:

* an **int selector** for timm-style split BatchNorm (``SplitBatchNorm2d``, AdvProp's auxiliary
  BN: a ``BatchNorm2d`` subclass with a ``ModuleList`` ``aux_bn``): 0 = the main BN, k = ``aux_bn[k-1]``;
* an **int or str selector** for a module holding a ``ModuleList``/``ModuleDict`` of BatchNorms and an
  attribute that picks one (``self.bns[self.route]``): the attribute is set to the value on every
  such module (``attribute=`` names it; by default it is the one attribute of the holder whose value
  indexes the container);
* a **state dict** (a mapping of names to tensors) of the network: loaded (strictly) into a copy;
* a **callable** ``f(net)`` that switches a copy of the network into the domain itself (it may
  return a replacement module).

Every domain's copy is put in eval mode and exported with the TorchScript ONNX exporter
(``do_constant_folding=False``, so BatchNormalization nodes are kept), the per-domain files are
checked to be one network (only BN tensors may differ) and merged into one ONNX file with every
domain (what ``adamant merge`` writes). PyTorch is imported only when this module is used.

Example::

    import adamant.export
    m = adamant.export.from_torch(net, torch.rand(1, 3, 32, 32), {"clean": 0, "adv": 1}, path="net.onnx")
    m.predict(x, domain="adv")
"""
from __future__ import annotations

import copy
import os
import tempfile
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ._errors import DomainError, InvalidArgument
from ._model import Model, load

__all__ = ["from_torch"]


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("adamant.export needs PyTorch: pip install torch") from e
    return torch


def _is_bn(torch, m) -> bool:
    return isinstance(m, torch.nn.modules.batchnorm._BatchNorm)


def _is_split_bn(torch, m) -> bool:
    aux = getattr(m, "aux_bn", None)
    return _is_bn(torch, m) and isinstance(aux, torch.nn.ModuleList) and len(aux) > 0 and all(
        _is_bn(torch, a) for a in aux)


def _bn_container(torch, m):
    """The ModuleList/ModuleDict of >= 2 BatchNorms that `m` holds directly, or None."""
    for child in m.children():
        if isinstance(child, torch.nn.ModuleList) and len(child) >= 2 and all(_is_bn(torch, c) for c in child):
            return child
        if isinstance(child, torch.nn.ModuleDict) and len(child) >= 2 and all(_is_bn(torch, c) for c in child.values()):
            return child
    return None


def _valid_key(container, value, torch) -> bool:
    if isinstance(container, torch.nn.ModuleList):
        return isinstance(value, int) and not isinstance(value, bool) and -len(container) <= value < len(container)
    return isinstance(value, str) and value in container


def _selector_attribute(torch, holder, container, attribute: Optional[str], where: str) -> str:
    if attribute is not None:
        if not hasattr(holder, attribute):
            raise InvalidArgument("%s holds BatchNorms in %s but has no attribute %r (attribute=)"
                                  % (where, type(container).__name__, attribute))
        return attribute
    found = [k for k, v in vars(holder).items()
             if not k.startswith("_") and not isinstance(v, bool) and isinstance(v, (int, str))
             and _valid_key(container, v, torch)]
    if len(found) != 1:
        raise InvalidArgument(
            "%s holds BatchNorms in a %s; pass attribute= to name the attribute that selects one "
            "(candidates: %s)" % (where, type(container).__name__, ", ".join(found) or "none"))
    return found[0]


def _plain_bn(torch, bn):
    """A plain BatchNorm of bn's class family with bn's own parameters and statistics."""
    cls = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}
    dim = 2
    for k, c in cls.items():
        if isinstance(bn, c):
            dim = k
    out = cls[dim](bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats)
    own = {k: v for k, v in bn.state_dict().items() if not k.startswith("aux_bn.")}
    out.load_state_dict(own)
    return out.to(next(iter(own.values())).device) if own else out


def _select(torch, net, value, attribute: Optional[str], name: str) -> int:
    """Switches `net` (a copy) to selector `value`; returns how many dual-BN modules it changed."""
    changed = 0
    # SplitBatchNorm2d: replace each by a plain BN holding the chosen one's tensors.
    for parent_name, parent in list(net.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not _is_split_bn(torch, child):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= len(child.aux_bn):
                raise InvalidArgument(
                    "domain %r: %s.%s is a split BatchNorm with %d auxiliary BN(s): select it with an int "
                    "from 0 (the main BN) to %d, got %r" % (name, parent_name or "<model>", child_name,
                                                          len(child.aux_bn), len(child.aux_bn), value))
            chosen = child if value == 0 else child.aux_bn[value - 1]
            setattr(parent, child_name, _plain_bn(torch, chosen))
            changed += 1
    # A module with a ModuleList/ModuleDict of BNs and a selector attribute.
    for mod_name, mod in net.named_modules():
        container = _bn_container(torch, mod)
        if container is None:
            continue
        where = mod_name or "the model"
        attr = _selector_attribute(torch, mod, container, attribute, where)
        if not _valid_key(container, value, torch):
            keys = (list(container.keys()) if isinstance(container, torch.nn.ModuleDict)
                    else "0..%d" % (len(container) - 1))
            raise InvalidArgument("domain %r: %s selects among %s by %r; %r is not one of %s"
                                  % (name, where, type(container).__name__, attr, value, keys))
        setattr(mod, attr, value)
        changed += 1
    return changed


def _bn_tensors(torch, net) -> List[Any]:
    out = []
    for m in net.modules():
        if _is_bn(torch, m):
            for t in (m.weight, m.bias, m.running_mean, m.running_var):
                if t is not None:
                    out.append(t.detach().cpu().clone())
    return out


def _used_bn_tensors(torch, net, example) -> List[Any]:
    """The BN tensors the forward pass of `net` actually uses, in call order."""
    used: List[Any] = []
    hooks = []

    def hook(mod, inp, out):
        used.extend(t.detach().cpu().clone() for t in (mod.weight, mod.bias, mod.running_mean, mod.running_var)
                    if t is not None)

    for m in net.modules():
        if _is_bn(torch, m):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net(example)
    finally:
        for h in hooks:
            h.remove()
    return used


def from_torch(model: Any, example: Any, domains: Mapping[str, Any], path: Optional[str] = None, *,
               attribute: Optional[str] = None, default_domain: Optional[str] = None,
               mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
               pixel_range: Optional[Tuple[float, float]] = None, opset: int = 13) -> Model:
    """Exports a PyTorch network with several BatchNorm domains as one adamant model.

    Args:
        model: a ``torch.nn.Module`` (left unchanged: each domain uses a deep copy).
        example: an input batch ``(N, C, H, W)`` (tensor or array) fixing the input shape.
        domains: ``{name: how}`` in order (the first is the default unless ``default_domain``),
            ``how`` being an int/str selector, a state dict or a callable (see the module doc).
        path: also write the single-file model there (``Model.save``).
        attribute: the selector attribute of ModuleList/ModuleDict-of-BN modules (default: found).
        default_domain, mean, std, pixel_range: stored in the file, as :func:`adamant.load` takes
            them (mean/std: normalization outside the graph, in pixel units).
        opset: ONNX opset of the export.

    Returns:
        the loaded :class:`adamant.Model` with one BN domain per entry of ``domains``.

    Raises:
        DomainError: the network has no BatchNorm layers (BN fused into the convolutions), the
            selectors change nothing, two domains have identical BN tensors, or the per-domain
            networks differ elsewhere than in their BatchNorms.
        InvalidArgument: a bad selector, state dict, or argument.
    """
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgument("model must be a torch.nn.Module, got %s" % type(model).__name__)
    if not isinstance(domains, Mapping) or len(domains) < 1:
        raise InvalidArgument("domains must be a non-empty mapping {name: selector, state dict or callable}")
    x = example if isinstance(example, torch.Tensor) else torch.as_tensor(example)
    if x.dim() != 4:
        raise InvalidArgument("example must be a batch (N, C, H, W), got shape %s" % (tuple(x.shape),))
    x = x.float()
    if not any(_is_bn(torch, m) for m in model.modules()):
        raise DomainError(
            "the model has no BatchNorm layers (BN fused into the convolutions?), so it cannot carry the %d BN "
            "domains %s; export the network with its BatchNorm modules" % (len(domains), list(domains)))
    nets: Dict[str, Any] = {}
    for name, how in domains.items():
        if not isinstance(name, str) or not name:
            raise InvalidArgument("domain names must be non-empty strings, got %r" % (name,))
        net = copy.deepcopy(model).cpu()
        if callable(how) and not isinstance(how, Mapping):
            ret = how(net)
            if ret is not None:
                if not isinstance(ret, torch.nn.Module):
                    raise InvalidArgument("domain %r: the callable returned %s, not a module" % (name, type(ret).__name__))
                net = ret
        elif isinstance(how, Mapping):
            try:
                net.load_state_dict(how, strict=True)
            except (RuntimeError, KeyError, TypeError) as e:
                raise InvalidArgument("domain %r: the state dict does not fit the model: %s" % (name, e)) from None
        elif isinstance(how, (int, str)) and not isinstance(how, bool):
            if _select(torch, net, how, attribute, name) == 0:
                raise DomainError(
                    "domain %r is given as the selector %r, but the model has no dual-BN modules (a split "
                    "BatchNorm with aux_bn, or a ModuleList/ModuleDict of BatchNorms chosen by an attribute); "
                    "give a state dict or a callable instead" % (name, how))
        else:
            raise InvalidArgument("domain %r: expected an int/str selector, a state dict or a callable, got %s"
                                  % (name, type(how).__name__))
        net.eval()
        if not any(_is_bn(torch, m) for m in net.modules()):
            raise DomainError("domain %r: the network has no BatchNorm layers after switching to it" % name)
        nets[name] = net
    names = list(nets)
    used = {n: _used_bn_tensors(torch, nets[n], x) for n in names}
    if not used[names[0]]:
        raise DomainError("the forward pass uses no BatchNorm layer, so the model cannot carry BN domains")
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            ta, tb = used[names[a]], used[names[b]]
            if len(ta) == len(tb) and all(p.shape == q.shape and torch.equal(p, q) for p, q in zip(ta, tb)):
                raise DomainError("domains %r and %r run with identical BatchNorm parameters and statistics: "
                                  "the selector changed nothing" % (names[a], names[b]))
    with tempfile.TemporaryDirectory(prefix="adamant-export-") as tmp:
        files = {}
        for i, n in enumerate(names):
            f = os.path.join(tmp, "domain%d.onnx" % i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(nets[n], (x,), f, dynamo=False, do_constant_folding=False, opset_version=opset,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            files[n] = f
        merged = load(files, mean=mean, std=std, pixel_range=pixel_range, default_domain=default_domain)
        out = path if path is not None else os.path.join(tmp, "merged.onnx")
        merged.save(out)
        if path is not None:
            return load(path)
        with open(out, "rb") as fh:
            data = fh.read()
    return load(data)
