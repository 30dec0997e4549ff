r"""Numba kernels for batch normalisation of NCHW images in training mode (Ioffe & Szegedy 2015,
Alg. 1 and §3.2: one mean and variance per channel over the batch and the positions), with an
optional ReLU after it, and a NumPy reference beside each one.

Forward, per channel ``c`` over its ``n = N·H·W`` values (two passes over ``x``):

1. statistics in one pass by **shifted sums**: with the shift :math:`k_c = x_{0,c,0,0}` (a value
   of the channel, so :math:`|\bar x - k| ≈ σ`), :math:`S_1 = Σ(x - k)`, :math:`S_2 = Σ(x - k)^2`
   accumulated in float64 whatever the dtype, then :math:`μ = k + S_1/n`,
   :math:`σ^2 = (S_2 - S_1^2/n)/n` (biased; clamped at 0). Unshifted sums lose about
   :math:`(\bar x/σ)^2` ulps to cancellation (8 digits of float64 for ``1e4 + N(0, 1)``); the
   shift removes the mean before squaring (Chan, Golub & LeVeque 1983, "Algorithms for computing
   the sample variance", §3). Welford's update needs a division per value and does not vectorise;
2. :math:`r = (σ^2 + ε)^{-1/2}`, :math:`s = γ r`, and one pass writing
   :math:`y = (x - μ) s + β` (``max(·, 0)`` with ``relu``); :math:`\hat x` is not stored.

Backward, from ``x`` and the per-channel :math:`μ, r, s, β` of the forward (two passes):

1. :math:`Σ\bar y'` and :math:`Σ \bar y' (x - μ)` per channel in float64, where
   :math:`\bar y' = \bar y\,[y > 0]` with ``relu`` (the mask recomputed from ``x`` by the forward's
   own float operations, so it is the forward's, bit for bit) and :math:`\bar y` otherwise;
   :math:`\bar β = Σ\bar y'`, :math:`\bar γ = r\,Σ\bar y'(x - μ)`;
2. :math:`\bar x = γ r\,(\bar y' - \overline{\bar y'} - \hat x\,\overline{\bar y' \hat x})
   = a\,\bar y' + b\,(x - μ) + c` with :math:`a = γ r`, :math:`b = -γ r^3\,\overline{\bar y'(x-μ)}`,
   :math:`c = -γ r\,\overline{\bar y'}` per channel — one pass, every entry written once.

Recomputing :math:`\hat x = (x - μ) r` from ``x`` instead of storing it saves the forward one
write of ``x``'s size (``x`` is alive anyway: the previous layer's output). The elementwise passes
run in ``x``'s dtype; only sums are float64. Shapes: ``x, y, dy, dx (N, C, H, W)``; ``γ, β`` and
the statistics ``(C,)``. Serial, as every kernel (DESIGN.md §5).
"""
from __future__ import annotations

import numba as nb
import numpy as np

