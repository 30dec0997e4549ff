r"""Bijectors for normalizing flows: maps ``x -> z`` that also report ``log|det ∂z/∂x|``.

A :class:`Bijector` is a :class:`~nograd.core.module.Module` with three extra maps that carry the
per-sample log-determinant beside the output:

- ``forward_ld(x) -> (z, ld, cache)`` with ``ld (N,)``;
- ``backward_ld(cache, dz, dld) -> (dx, grads)``, the cotangent of ``(z, ld)`` pulled back;
- ``jvp_ld(x, dx, dparams) -> (z, dz, ld, dld)``, the tangent pushed forward;

and ``inverse(z) -> x``. Its plain ``forward``/``backward``/``jvp`` are the ``z`` part alone, so a
bijector is also an ordinary layer (and passes the same gradient checks).

The pieces of the Inverse-Flow of Nagar & Varma (AISTATS 2025, §5), which follows Glow
(Kingma & Dhariwal 2018, §3): :class:`ActNorm`, the inverse of a causal convolution
(:class:`~nograd.layers.InverseConv2d`, used inside :class:`FlowStep`) and
:class:`AffineCoupling`; a :class:`FlowStep` chains the three.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array, check_like, check_positive
from ..core.module import Module, Sequential
from ..layers import Conv2d, InverseConv2d, get_activation


def _per_sample(a):
    """Sum over every axis but the first: ``(N, ...) -> (N,)``."""
    return a.reshape(a.shape[0], -1).sum(axis=1)


class Bijector(Module):
    """Base class: an invertible map ``x -> z`` with its log-determinant (see the module docstring)."""

    def forward_ld(self, x, *, params=None):
        raise NotImplementedError

    def backward_ld(self, cache, dz, dld, *, params=None, need_dx=True):
        raise NotImplementedError

    def jvp_ld(self, x, dx, dparams=None, *, params=None):
        raise NotImplementedError

    def inverse(self, z, *, params=None):
        raise NotImplementedError

    def _check_input(self, x, name="x"):
        check_array(x, name, ndim=4)
        if x.shape[1] != self.channels:
            raise ValueError(f"{name} must have {self.channels} channels in axis 1 (NCHW), "
                             f"got shape {x.shape}")

    # the z part alone: an ordinary layer
    def forward(self, x, *, train=False, rng=None, params=None):
        z, _, cache = self.forward_ld(x, params=params)
        return z, (cache, z.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        c, shape = cache
        check_like(dy, shape, "dy")
        return self.backward_ld(c, dy, np.zeros(shape[0], dy.dtype), params=params, need_dx=need_dx)

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        z, dz, _, _ = self.jvp_ld(x, dx, dparams, params=params)
        return z, dz


class ActNorm(Bijector):
    r"""Per-channel affine normalisation with data-dependent initialisation (Glow §3.1).

    Shapes: ``x (N, C, H, W) -> z``; ``bias (C,)``, ``log_scale (C,)``.

    .. math::
        z = (x + b) \odot e^{s}, \qquad \log|\det| = H W \textstyle\sum_c s_c;\qquad
        \bar x = \bar z e^{s},\; \bar b = \textstyle\sum \bar z e^{s},\;
        \bar s = \textstyle\sum \bar z \odot z + H W \sum_n \overline{\mathrm{ld}}_n.

    :meth:`initialize` sets ``b`` and ``s`` so that ``z`` has zero mean and unit variance per
    channel on a batch (Glow's initialisation).
    """

    def __init__(self, channels, *, dtype=np.float32):
        super().__init__()
        check_positive(channels, "channels", integer=True)
        self.channels = int(channels)
        self._own["bias"] = np.zeros(self.channels, dtype)
        self._own["log_scale"] = np.zeros(self.channels, dtype)

    def extra_repr(self):
        return str(self.channels)

    def initialize(self, x):
        """Zero mean, unit variance per channel on the batch ``x`` (in place; returns self)."""
        self._check_input(x)
        mean = x.mean(axis=(0, 2, 3))
        std = x.std(axis=(0, 2, 3))
        dt = self._own["bias"].dtype
        self._own["bias"][...] = (-mean).astype(dt)
        self._own["log_scale"][...] = (-np.log(std + 1e-6)).astype(dt)
        return self

    def _ps(self, params, dtype):
        p = self._use(params)
        return (p["bias"].astype(dtype)[:, None, None], p["log_scale"].astype(dtype)[:, None, None])

    def forward_ld(self, x, *, params=None):
        self._check_input(x)
        b, s = self._ps(params, x.dtype)
        e = np.exp(s)
        z = (x + b) * e
        N, _, H, W = x.shape
        ld = np.full(N, H * W * s.sum(), dtype=x.dtype)
        return z, ld, (z, e)

    def backward_ld(self, cache, dz, dld, *, params=None, need_dx=True):
        z, e = cache
        check_like(dz, z.shape, "dz")
        check_like(dld, (z.shape[0],), "dld")
        dt = self._own["bias"].dtype
        H, W = z.shape[2:]
        dze = dz * e
        grads = {"bias": dze.sum(axis=(0, 2, 3)).astype(dt),
                 "log_scale": ((dz * z).sum(axis=(0, 2, 3)) + H * W * dld.sum()).astype(dt)}
        return (dze if need_dx else None), grads

    def jvp_ld(self, x, dx, dparams=None, *, params=None):
        z, ld, (_, e) = self.forward_ld(x, params=params)
        dparams = self._tangents(dparams) or {}
        dz = np.zeros_like(z)
        if dx is not None:
            check_like(dx, x.shape, "dx")
            dz += dx * e
        N, _, H, W = x.shape
        dld = np.zeros(N, x.dtype)
        if "bias" in dparams:
            dz += dparams["bias"].astype(x.dtype)[:, None, None] * e
        if "log_scale" in dparams:
            ds = dparams["log_scale"].astype(x.dtype)
            dz += z * ds[:, None, None]
            dld += H * W * ds.sum()
        return z, dz, ld, dld

    def inverse(self, z, *, params=None):
        self._check_input(z, "z")
        b, s = self._ps(params, z.dtype)
        return z * np.exp(-s) - b


class AffineCoupling(Bijector):
    r"""Affine coupling (Dinh et al. 2017, RealNVP §3.3; Glow §3.3, with its sigmoid scale).

    Shapes: ``x (N, C, H, W) -> z``, ``C ≥ 2``. The channels split into a conditioning part
    ``x_a`` (the first ``C//2``, or the last with ``swap``) and the rest ``x_b``; a small CNN
    ``net: x_a -> (t, r)`` (3×3 conv, ``activation``, 1×1 conv, ``activation``, 3×3 conv, the last
    initialised to zero; ``activation`` is ReLU as in Glow, or any name of
    :func:`~nograd.layers.get_activation`) gives the shift and scale:

    .. math::
        z_a = x_a,\quad \sigma = \operatorname{sigmoid}(r + 2),\quad z_b = (x_b + t)\odot\sigma,
        \quad \log|\det| = \textstyle\sum \log\sigma;\\
        \bar x_b = \bar z_b\sigma,\quad \bar t = \bar z_b\sigma,\quad
        \bar r = \bar z_b (x_b + t)\,\sigma(1-\sigma) + \overline{\mathrm{ld}}\,(1-\sigma),\quad
        \bar x_a = \bar z_a + \mathrm{net}^\top(\bar t, \bar r).
    """

    def __init__(self, channels, hidden=32, *, swap=False, activation="relu", rng=None,
                 dtype=np.float32):
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_positive(hidden, "hidden", integer=True)
        if channels < 2:
            raise ValueError(f"channels must be at least 2 for a coupling, got {channels}")
        self.channels, self.hidden, self.swap = int(channels), int(hidden), bool(swap)
        C = self.channels
        self.ca = C // 2
        self.cb = C - self.ca
        last = Conv2d(hidden, 2 * self.cb, 3, padding=1, rng=rng, dtype=dtype)
        last._own["weight"][...] = 0
        self._children["net"] = Sequential(Conv2d(self.ca, hidden, 3, padding=1, rng=rng, dtype=dtype),
                                           get_activation(activation),
                                           Conv2d(hidden, hidden, 1, rng=rng, dtype=dtype),
                                           get_activation(activation), last)

    def extra_repr(self):
        return f"{self.channels}, hidden={self.hidden}, swap={self.swap}"

    def _parts(self, x):
        if self.swap:
            return x[:, self.cb:], x[:, :self.cb]
        return x[:, :self.ca], x[:, self.ca:]

    def _join(self, a, b):
        return np.concatenate((b, a) if self.swap else (a, b), axis=1)

    def _scale(self, out):
        t, r = out[:, :self.cb], out[:, self.cb:]
        u = r + 2
        return t, 1 / (1 + np.exp(-u)), -np.logaddexp(0, -u)       # t, sigmoid(u), log sigmoid(u)

    def forward_ld(self, x, *, params=None):
        self._check_input(x)
        self._check_keys(params)
        xa, xb = self._parts(x)
        out, cnet = self._children["net"].forward(np.ascontiguousarray(xa),
                                                  params=self._split(params, "net"))
        t, sig, logsig = self._scale(out)
        xt = xb + t
        return self._join(xa, xt * sig), _per_sample(logsig), (cnet, xt, sig)

    def backward_ld(self, cache, dz, dld, *, params=None, need_dx=True):
        cnet, xt, sig = cache
        N = xt.shape[0]
        check_like(dz, (N, self.channels) + xt.shape[2:], "dz")
        check_like(dld, (N,), "dld")
        dza, dzb = self._parts(dz)
        dt = dzb * sig
        dr = (dzb * xt * sig + dld[:, None, None, None]) * (1 - sig)
        dxa_net, g = self._children["net"].backward(cnet, np.concatenate([dt, dr], axis=1),
                                                    params=self._split(params, "net"),
                                                    need_dx=need_dx)
        grads = self._prefixed(g, "net")
        if not need_dx:
            return None, grads
        return self._join(dza + dxa_net, dt), grads

    def jvp_ld(self, x, dx, dparams=None, *, params=None):
        self._check_input(x)
        self._check_keys(params)
        self._check_keys(dparams, "dparams")
        xa, xb = self._parts(x)
        if dx is not None:
            check_like(dx, x.shape, "dx")
            dxa, dxb = self._parts(dx)
            dxa = np.ascontiguousarray(dxa)
        else:
            dxa, dxb = None, 0
        out, dout = self._children["net"].jvp(np.ascontiguousarray(xa), dxa,
                                              self._split(dparams, "net"),
                                              params=self._split(params, "net"))
        t, sig, logsig = self._scale(out)
        dt, dr = dout[:, :self.cb], dout[:, self.cb:]
        xt = xb + t
        dsig = dr * sig * (1 - sig)
        dzb = (dxb + dt) * sig + xt * dsig
        dza = dxa if dxa is not None else np.zeros_like(xa)
        return (self._join(xa, xt * sig), self._join(dza, dzb), _per_sample(logsig),
                _per_sample(dr * (1 - sig)))

    def inverse(self, z, *, params=None):
        self._check_input(z, "z")
        za, zb = self._parts(z)
        out = self._children["net"](np.ascontiguousarray(za), params=self._split(params, "net"))
        t, sig, _ = self._scale(out)
        return self._join(za, zb / sig - t)


class FlowStep(Bijector):
    r"""One step of the Inverse-Flow (Nagar & Varma 2025, §5): ActNorm, then the inverse of a
    causal convolution ``z = K⁻¹x`` (:class:`~nograd.layers.InverseConv2d`, solved over
    anti-diagonals; ``log|det| = -HW Σ log|diag|``, 0 for a unit diagonal), then an affine coupling.

    Children ``actnorm``, ``invconv``, ``coupling``; the log-determinants add, and the chain rule
    runs through the three in reverse for the backward.
    """

    def __init__(self, channels, hidden=32, *, kernel_size=3, corner="top-left", swap=False,
                 learn_diag=False, activation="relu", rng=None, dtype=np.float32):
        super().__init__()
        self.channels = int(channels)
        self._children["actnorm"] = ActNorm(channels, dtype=dtype)
        self._children["invconv"] = InverseConv2d(channels, kernel_size, corner=corner,
                                                  learn_diag=learn_diag, rng=rng, dtype=dtype)
        self._children["coupling"] = AffineCoupling(channels, hidden, swap=swap, activation=activation,
                                                  rng=rng, dtype=dtype)

    def forward_ld(self, x, *, params=None):
        self._check_input(x)
        self._check_keys(params)
        an, conv, cp = (self._children[k] for k in ("actnorm", "invconv", "coupling"))
        h, ld, ca = an.forward_ld(x, params=self._split(params, "actnorm"))
        pc = self._split(params, "invconv")
        h, cc = conv.forward(h, params=pc)
        ld = ld + conv.logdet(h, params=pc)
        z, ld2, ccp = cp.forward_ld(h, params=self._split(params, "coupling"))
        return z, ld + ld2, (ca, cc, ccp, x.shape)

    def backward_ld(self, cache, dz, dld, *, params=None, need_dx=True):
        ca, cc, ccp, shape = cache
        an, conv, cp = (self._children[k] for k in ("actnorm", "invconv", "coupling"))
        dh, g3 = cp.backward_ld(ccp, dz, dld, params=self._split(params, "coupling"))
        pc = self._split(params, "invconv")
        dh, g2 = conv.backward(cc, dh, params=pc)
        if conv.learn_diag:      # ld_n = -HW Σ log|diag| for every n
            diag = conv._use(pc)["diag"]
            g2["diag"] = g2["diag"] - (shape[2] * shape[3] * dld.sum() / diag).astype(diag.dtype)
        dx, g1 = an.backward_ld(ca, dh, dld, params=self._split(params, "actnorm"), need_dx=need_dx)
        grads = {**self._prefixed(g1, "actnorm"), **self._prefixed(g2, "invconv"),
                 **self._prefixed(g3, "coupling")}
        return dx, grads

    def jvp_ld(self, x, dx, dparams=None, *, params=None):
        self._check_keys(params)
        self._check_keys(dparams, "dparams")
        an, conv, cp = (self._children[k] for k in ("actnorm", "invconv", "coupling"))
        h, dh, ld, dld = an.jvp_ld(x, dx, self._split(dparams, "actnorm"),
                                   params=self._split(params, "actnorm"))
        pc, dpc = self._split(params, "invconv"), self._split(dparams, "invconv")
        h0 = h
        h, dh = conv.jvp(h0, dh, dpc, params=pc)
        ld = ld + conv.logdet(h0, params=pc)
        if conv.learn_diag and dpc and "diag" in dpc:
            H, W = x.shape[2:]
            dld = dld - H * W * (dpc["diag"] / conv._use(pc)["diag"]).sum()
        z, dz, ld2, dld2 = cp.jvp_ld(h, dh, self._split(dparams, "coupling"),
                                     params=self._split(params, "coupling"))
        return z, dz, ld + ld2, dld + dld2

    def inverse(self, z, *, params=None):
        self._check_keys(params)
        h = self._children["coupling"].inverse(z, params=self._split(params, "coupling"))
        h = self._children["invconv"].inverse(h, params=self._split(params, "invconv"))
        return self._children["actnorm"].inverse(h, params=self._split(params, "actnorm"))
