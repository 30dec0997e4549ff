r"""Inverse-Flow: a multi-scale normalizing flow built on the inverse of a causal convolution.

Nagar & Varma, "Parallel Backpropagation for Inverse of a Convolution with Application to
Normalizing Flows" (AISTATS 2025, arXiv:2410.14634), §5: a Glow-style flow (Kingma & Dhariwal
2018) whose steps use :class:`~nograd.layers.InverseConv2d` in the image → latent direction. The
density is evaluated through triangular solves (parallel over anti-diagonals), and *sampling*
needs only ordinary causal convolutions, ``K z``.

The pipeline, image ``x ∈ [0, 1]`` (dequantised, :func:`dequantize`) to latents:

1. logit transform, ``y = logit(α + (1 − 2α) x)`` (RealNVP §4.1), with its log-determinant;
2. per level: squeeze ``(C, H, W) -> (4C, H/2, W/2)``, ``steps`` × :class:`FlowStep`
   (ActNorm, InverseConv2d with the corner cycling through the four, affine coupling), then —
   except at the last level — half of the channels leave as latents (multi-scale split,
   RealNVP §3.6);
3. a standard normal prior on every latent.

``forward`` returns the negative log-likelihood of each image in **bits per dimension**,

.. math::
    \mathrm{bpd}(x) = \frac{-\log p_Z(z) - \log|\det \partial z/\partial x| + D\log B}{D \log 2},

with ``D`` the pixels·channels and ``B = n_bins`` (the quantisation levels of the data; the
``D log B`` term turns the density of the dequantised image into the probability of the
discrete one). ``backward``/``jvp`` are the chain rule through the same pieces by hand, so the
whole flow passes ``check_vjp``/``check_jvp``/``check_adjoint``. :meth:`InverseFlow.sample` draws
latents and runs every step's inverse.

>>> import numpy as np
>>> flow = InverseFlow((1, 8, 8), levels=2, steps=1, hidden=8, n_bins=17, rng=0)
>>> x = dequantize(np.random.default_rng(0).integers(0, 17, (4, 1, 8, 8)), 17, rng=0)
>>> flow(x).shape, flow.sample(3, rng=0).shape
((4,), (3, 1, 8, 8))
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_array, check_dtype, check_like, check_positive
from ..core.module import Module
from .flow_steps import FlowStep

_CORNERS = ("top-left", "bottom-right", "top-right", "bottom-left")
_HALF_LOG_2PI = 0.5 * np.log(2 * np.pi)


def dequantize(x, n_bins, *, rng=None, dtype=np.float32):
    """Uniform dequantisation: integer levels ``x ∈ {0, …, n_bins-1}`` to ``(x + u)/n_bins``,
    ``u ~ U[0, 1)`` (Theis et al. 2016), so a density model of the result bounds the discrete
    likelihood. ``x`` any array of integer levels (ints or integral floats)."""
    check_positive(n_bins, "n_bins", integer=True)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray of integer levels, got {type(x).__name__}")
    if x.size == 0:
        raise ValueError("x is empty")
    xf = x.astype(np.float64)
    if not np.all(np.isfinite(xf)) or np.any(xf != np.round(xf)) or xf.min() < 0 or xf.max() >= n_bins:
        raise ValueError(f"x must hold integer levels in [0, {n_bins - 1}] (n_bins={n_bins}), got "
                         f"values in [{xf.min()}, {xf.max()}]")
    u = as_rng(rng).random(x.shape)
    return ((xf + u) / n_bins).astype(check_dtype(dtype))


def squeeze(x):
    """``(N, C, H, W) -> (N, 4C, H/2, W/2)``: each 2×2 block of pixels becomes 4 channels."""
    check_array(x, "x", ndim=4)
    N, C, H, W = x.shape
    if H % 2 or W % 2:
        raise ValueError(f"x must have even H and W to squeeze, got shape {x.shape}")
    return x.reshape(N, C, H // 2, 2, W // 2, 2).transpose(0, 1, 3, 5, 2, 4).reshape(
        N, 4 * C, H // 2, W // 2)


def unsqueeze(x):
    """The inverse of :func:`squeeze`."""
    check_array(x, "x", ndim=4)
    N, C4, H, W = x.shape
    if C4 % 4:
        raise ValueError(f"x must have a multiple of 4 channels to unsqueeze, got shape {x.shape}")
    C = C4 // 4
    return x.reshape(N, C, 2, 2, H, W).transpose(0, 1, 4, 2, 5, 3).reshape(N, C, 2 * H, 2 * W)


class InverseFlow(Module):
    r"""The Inverse-Flow density model (see the module docstring).

    Shapes: ``x (N, C, H, W)`` in ``[0, 1]`` (dequantised) ``-> bpd (N,)``; ``H`` and ``W`` must
    be divisible by ``2**levels``.

    Parameters: ``shape`` (C, H, W); ``levels`` (multi-scale levels, ≥ 1); ``steps`` (flow steps
    per level); ``hidden`` (channels of the coupling networks); ``kernel_size`` of the inverse
    convolutions; ``n_bins`` (quantisation levels of the data, 256 for 8-bit images);
    ``alpha`` (the logit transform's margin); ``learn_diag`` (a learned diagonal in the inverse
    convolutions, otherwise unit: volume preserving); ``activation`` of the coupling networks
    (ReLU as in Glow; a smooth one such as ``"tanh"`` for finite-difference checks); ``rng``;
    ``dtype``.

    Children are the steps ``"0"``, ``"1"``, … in order (level by level).
    """

    def __init__(self, shape=(1, 8, 8), *, levels=2, steps=4, hidden=32, kernel_size=3, n_bins=256,
                 alpha=0.05, learn_diag=False, activation="relu", rng=None, dtype=np.float32):
        super().__init__()
        if not (isinstance(shape, (tuple, list)) and len(shape) == 3):
            raise ValueError(f"shape must be (C, H, W), got {shape!r}")
        for v, name in ((levels, "levels"), (steps, "steps"), (n_bins, "n_bins")):
            check_positive(v, name, integer=True)
        C, H, W = (int(s) for s in shape)
        if H % 2 ** levels or W % 2 ** levels:
            raise ValueError(f"H and W of shape {tuple(shape)} must be divisible by 2**levels = "
                             f"{2 ** levels}")
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        rng = as_rng(rng)
        self.shape, self.levels, self.steps = (C, H, W), int(levels), int(steps)
        self.n_bins, self.alpha, self.dtype_ = int(n_bins), float(alpha), check_dtype(dtype)
        self.plan = []          # per level: (channels in the steps, channels split off)
        c, h, w, i = C, H, W, 0
        for lv in range(self.levels):
            c, h, w = 4 * c, h // 2, w // 2
            for k in range(self.steps):
                self._children[str(i)] = FlowStep(c, hidden, kernel_size=kernel_size,
                                                  corner=_CORNERS[i % 4], swap=bool(k % 2),
                                                  learn_diag=learn_diag, activation=activation,
                                                  rng=rng, dtype=dtype)
                i += 1
            out = c // 2 if lv < self.levels - 1 else 0
            self.plan.append((c, out))
            c -= out
        # the latents, in the order they leave the flow: each level's split, then the last level
        self.latent_shapes = [(out, H >> (lv + 1), W >> (lv + 1))
                              for lv, (_, out) in enumerate(self.plan) if out]
        self.latent_shapes.append((self.plan[-1][0], H >> self.levels, W >> self.levels))

    def extra_repr(self):
        return (f"shape={self.shape}, levels={self.levels}, steps={self.steps}, "
                f"n_bins={self.n_bins}")

    @property
    def dims(self):
        return int(np.prod(self.shape))

    def _level_steps(self, lv):
        return [(str(i), self._children[str(i)]) for i in range(lv * self.steps, (lv + 1) * self.steps)]

    def _check(self, x, name="x"):
        check_array(x, name, ndim=4)
        if x.shape[1:] != self.shape:
            raise ValueError(f"{name} must have shape (N,) + {self.shape}, got {x.shape}")
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"{name} must lie in [0, 1] (dequantised images, see dequantize), got "
                             f"values in [{x.min()}, {x.max()}]")

    # ----------------------------------------------------------------- logit transform
    def _logit(self, x):
        a = self.alpha
        p = a + (1 - 2 * a) * x
        y = np.log(p) - np.log1p(-p)
        ld = _per(np.log1p(-2 * a) - np.log(p) - np.log1p(-p))
        return y, ld, p

    # ----------------------------------------------------------------- the three maps
    def _encode(self, x, params, *, keep=True, init=False):
        """The level loop: ``(latents, log|det|, p, caches)``; ``keep=False`` drops the step caches
        (inference), ``init=True`` sets each ActNorm from its input first (Glow's initialisation)."""
        h, ld, p = self._logit(x)
        caches, latents = [], []
        for lv, (_, out) in enumerate(self.plan):
            h = squeeze(h)
            for name, step in self._level_steps(lv):
                if init:
                    step._children["actnorm"].initialize(h)
                h, l2, cs = step.forward_ld(h, params=self._split(params, name))
                ld = ld + l2
                if keep:
                    caches.append(cs)
            if out:
                latents.append(np.ascontiguousarray(h[:, :out]))
                h = np.ascontiguousarray(h[:, out:])
        latents.append(h)
        return latents, ld, p, caches

    def _bpd(self, latents, ld):
        logpz = sum(_per(-0.5 * z * z - _HALF_LOG_2PI) for z in latents)
        D = self.dims
        return (-(logpz + ld) + D * np.log(self.n_bins)) / (D * np.log(2))

    def forward(self, x, *, train=False, rng=None, params=None):
        """Bits per dimension of each image, ``(N,)``; the cache holds every step's cache."""
        self._check(x)
        self._check_keys(params)
        latents, ld, p, caches = self._encode(x, params)
        return self._bpd(latents, ld).astype(x.dtype), (p, caches, latents)

    def __call__(self, x, *, train=False, rng=None, params=None):
        """Inference: bits per dimension, without keeping the steps' caches."""
        self._check(x)
        self._check_keys(params)
        latents, ld, _, _ = self._encode(x, params, keep=False)
        return self._bpd(latents, ld).astype(x.dtype)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        p, caches, latents = cache
        N = p.shape[0]
        check_like(dy, (N,))
        c = dy / (self.dims * np.log(2))                 # d bpd / d(-log p)
        dld = -c
        cz = c[:, None, None, None]
        dh = latents[-1] * cz
        grads, i = {}, len(caches)
        for lv in range(self.levels - 1, -1, -1):
            out = self.plan[lv][1]
            if out:
                dh = np.concatenate([latents[lv] * cz, dh], axis=1)
            for name, step in reversed(self._level_steps(lv)):
                i -= 1
                dh, g = step.backward_ld(caches[i], dh, dld, params=self._split(params, name),
                                         need_dx=need_dx or i > 0)
                grads.update(self._prefixed(g, name))
            if need_dx or lv > 0:
                dh = unsqueeze(dh)
        grads = {k: grads[k] for k in self.params if k in grads}
        if not need_dx:
            return None, grads
        a = self.alpha
        dy_dx = (1 - 2 * a) / (p * (1 - p))
        dld_dx = (1 - 2 * a) * (1 / (1 - p) - 1 / p)
        return (dh * dy_dx + dld[:, None, None, None] * dld_dx).astype(p.dtype), grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        self._check(x)
        self._check_keys(params)
        self._check_keys(dparams, "dparams")
        h, ld, p = self._logit(x)
        a = self.alpha
        if dx is None:
            dh, dld = np.zeros_like(x), np.zeros(x.shape[0], x.dtype)
        else:
            check_like(dx, x.shape, "dx")
            dh = dx * (1 - 2 * a) / (p * (1 - p))
            dld = _per(dx * (1 - 2 * a) * (1 / (1 - p) - 1 / p))
        latents, dlatents = [], []
        for lv, (_, out) in enumerate(self.plan):
            h, dh = squeeze(h), squeeze(dh)
            for name, step in self._level_steps(lv):
                h, dh, l2, d2 = step.jvp_ld(h, dh, self._split(dparams, name),
                                            params=self._split(params, name))
                ld, dld = ld + l2, dld + d2
            if out:
                latents.append(h[:, :out])
                dlatents.append(dh[:, :out])
                h, dh = np.ascontiguousarray(h[:, out:]), np.ascontiguousarray(dh[:, out:])
        latents.append(h)
        dlatents.append(dh)
        dlogpz = sum(_per(-z * dz) for z, dz in zip(latents, dlatents))
        scale = 1 / (self.dims * np.log(2))
        return self._bpd(latents, ld).astype(x.dtype), (-(dlogpz + dld) * scale).astype(x.dtype)

    # ----------------------------------------------------------------- flow helpers
    def initialize(self, x):
        """Glow's data-dependent initialisation: run ``x`` through the flow, setting each ActNorm
        so that its output has zero mean and unit variance per channel. Returns self."""
        self._check(x)
        self._encode(x, None, keep=False, init=True)
        return self

    def encode(self, x, *, params=None):
        """The latents of ``x``: a list of arrays, shapes :attr:`latent_shapes`, and ``log|det|``."""
        self._check(x)
        self._check_keys(params)
        latents, ld, _, _ = self._encode(x, params, keep=False)
        return latents, ld

    def decode(self, latents, *, params=None):
        """Images in ``[0, 1]`` from a list of latents (the inverse of :meth:`encode`)."""
        if len(latents) != len(self.latent_shapes):
            raise ValueError(f"latents must be a list of {len(self.latent_shapes)} arrays, got "
                             f"{len(latents)}")
        for j, (z, s) in enumerate(zip(latents, self.latent_shapes)):
            check_array(z, f"latents[{j}]", ndim=4)
            if z.shape[1:] != s or z.shape[0] != latents[0].shape[0]:
                raise ValueError(f"latents[{j}] must have shape (N,) + {s}, got {z.shape}")
        h = latents[-1]
        j = len(latents) - 2
        for lv in range(self.levels - 1, -1, -1):
            if self.plan[lv][1]:
                h = np.concatenate([latents[j], h], axis=1)
                j -= 1
            for name, step in reversed(self._level_steps(lv)):
                h = step.inverse(h, params=self._split(params, name))
            h = unsqueeze(h)
        y = h
        p = 1 / (1 + np.exp(-y))
        return np.clip((p - self.alpha) / (1 - 2 * self.alpha), 0, 1)

    def sample(self, n, rng=None, *, temperature=1.0, params=None):
        """``n`` images ``(n, C, H, W)`` in ``[0, 1]``: standard-normal latents (scaled by
        ``temperature``) through every step's inverse — ordinary convolutions only."""
        check_positive(n, "n", integer=True)
        check_positive(temperature, "temperature", allow_zero=True)
        rng = as_rng(rng)
        latents = [(temperature * rng.standard_normal((n,) + s)).astype(self.dtype_)
                   for s in self.latent_shapes]
        return self.decode(latents, params=params)


def _per(a):
    return a.reshape(a.shape[0], -1).sum(axis=1)
