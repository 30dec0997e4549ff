r"""Post-training weight quantization of a trained model, layer by layer: COMQ, GPTQ or RTN.

:func:`quantize` returns a copy of the model in which every Linear and Conv2d (the projections
inside attention and MLP blocks included) is replaced by a
:class:`~nograd.layers.QuantizedLinear` / :class:`~nograd.layers.QuantizedConv2d` holding
``bits``-bit packed codes, and a per-layer report.

Layers are quantized in execution order; each is calibrated on its inputs in the **already
quantized** model (the earlier layers already replaced), as COMQ (Zhang et al. 2024, §3) and GPTQ
(Frantar et al. 2023, §3, "sequential" quantization) both do. The calibration input of a layer is
the matrix :math:`X` ``(m, d)`` of the rows it multiplies — the last axis of a Linear's input over
every sample and token, the im2col columns of a Conv2d's input over every sample and position —
and all three methods see it only through :math:`G = X^\top X` (accumulated in float64 over
batches), so memory is ``O(d²)`` per layer whatever the calibration size. The report's
reconstruction error is :math:`\|XW^\top - XQ^\top\|_F^2 / \|XW^\top\|_F^2` on that same
:math:`X` (the bias cancels), computed from :math:`G`.
"""
from __future__ import annotations

import copy
import sys
import time

import numpy as np

from ..core.checks import as_rng, check_array, check_int
from ..core.module import Module, dotted
from ..layers.conv import Conv2d
from ..layers.linear import Linear
from ..layers.quantized import QuantizedConv2d, QuantizedLinear
from .comq import ORDERS, comq
from .gptq import gptq
from .grid import check_bits, check_granularity, dequantize, recon_error
from .rtn import rtn

__all__ = ["quantize", "METHODS", "quantizable_layers"]

METHODS = ("comq", "gptq", "rtn")


class _Stop(Exception):
    """Raised by a tap once it has its layer's input: the rest of the forward pass is not needed."""


class _Tap(Module):
    """Stands in for a layer during calibration: records the input, then stops the forward pass."""

    def __init__(self):
        super().__init__()
        self.seen = None

    def forward(self, x, *, train=False, rng=None, params=None):
        self.seen = x
        raise _Stop


def quantizable_layers(model) -> list[str]:
    """Dotted names of the leaves :func:`quantize` replaces by default: every Linear and every
    Conv2d, in execution order (the order of :meth:`~nograd.core.module.Module.leaves`)."""
    return [name for name, m in model.leaves() if type(m) in (Linear, Conv2d)]


def _parents(model) -> dict:
    """dotted child name -> (parent module, key in its children)."""
    out = {}
    for name, m in model.modules():
        for key in m._children:
            out[dotted(name, key)] = (m, key)
    return out


def _check_layer(name, m):
    if type(m) is Linear:
        return
    if type(m) is Conv2d:
        if m.groups != 1:
            raise ValueError(f"layers: {name!r} is a Conv2d with groups={m.groups}; only groups=1 "
                             f"convolutions are supported")
        return
    raise ValueError(f"layers: {name!r} is a {type(m).__name__}; quantize supports Linear and "
                     f"Conv2d layers (see quantizable_layers(model))")


def _gram(layer, x):
    """``XᵀX`` (float64) of the rows ``layer`` multiplies for the batch input ``x``, and their count."""
    if isinstance(layer, Conv2d):
        _, _, OH, OW = layer.output_shape(x.shape)
        cols = layer._im2col(x, OH, OW)                      # (N, C·KH·KW, OH·OW)
        X = cols.transpose(1, 0, 2).reshape(cols.shape[1], -1).astype(np.float64)
        return X @ X.T, X.shape[1]
    X = x.reshape(-1, layer.in_features).astype(np.float64)
    return X.T @ X, X.shape[0]


def _calibrate(qmodel, parent, key, layer, calib_x, batch_size):
    """Run ``qmodel`` on ``calib_x`` up to ``layer`` and return ``(G, rows)``."""
    tap = _Tap()
    parent._children[key] = tap
    G, count = None, 0
    try:
        for a in range(0, len(calib_x), batch_size):
            try:
                qmodel.forward(calib_x[a:a + batch_size])
            except _Stop:
                pass
            if tap.seen is None:
                raise ValueError(f"layers: the forward pass of the model never reached {key!r}")
            g, m = _gram(layer, tap.seen)
            G = g if G is None else G + g
            count += m
            tap.seen = None
    finally:
        parent._children[key] = layer
    return G, count


def _replacement(layer, codes, scale, offset, bits, granularity):
    """The quantized layer for ``layer`` with the given codes, scales and offsets."""
    dt = layer.params["weight"].dtype
    bias = "bias" in layer.params
    if isinstance(layer, Conv2d):
        q = QuantizedConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                            layer.padding, layer.dilation, bits=bits, bias=bias,
                            granularity=granularity, dtype=dt)
    else:
        q = QuantizedLinear(layer.in_features, layer.out_features, bits=bits, bias=bias,
                            granularity=granularity, dtype=dt)
    return q.load_codes(codes, scale, offset, layer.params["bias"] if bias else None)


def _check_calib(model, calib_x):
    if calib_x is None:
        raise ValueError("calib_x is needed: COMQ and GPTQ calibrate on the layers' inputs, and the "
                         "reconstruction error of every method is measured on them")
    check_array(calib_x, "calib_x")
    try:
        model(calib_x[:1])
    except (ValueError, TypeError) as e:
        raise ValueError(f"calib_x has samples of shape {calib_x.shape[1:]}, which the model "
                         f"refuses: {e}") from None