_SUM = dict(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
_MAP = dict(cache=True, nogil=True, error_model="numpy")


@nb.njit(**_MAP)
def _affine(v, m, s, t):
    # the forward's value before the ReLU, (x - μ) s + β; compiled without fast-math flags and
    # inlined by LLVM (which keeps them), so the sums kernel repeats it bit for bit for the mask
    return (v - m) * s + t


@nb.njit(**_SUM)
def _shifted_sums(x, shift, s1, s2):
    N, C, L = x.shape
    for c in range(C):
        shift[c] = x[0, c, 0]
        s1[c] = 0.0
        s2[c] = 0.0
    for n in range(N):
        for c in range(C):
            k = shift[c]
            a = 0.0
            b = 0.0
            for j in range(L):
                d = np.float64(x[n, c, j]) - k
                a += d
                b += d * d
            s1[c] += a
            s2[c] += b


@nb.njit(**_MAP)
def _normalize(x, mean, scale, shift, relu, y):
    N, C, L = x.shape
    zero = y.dtype.type(0)
    for n in range(N):
        for c in range(C):
            m, s, b = mean[c], scale[c], shift[c]
            if relu:
                for j in range(L):
                    v = _affine(x[n, c, j], m, s, b)
                    y[n, c, j] = v if (v > zero or v != v) else zero     # np.maximum(v, 0)
            else:
                for j in range(L):
                    y[n, c, j] = _affine(x[n, c, j], m, s, b)


@nb.njit(**_SUM)
def _cotangent_sums(x, dy, mean, scale, shift, relu, sdy, sdyx):
    N, C, L = x.shape
    zero = x.dtype.type(0)
    for c in range(C):
        sdy[c] = 0.0
        sdyx[c] = 0.0
    for n in range(N):
        for c in range(C):
            m = mean[c]
            m64 = np.float64(m)
            a = 0.0
            b = 0.0
            if relu:
                s, t = scale[c], shift[c]
                for j in range(L):
                    xv = x[n, c, j]
                    g = np.float64(dy[n, c, j]) if _affine(xv, m, s, t) > zero else 0.0
                    a += g
                    b += g * (np.float64(xv) - m64)
            else:
                for j in range(L):
                    g = np.float64(dy[n, c, j])
                    a += g
                    b += g * (np.float64(x[n, c, j]) - m64)
            sdy[c] += a
            sdyx[c] += b


@nb.njit(**_MAP)
def _input_cotangent(x, dy, mean, scale, shift, relu, ca, cb, cc, dx):
    N, C, L = x.shape
    zero = x.dtype.type(0)
    for n in range(N):
        for c in range(C):
            m, a, b, k = mean[c], ca[c], cb[c], cc[c]
            if relu:
                s, t = scale[c], shift[c]
                for j in range(L):
                    g = dy[n, c, j] if _affine(x[n, c, j], m, s, t) > zero else zero
                    dx[n, c, j] = a * g + b * (x[n, c, j] - m) + k
            else:
                for j in range(L):
                    dx[n, c, j] = a * dy[n, c, j] + b * (x[n, c, j] - m) + k


@nb.njit(**_MAP)
def _forward(x, gamma, beta, eps, relu, y, mean, var, r, scale, shift):
    # statistics, the per-channel numbers, then the normalising pass (one call from Python)
    C = x.shape[1]
    n = x.shape[0] * x.shape[2]
    k, s1, s2 = np.empty(C), np.empty(C), np.empty(C)
    _shifted_sums(x, k, s1, s2)
    for c in range(C):
        v = s2[c] - s1[c] * s1[c] / n
        if v < 0.0:                       # rounding only; NaN (non-finite x) passes through
            v = 0.0
        var[c] = v / n
        mean[c] = k[c] + s1[c] / n        # rounded to x's dtype on the store
        r[c] = 1.0 / np.sqrt(var[c] + eps)
        scale[c] = r[c] * gamma[c] if gamma.size else r[c]
        shift[c] = beta[c] if beta.size else 0.0
    _normalize(x, mean, scale, shift, relu, y)


@nb.njit(**_MAP)
def _backward(x, dy, mean, r, scale, shift, gamma, relu, need_dx, dgamma, dbeta, dx):
    C = x.shape[1]
    n = x.shape[0] * x.shape[2]
    sdyx = np.empty(C)
    _cotangent_sums(x, dy, mean, scale, shift, relu, dbeta, sdyx)
    ca, cb, cc = np.empty(C, x.dtype), np.empty(C, x.dtype), np.empty(C, x.dtype)
    for c in range(C):
        r64 = np.float64(r[c])
        dgamma[c] = sdyx[c] * r64
        gr = r64 * np.float64(gamma[c]) if gamma.size else r64
        ca[c] = gr
        cb[c] = -gr * (r64 * r64) * (sdyx[c] / n)
        cc[c] = -gr * (dbeta[c] / n)
    if need_dx:
        _input_cotangent(x, dy, mean, scale, shift, relu, ca, cb, cc, dx)


def _planes(a):
    return np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], -1)


def _vec(v, dtype):
    return np.empty(0, dtype) if v is None else np.asarray(v, dtype).reshape(-1)


def batchnorm_forward(x, gamma, beta, eps, relu=False):
    """Training-mode batch norm of ``x (N, C, H, W)``: ``(y, stats)``.

    ``y`` has ``x``'s shape and dtype (C-contiguous); ``gamma``, ``beta`` of size ``C`` or None
    (1 and 0). ``stats = (mean, var, r, scale, shift)``: ``var`` the biased batch variance in
    float64 (what the running average needs), the others in ``x``'s dtype, ``scale = γ r`` and
    ``shift = β``, the numbers :func:`batchnorm_backward` needs to repeat the forward. A NaN or
    inf in a channel makes its ``var`` non-finite (no warning): the caller checks ``var`` instead
    of making a pass over ``x``.
    """
    x3 = _planes(x)
    dt, C = x.dtype, x3.shape[1]
    y = np.empty_like(x3)
    mean, r, scale, shift = (np.empty(C, dt) for _ in range(4))
    var = np.empty(C)
    _forward(x3, _vec(gamma, dt), _vec(beta, dt), float(eps), bool(relu), y, mean, var, r, scale, shift)
    return y.reshape(x.shape), (mean, var, r, scale, shift)


