"""A bridge to PyTorch: run an adamant model as a ``torch.nn.Module`` (``import adamant.torch``).

``adamant.torch.Module(model, domain="adv")`` is a module whose forward runs adamant's inference
through one BN domain and whose backward returns adamant's input gradient (a
``torch.autograd.Function`` over :meth:`adamant.Model.predict` and :meth:`adamant.Model.vjp`), so
any PyTorch attack or evaluation library (torchattacks, AutoAttack, ART's ``PyTorchClassifier``)
runs against an adamant model::

    import adamant, adamant.torch, torchattacks
    m = adamant.load({"clean": "mbn_resnet8.clean.onnx", "adv": "mbn_resnet8.adv.onnx"})
    net = adamant.torch.Module(m, domain="adv")
    x_adv = torchattacks.PGD(net, eps=8/255, alpha=2/255, steps=10)(x, y)   # x: float (N, 3, 32, 32) in [0, 1]
    aa = torchattacks.AutoAttack(net, norm="Linf", eps=8/255, version="standard", n_classes=10)

Semantics:

* Inputs are float tensors ``(N, C, H, W)`` (or one ``(C, H, W)`` image) in the model's pixel
  space, on any device: they are copied to the CPU as float32 for adamant, and the logits (and
  input gradients) come back on the input's device and dtype. Integer tensors are rejected.
* BatchNorm always runs in inference mode with the chosen domain's statistics: ``train()`` /
  ``eval()`` change nothing, and the module has no trainable parameters (gradients flow to the
  input only). One zero-size buffer-like parameter tells libraries the module's device (CPU).
* The backward pass is a vector-Jacobian product of the logits (``adm_vjp``): the gradient of
  any function of the logits, through the same domain, with one forward and one backward pass
  (the forward is recomputed: adamant keeps no activations between calls).

PyTorch is imported only when this module is (``import adamant`` never imports it).
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from ._errors import InvalidArgument
from ._model import Domain, Model, load

__all__ = ["Module", "AdamantFunction"]


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """A float32 C-contiguous CPU copy (or view) of t's data."""
    return np.ascontiguousarray(t.detach().to(device="cpu", dtype=torch.float32).numpy())


class AdamantFunction(torch.autograd.Function):
    """``logits = AdamantFunction.apply(x, model, domain, batch_size)``, differentiable in x."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, model: Model, domain: Domain,  # type: ignore[override]
                batch_size: Optional[int] = None) -> torch.Tensor:
        if not (x.is_floating_point()):
            raise InvalidArgument("adamant.torch.Module takes float images in the model's pixel range, got a %s "
                                  "tensor (convert and scale integer images first, e.g. x.float() / 255)" % x.dtype)
        logits = model.predict(_to_numpy(x), domain=domain, batch_size=batch_size)
        ctx.save_for_backward(x)
        ctx.model, ctx.domain, ctx.batch_size = model, domain, batch_size
        return torch.from_numpy(logits).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_logits: torch.Tensor  # type: ignore[override]
                 ) -> Tuple[Optional[torch.Tensor], None, None, None]:
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        g = ctx.model.vjp(_to_numpy(x), _to_numpy(grad_logits).reshape(-1, ctx.model.num_classes),
                          domain=ctx.domain, batch_size=ctx.batch_size)
        return torch.from_numpy(np.asarray(g)).to(device=x.device, dtype=x.dtype), None, None, None


class Module(torch.nn.Module):
    """An adamant model as a ``torch.nn.Module``: forward = logits through ``domain``.

    Args:
        model: an :class:`adamant.Model`, or what :func:`adamant.load` takes (a path, a
            ``{domain: path}`` dict, bytes).
        domain: the BN domain to run (name or index; None = the model's default domain).
        batch_size: run adamant in chunks of at most this many images (None = whole batches).
        **load_kwargs: passed to :func:`adamant.load` when ``model`` is not a Model yet
            (``mean``, ``std``, ``pixel_range``, ``default_domain``).
    """

    def __init__(self, model: Union[Model, str, "os.PathLike[str]", Mapping[str, Any], bytes],
                 domain: Domain = None, batch_size: Optional[int] = None, **load_kwargs: Any) -> None:
        super().__init__()
        if not isinstance(model, Model):
            model = load(model, **load_kwargs)  # type: ignore[arg-type]
        elif load_kwargs:
            raise InvalidArgument("load options (%s) apply only when model is a path, not a loaded Model"
                                  % ", ".join(sorted(load_kwargs)))
        self.model = model
        self.domain_index = model.domain_index(domain)
        if not 0 <= self.domain_index < len(model.domains):
            raise InvalidArgument("domain index %r is out of range; the model has %s" % (domain, model.domains))
        self.domain = model.domains[self.domain_index]
        self.batch_size = batch_size
        # No trainable weights (adamant owns them); this empty parameter only tells libraries
        # (torchattacks, ART) which device the module lives on.
        self._device_anchor = torch.nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of float images ``(N, C, H, W)`` (``(1, K)`` for one ``(C, H, W)``)."""
        if not isinstance(x, torch.Tensor):
            raise InvalidArgument("adamant.torch.Module takes a torch.Tensor, got %s" % type(x).__name__)
        return AdamantFunction.apply(x, self.model, self.domain_index, self.batch_size)

    def extra_repr(self) -> str:
        return "domain=%r, input_shape=%s, num_classes=%d" % (self.domain, self.model.input_shape,
                                                              self.model.num_classes)