def quantize(model, calib_x, *, method: str = "comq", bits: int = 4, granularity: str = "channel",
             sweeps: int = 4, order: str = "greedy", shrink: float = 1.0, layers=None, calib_size=None,
             batch_size: int = 256, rng=None, damp: float = 0.01, block: int = 128,
             engine: str = "auto", progress=False):
    r"""Quantize the weights of ``model`` to ``bits`` bits; returns ``(quantized_copy, report)``.

    Parameters
    ----------
    model : a trained nograd Module (left untouched; the copy is independent).
    calib_x : calibration inputs ``(N, ...)``, float, finite, shaped like the model's input (e.g. a
        few hundred training samples; no labels are needed).
    method : ``"comq"`` (:func:`~nograd.compress.comq.comq`, Zhang et al. 2024),
        ``"gptq"`` (:func:`~nograd.compress.gptq.gptq`, Frantar et al. 2023, Algorithm 1) or
        ``"rtn"`` (round to nearest, :func:`~nograd.compress.rtn.rtn`).
    bits : 2 … 8; granularity : ``"channel"`` (a scale per output channel) or ``"layer"``.
    sweeps, order, shrink, engine : COMQ's passes over the codes, update order (``"greedy"`` by
        :math:`|w_i|\,\|x_i\|`, or ``"cyclic"``), initial-grid shrink factor (1: the min–max
        grid of GPTQ and RTN; the authors' 2-bit command uses 0.65) and kernel (see
        :func:`~nograd.compress.comq.comq`).
    damp, block : GPTQ's dampening (fraction of the mean Hessian diagonal) and lazy-batch width.
    layers : dotted names of the leaves to quantize (default: :func:`quantizable_layers`); a name
        of another kind of layer raises ``ValueError``.
    calib_size, rng : use ``calib_size`` samples of ``calib_x`` drawn without replacement with
        ``rng`` (a Generator or int seed) instead of all of them.
    batch_size : samples per forward pass while calibrating.
    progress : ``True`` writes one line per layer to stderr; a callable receives each layer's
        report entry instead.

    Returns
    -------
    ``(qmodel, report)``: ``report`` is a dict with ``method, bits, granularity, calib_samples``,
    ``layers`` — one dict per quantized layer: ``name, type, shape (n, d), rows`` (the
    calibration rows :math:`m`), ``recon_error``, ``scale`` (the mean scale), ``seconds`` (the
    method's own time on the layer) and ``calib_seconds`` (running the model up to it) — and the
    totals ``recon_error`` (mean over layers), ``seconds``, ``calib_seconds``.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a nograd Module, got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    bits = check_bits(bits)
    check_granularity(granularity)
    sweeps = check_int(sweeps, "sweeps", low=1)
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if not (isinstance(shrink, (int, float)) and 0 < shrink <= 1):
        raise ValueError(f"shrink must be a number in (0, 1], got {shrink!r}")
    batch_size = check_int(batch_size, "batch_size", low=1)
    _check_calib(model, calib_x)
    if calib_size is not None:
        calib_size = check_int(calib_size, "calib_size", low=1, high=len(calib_x))
        calib_x = calib_x[np.sort(as_rng(rng).choice(len(calib_x), calib_size, replace=False))]
    names = quantizable_layers(model) if layers is None else list(layers)
    leaves = dict(model.leaves())
    for name in names:
        if name not in leaves:
            raise ValueError(f"layers: the model has no layer {name!r}; its Linear and Conv2d "
                             f"layers are {quantizable_layers(model)}")
        _check_layer(name, leaves[name])
    if not names:
        raise ValueError(f"the model has no Linear or Conv2d layer to quantize "
                         f"({type(model).__name__})")

    qmodel = copy.deepcopy(model)
    parents = _parents(qmodel)
    entries = []
    for name in names:
        parent, key = parents[name]
        layer = parent._children[key]
        t0 = time.perf_counter()
        G, count = _calibrate(qmodel, parent, key, layer, calib_x, batch_size)
        t1 = time.perf_counter()
        W = layer.params["weight"].reshape(layer.params["weight"].shape[0], -1).astype(np.float64)
        if method == "comq":
            codes, scale, offset = comq(W, G, bits, granularity, sweeps=sweeps, order=order,
                                        shrink=shrink, engine=engine)
        elif method == "gptq":
            codes, scale, offset = gptq(W, G, bits, granularity, block=block, damp=damp)
        else:
            codes, scale, offset = rtn(W, bits, granularity)
        t2 = time.perf_counter()
        q = _replacement(layer, codes, scale, offset, bits, granularity)
        parent._children[key] = q
        Q = dequantize(q.codes(), q.params["scale"], q._buffers["offset"])
        entry = {"name": name, "type": type(layer).__name__, "shape": tuple(W.shape), "rows": count,
                 "recon_error": recon_error(W, Q, G), "scale": float(np.mean(q.params["scale"])),
                 "seconds": t2 - t1, "calib_seconds": t1 - t0}
        entries.append(entry)
        if callable(progress):
            progress(entry)
        elif progress:
            sys.stderr.write(f"quantize {method} {bits}-bit: {name} {entry['type']} {W.shape} "
                             f"error {entry['recon_error']:.4g} in {entry['seconds']:.2f}s\n")
    report = {"method": method, "bits": bits, "granularity": granularity,
              "calib_samples": int(len(calib_x)), "layers": entries,
              "recon_error": float(np.mean([e["recon_error"] for e in entries])),
              "seconds": float(sum(e["seconds"] for e in entries)),
              "calib_seconds": float(sum(e["calib_seconds"] for e in entries))}
    return qmodel, report