def batchnorm_backward(x, dy, stats, gamma, relu=False, need_dx=True):
    """``(dx, dγ, dβ)`` of :func:`batchnorm_forward` at ``x`` for the output cotangent ``dy``.

    ``stats`` as returned by the forward; ``dγ = Σ ȳ' x̂``, ``dβ = Σ ȳ'`` in float64 (size ``C``);
    ``dx`` in ``x``'s dtype, or None when ``need_dx`` is false (then only the sums run).
    """
    mean, _, r, scale, shift = stats
    x3, dy3 = _planes(x), _planes(np.asarray(dy, x.dtype))
    C = x3.shape[1]
    dgamma, dbeta = np.empty(C), np.empty(C)
    dx = np.empty_like(x3) if need_dx else np.empty((0, 0, 0), x.dtype)
    _backward(x3, dy3, mean, r, scale, shift, _vec(gamma, x.dtype), bool(relu), bool(need_dx), dgamma, dbeta, dx)
    return (dx.reshape(x.shape) if need_dx else None), dgamma, dbeta


def batchnorm_forward_ref(x, gamma, beta, eps, relu=False):
    """NumPy reference of :func:`batchnorm_forward`: the layer's former code (two-pass statistics
    in ``x``'s dtype, ``x̂ = (x - μ) r``, ``y = γ x̂ + β``), then ``np.maximum(y, 0)``."""
    axes = (0, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    xc = x - mean
    var = np.mean(xc * xc, axis=axes, keepdims=True)
    r = 1 / np.sqrt(var + x.dtype.type(eps))
    y = xc * r
    view = (1, -1, 1, 1)
    if gamma is not None:
        y = y * np.asarray(gamma, x.dtype).reshape(view)
    if beta is not None:
        y = y + np.asarray(beta, x.dtype).reshape(view)
    if relu:
        y = np.maximum(y, 0)
    return y, (mean.reshape(-1), var.reshape(-1), r.reshape(-1))


def batchnorm_backward_ref(x, dy, gamma, beta, eps, relu=False):
    """NumPy reference of :func:`batchnorm_backward`, recomputing the forward by
    :func:`batchnorm_forward_ref`: ``ȳ' = ȳ [y > 0]`` under ``relu``, ``v = γ ȳ'``,
    ``x̄ = r (v - v̄ - x̂ \\overline{v x̂})`` (bars: means over ``N, H, W``), ``dγ = Σ ȳ' x̂``,
    ``dβ = Σ ȳ'``."""
    axes = (0, 2, 3)
    y, (mean, _, r) = batchnorm_forward_ref(x, gamma, beta, eps, relu)
    view = (1, -1, 1, 1)
    xhat = (x - mean.reshape(view)) * r.reshape(view)
    if relu:
        dy = dy * (y > 0)
    v = dy if gamma is None else dy * np.asarray(gamma, x.dtype).reshape(view)
    dx = r.reshape(view) * (v - v.mean(axis=axes, keepdims=True)
                            - xhat * np.mean(v * xhat, axis=axes, keepdims=True))
    return dx, np.sum(dy * xhat, axis=axes), np.sum(dy, axis=axes)


# --------------------------------------------------------------------------------------------
# Split passes for batch norm over a batch held in shards (synchronised batch norm,
# nograd.parallel): each shard's partial statistics, their combination, the normalising pass with
# given statistics, and the backward's sums and input cotangent from the whole batch's sums.

@nb.njit(**_MAP)
def _channel_numbers(mean64, var, gamma, beta, eps, mean, r, scale, shift):
    # the per-channel numbers of _forward from given float64 statistics, the same float operations
    for c in range(mean.shape[0]):
        mean[c] = mean64[c]
        r[c] = 1.0 / np.sqrt(var[c] + eps)
        scale[c] = r[c] * gamma[c] if gamma.size else r[c]
        shift[c] = beta[c] if beta.size else 0.0


@nb.njit(**_MAP)
def _coefficients(r, gamma, sdy, sdyx, n, ca, cb, cc):
    # the per-channel a, b, c of _backward from given float64 sums over n values per channel
    for c in range(r.shape[0]):
        r64 = np.float64(r[c])
        gr = r64 * np.float64(gamma[c]) if gamma.size else r64
        ca[c] = gr
        cb[c] = -gr * (r64 * r64) * (sdyx[c] / n)
        cc[c] = -gr * (sdy[c] / n)


def batchnorm_partial_stats(x):
    r"""One shard's per-channel statistics of ``x (N, C, ...)``: ``(n, mean, m2)`` with ``n`` the
    values per channel (an int), ``mean`` and ``m2 = Σ (x - mean)²`` float64 ``(C,)``.

    By the shifted sums of the forward kernel (shift :math:`k = x_{0,c,0}`):
    :math:`\text{mean} = k + S_1/n`, :math:`M_2 = S_2 - S_1^2/n` (clamped at 0; NaN passes), the
    float operations of :func:`batchnorm_forward`, so one part combined alone gives its statistics
    bit for bit. Shards combine with :func:`combine_stats`.
    """
    x3 = _planes(x)
    C, n = x3.shape[1], x3.shape[0] * x3.shape[2]
    k, s1, s2 = np.empty(C), np.empty(C), np.empty(C)
    _shifted_sums(x3, k, s1, s2)
    m2 = s2 - s1 * s1 / n
    m2[m2 < 0.0] = 0.0                    # rounding only; NaN (non-finite x) passes through
    return n, k + s1 / n, m2


def combine_stats(counts, means, m2s):
    r"""The whole batch's ``(n, mean, var)`` (``var`` biased; float64 ``(C,)``) from the parts'
    ``(n_i, mean_i, m2_i)`` of :func:`batchnorm_partial_stats`, combined in the order given by
    the pairwise update of Chan, Golub & LeVeque (1979, "Updating formulae and a pairwise algorithm
    for computing sample variances"): with :math:`δ = \bar x_B - \bar x_A`,

    .. math::
        n = n_A + n_B, \quad \bar x = \bar x_A + δ\,\frac{n_B}{n}, \quad
        M_2 = M_{2,A} + M_{2,B} + δ^2\,\frac{n_A n_B}{n}.

    Each part's :math:`M_2` is taken about its own mean and :math:`δ` is a difference of means, so
    a large common mean (``1e4 + N(0, 1)``) cancels before anything is squared. A fixed order
    makes the result the same bits for everyone who combines the same parts.
    """
    n = int(counts[0])
    mean, m2 = np.array(means[0], np.float64), np.array(m2s[0], np.float64)
    for nb_, mb, m2b in zip(counts[1:], means[1:], m2s[1:]):
        total = n + int(nb_)
        delta = mb - mean
        mean = mean + delta * (int(nb_) / total)
        m2 = m2 + m2b + delta * delta * (n * int(nb_) / total)
        n = total
    return n, mean, m2 / n


def batchnorm_normalize(x, mean, var, gamma, beta, eps, relu=False):
    """:func:`batchnorm_forward` with the statistics given (the whole batch's, float64 ``(C,)``,
    ``var`` biased) instead of computed from ``x``: ``(y, stats)`` in the same form, ``stats``
    usable by :func:`batchnorm_backward_sums` and :func:`batchnorm_input_cotangent`."""
    x3 = _planes(x)
    dt, C = x.dtype, x3.shape[1]
    y = np.empty_like(x3)
    m, r, scale, shift = (np.empty(C, dt) for _ in range(4))
    v = np.array(var, np.float64).reshape(C)
    _channel_numbers(np.asarray(mean, np.float64).reshape(C), v, _vec(gamma, dt), _vec(beta, dt),
                     float(eps), m, r, scale, shift)
    _normalize(x3, m, scale, shift, bool(relu), y)
    return y.reshape(x.shape), (m, v, r, scale, shift)


def batchnorm_backward_sums(x, dy, stats, relu=False):
    """One shard's float64 ``(Σ ȳ', Σ ȳ'(x - μ))`` per channel (``ȳ' = ȳ [y > 0]`` under ``relu``)
    at the statistics ``stats`` of a forward: the sums the backward all-reduces. The shard's
    shares of the gradients are ``dβ = Σ ȳ'``, ``dγ = r Σ ȳ'(x - μ)``."""
    mean, _, _, scale, shift = stats
    x3, dy3 = _planes(x), _planes(np.asarray(dy, x.dtype))
    C = x3.shape[1]
    sdy, sdyx = np.empty(C), np.empty(C)
    _cotangent_sums(x3, dy3, mean, scale, shift, bool(relu), sdy, sdyx)
    return sdy, sdyx


def batchnorm_input_cotangent(x, dy, stats, gamma, sdy, sdyx, n, relu=False):
    """``x̄`` of :func:`batchnorm_backward` from the whole batch's sums ``sdy = Σ ȳ'``,
    ``sdyx = Σ ȳ'(x - μ)`` (float64 ``(C,)``) over ``n`` values per channel, of which ``x, dy`` are
    a part: ``x̄ = a ȳ' + b (x - μ) + c`` with ``a = γ r``, ``b = -γ r³ sdyx/n``, ``c = -γ r sdy/n``."""
    mean, _, r, scale, shift = stats
    x3, dy3 = _planes(x), _planes(np.asarray(dy, x.dtype))
    C = x3.shape[1]
    ca, cb, cc = (np.empty(C, x.dtype) for _ in range(3))
    _coefficients(r, _vec(gamma, x.dtype), np.asarray(sdy, np.float64), np.asarray(sdyx, np.float64),
                  int(n), ca, cb, cc)
    dx = np.empty_like(x3)
    _input_cotangent(x3, dy3, mean, scale, shift, bool(relu), ca, cb, cc, dx)
    return dx.reshape(x.shape)


def batchnorm_partial_stats_ref(x):
    """NumPy reference of :func:`batchnorm_partial_stats`: two passes in float64."""
    xd = np.asarray(x, np.float64).reshape(x.shape[0], x.shape[1], -1)
    mean = xd.mean(axis=(0, 2))
    return xd.shape[0] * xd.shape[2], mean, ((xd - mean[None, :, None]) ** 2).sum(axis=(0, 2))


def batchnorm_normalize_ref(x, mean, var, gamma, beta, eps, relu=False):
    """NumPy reference of :func:`batchnorm_normalize`: ``y = γ (x - μ) r + β`` (then ReLU) with
    ``μ`` rounded to ``x``'s dtype and ``r = (var + ε)^{-1/2}`` computed in float64, rounded."""
    view = (1, -1) + (1,) * (x.ndim - 2)
    dt = x.dtype
    r = (1 / np.sqrt(np.asarray(var, np.float64) + eps)).astype(dt)
    y = (x - np.asarray(mean).astype(dt).reshape(view)) * r.reshape(view)
    if gamma is not None:
        y = y * np.asarray(gamma, dt).reshape(view)
    if beta is not None:
        y = y + np.asarray(beta, dt).reshape(view)
    return np.maximum(y, 0) if relu else y


def batchnorm_backward_sums_ref(x, dy, mean, scale, shift, relu=False):
    """NumPy reference of :func:`batchnorm_backward_sums` (float64), the ReLU's mask from
    ``(x - μ) s + β > 0`` with ``s = γ r``."""
    view = (1, -1) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    xc = x - np.asarray(mean, x.dtype).reshape(view)
    g = np.asarray(dy, np.float64)
    if relu:
        g = g * (xc * np.asarray(scale, x.dtype).reshape(view) + np.asarray(shift, x.dtype).reshape(view) > 0)
    return g.sum(axis=axes), (g * xc.astype(np.float64)).sum(axis=axes)


def batchnorm_input_cotangent_ref(x, dy, mean, r, gamma, sdy, sdyx, n, mask=None):
    """NumPy reference of :func:`batchnorm_input_cotangent` in float64:
    ``x̄ = γ r (ȳ' - sdy/n - x̂ (r sdyx)/n)`` with ``x̂ = (x - μ) r`` (``ȳ' = ȳ·mask``)."""
    view = (1, -1) + (1,) * (x.ndim - 2)
    rr = np.asarray(r, np.float64).reshape(view)
    g = np.asarray(dy, np.float64) * (1 if mask is None else mask)
    xhat = (np.asarray(x, np.float64) - np.asarray(mean, np.float64).reshape(view)) * rr
    gr = rr if gamma is None else rr * np.asarray(gamma, np.float64).reshape(view)
    return gr * (g - np.asarray(sdy).reshape(view) / n - xhat * (rr * np.asarray(sdyx).reshape(view)) / n)
