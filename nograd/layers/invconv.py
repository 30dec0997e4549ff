r"""Inverse of a causal convolution: ``z = K⁻¹ x``, with its backward and jvp by triangular solves.

Nagar & Varma, "Parallel Backpropagation for Inverse of a Convolution with Application to
Normalizing Flows" (AISTATS 2025, arXiv:2410.14634). ``K`` is a ``k×k`` convolution with top-left
padding whose last tap ``(k-1, k-1)`` — the pixel itself — is lower triangular over channels with a
non-zero diagonal. In the pixel-major, channel-minor ordering its matrix is lower triangular, so

.. math::
    z = K^{-1} x \ \text{(forward substitution)}, \qquad
    \bar x = K^{-\top} \bar z \ \text{(backward substitution)}, \qquad
    \bar W = -\,\bar x \star z, \qquad
    \dot z = K^{-1}\big(\dot x - \dot K z\big),

where :math:`\bar x \star z` is an ordinary convolution's weight gradient (cotangent
:math:`\bar x`, input :math:`z`): from :math:`K z = x`, :math:`\dot K z + K \dot z = \dot x`.
No dense matrix appears: both solves run over the anti-diagonals ``h + w = d`` (the paper's
parallel schedule, see :mod:`nograd.kernels.invconv`), in ``O(n k² C²)`` work for ``n`` pixels.
``inverse(z) = K z`` is the ordinary causal convolution — the sampling direction of a flow.

``corner`` picks where the causal dependency starts (``"top-left"`` … ``"bottom-right"``): the
input is flipped, the top-left layer applied, the output flipped back — the same as flipping the
kernel. ``learn_diag=True`` adds a parameter ``diag (C,)`` (the last tap's channel diagonal); then
``log|det ∂z/∂x| = -H·W·Σ_c log|diag_c|`` per sample (:meth:`logdet`), and 0 otherwise.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_array, check_dtype, check_like, check_positive
from ..core.module import Module

CORNERS = {"top-left": (), "top-right": (3,), "bottom-left": (2,), "bottom-right": (2, 3)}


def _kernels(reference=False):
    if reference:
        from ..kernels import invconv_ref as k  # plain NumPy, for tests
    else:
        from ..kernels import invconv as k  # lazy: Numba loads on first use
    return k


class InverseConv2d(Module):
    r"""The inverse of an invertible causal ``k×k`` convolution over ``C`` channels (NCHW).

    Shapes: ``x (N, C, H, W) -> z (N, C, H, W)``; ``weight (C, C, k, k)``; ``diag (C,)`` when
    ``learn_diag``. Entries of the last tap on or above the channel diagonal are not used (the
    diagonal is 1, or ``diag``), so :math:`K` is invertible whenever ``diag`` has no zero.

    Parameters: ``channels``, ``kernel_size`` (int ≥ 1), ``corner`` (one of :data:`CORNERS`),
    ``learn_diag``, ``rng`` (seed or Generator; weights are normal with std ``1/(C·k²)``, which
    keeps the solve well conditioned), ``dtype``, ``reference`` (use the NumPy reference kernels).
    """

    def __init__(self, channels, kernel_size=3, *, corner="top-left", learn_diag=False, rng=None,
                 dtype=np.float32, reference=False):
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_positive(kernel_size, "kernel_size", integer=True)
        if corner not in CORNERS:
            raise ValueError(f"corner must be one of {list(CORNERS)}, got {corner!r}")
        self.channels, self.kernel_size, self.corner = int(channels), int(kernel_size), corner
        self.learn_diag, self.reference = bool(learn_diag), bool(reference)
        C, k = self.channels, self.kernel_size
        dt = check_dtype(dtype)
        w = as_rng(rng).normal(0.0, 1.0 / (C * k * k), (C, C, k, k)) * self._mask()
        self._own["weight"] = w.astype(dt)
        if self.learn_diag:
            self._own["diag"] = np.ones(C, dtype=dt)

    def extra_repr(self):
        return (f"{self.channels}, kernel_size={self.kernel_size}, corner={self.corner!r}, "
                f"learn_diag={self.learn_diag}")

    # ----------------------------------------------------------------- pieces
    def _mask(self):
        """1 where ``weight`` is used; 0 on and above the channel diagonal of the last tap (built
        once: it depends only on ``channels`` and ``kernel_size``)."""
        m = self.__dict__.get("_mask_cache")
        if m is None:
            C, k = self.channels, self.kernel_size
            m = np.ones((C, C, k, k))
            m[:, :, k - 1, k - 1] = np.tril(np.ones((C, C)), -1)
            m.flags.writeable = False
            self.__dict__["_mask_cache"] = m
        return m

    def _effective(self, p, dtype):
        """``(W_eff, diag)``: the masked kernel with the diagonal written into its last tap."""
        r = self.kernel_size - 1
        if self.learn_diag:
            diag = p["diag"].astype(dtype)
            if not (np.isfinite(diag).all() and diag.all()):
                raise ValueError(f"diag must be finite and non-zero for K to be invertible, got {diag}")
        else:
            diag = np.ones(self.channels, dtype)
        W = p["weight"].astype(dtype)                 # a fresh C-contiguous copy
        W *= self._mask()
        np.einsum("ii->i", W[:, :, r, r])[:] = diag   # the channel diagonal of the own tap
        return W, diag

    def _check_input(self, x, name="x"):
        check_array(x, name, ndim=4)
        if x.shape[1] != self.channels:
            raise ValueError(f"{name} must have {self.channels} channels in axis 1 (NCHW), "
                             f"got shape {x.shape}")

    def _flips(self):
        """``(fh, fw)``: whether the kernels read and write the image flipped in H, in W."""
        axes = CORNERS[self.corner]
        return 2 in axes, 3 in axes

    def _solve(self, u, W, diag):
        """``z = K⁻¹ u`` for NCHW ``u`` in this layer's frame: ``(z, Z)``, ``Z`` the solution in the
        kernels' diagonal layout (for the kernel gradient). The kernels do the flip and the layout
        change themselves, so there is no transposed copy here."""
        kern = _kernels(self.reference)
        N, C, H, Wd = u.shape
        Z = kern.buffer(C, H, Wd, N, u.dtype)
        z = kern.solve(np.ascontiguousarray(u), W, diag, *self._flips(), np.empty(u.shape, u.dtype), Z)
        return z, Z

    def _conv(self, z, W, diag):
        """``K z`` for NCHW ``z`` in this layer's frame, with effective kernel ``W`` and diagonal
        ``diag`` (any values, zero included): the causal convolution by the same diagonal runs as
        the solve (:func:`nograd.kernels.invconv.conv`)."""
        kern = _kernels(self.reference)
        N, C, H, Wd = z.shape
        Z = kern.buffer(C, H, Wd, N, z.dtype)
        return kern.conv(np.ascontiguousarray(z), W, diag, *self._flips(),
                         np.empty(z.shape, z.dtype), Z)

    # ----------------------------------------------------------------- the three maps
    def forward(self, x, *, train=False, rng=None, params=None):
        """``z = K⁻¹ x`` by forward substitution over anti-diagonals."""
        self._check_input(x)
        p = self._use(params)
        W, diag = self._effective(p, x.dtype)
        z, Z = self._solve(x, W, diag)
        return z, (Z, W, diag, x.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        """``dx = K⁻ᵀ dy`` (reverse wavefront); ``dW_eff = -dx ⋆ z``, masked; ``ddiag`` its diagonal."""
        Z, W, diag, shape = cache
        N, C, H, Wd = shape
        check_like(dy, shape)
        kern = _kernels(self.reference)
        v = np.ascontiguousarray(dy, dtype=W.dtype)
        G = kern.buffer(C, H, Wd, N, W.dtype)
        dx = kern.solve_t(v, W, diag, *self._flips(), np.empty(shape, W.dtype), G)
        k = self.kernel_size
        dWe = -kern.kernel_grad(G, Z, H, Wd, N, k, np.empty((C, C, k, k), W.dtype))
        p = self._use(params)
        dt = p["weight"].dtype
        grads = {"weight": (dWe * self._mask()).astype(dt)}
        if self.learn_diag:
            idx = np.arange(C)
            grads["diag"] = dWe[idx, idx, k - 1, k - 1].astype(dt)
        return (dx if need_dx else None), grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        """``dz = K⁻¹(dx - dK z)``, with ``dK`` the causal convolution by the tangent kernel."""
        z, (_, W, diag, _) = self.forward(x, params=params)
        dparams = self._tangents(dparams) or {}
        rhs = np.zeros_like(z)
        if dx is not None:
            check_like(dx, x.shape, "dx")
            rhs += dx.astype(x.dtype, copy=False)
        if dparams:
            dW = np.zeros_like(W)
            ddiag = np.zeros_like(diag)
            if "weight" in dparams:
                dW += (dparams["weight"] * self._mask()).astype(x.dtype)
            if "diag" in dparams:
                ddiag += dparams["diag"].astype(x.dtype)
            rhs -= self._conv(z, dW, ddiag)
        return z, self._solve(rhs, W, diag)[0]

    # ----------------------------------------------------------------- flow helpers
    def inverse(self, z, *, params=None):
        """``x = K z``: the ordinary causal convolution (a flow's sampling direction)."""
        self._check_input(z, "z")
        W, diag = self._effective(self._use(params), z.dtype)
        return self._conv(z, W, diag)

    def logdet(self, x, *, params=None):
        """``log|det ∂z/∂x|`` per sample, shape ``(N,)``: ``-H·W·Σ log|diag|`` (0 for a unit diagonal)."""
        self._check_input(x)
        _, diag = self._effective(self._use(params), x.dtype)
        N, _, H, Wd = x.shape
        return np.full(N, -H * Wd * np.log(np.abs(diag)).sum(), dtype=x.dtype)

    def logdet_grad(self, x, *, params=None):
        """Gradient of ``Σ_n logdet`` with respect to the parameters (``diag`` only)."""
        p = self._use(params)
        N, _, H, Wd = x.shape
        grads = {"weight": np.zeros_like(p["weight"])}
        if self.learn_diag:
            grads["diag"] = (-N * H * Wd / p["diag"]).astype(p["diag"].dtype)
        return grads
