r"""The Winograd half of :class:`~nograd.layers.Conv2d`: F(2×2, 3×3) for 3×3 stride-1 convolutions
(Lavin & Gray 2016, §4–5) — forward, backward and jvp.

With ``V = Bᵀ d B`` the transformed input tiles, ``U = G g Gᵀ`` the transformed filters and
``M = U V`` per tile entry ``(ξ, ν)``, the output is ``Aᵀ M A`` (the kernels:
:mod:`nograd.kernels.winograd`, ``winograd_planes``, ``winograd_cl``; the loops over chunks of
images: :mod:`nograd.layers.winograd`). :class:`WinogradConv` holds only methods; it reads the
layer's ``padding``, ``out_channels``, ``output_shape`` and ``_weight`` from
:class:`~nograd.layers.Conv2d`, which mixes it in (its fused ReLU + pooling pass, in
``conv.py``, calls these methods).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_like


def _winograd():
    from ..kernels import winograd  # lazy: Numba loads on the first Winograd convolution

    return winograd


def _fused():
    from ..kernels import fused  # lazy, as _winograd

    return fused


def _tiles_mod():
    from . import winograd  # the chunked loops (NumPy only; the kernels load lazily there)

    return winograd


class WinogradConv:
    """Conv2d's Winograd methods (a mixin; see the module)."""

    def _tiles(self, shape):
        N, O, OH, OW = self.output_shape(shape)
        TH, TW = (OH + 1) // 2, (OW + 1) // 2
        return N, O, OH, OW, TH, TW, N * TH * TW

    def _wino_v(self, x, TH, TW, P):
        V = np.empty((16, x.shape[1], P), dtype=x.dtype)
        ph, pw = self.padding
        return _winograd().input_transform(np.ascontiguousarray(x), ph, pw, TH, TW, V)

    def _wino_out(self, M, b, shape, TH, TW, dtype):
        bias = np.zeros(shape[1], dtype=dtype) if b is None else b.astype(dtype, copy=False)
        return _winograd().output_transform(M, bias, False, TH, TW, np.empty(shape, dtype=dtype))

    def _wino_chunks(self, x, p, write, layout=None):
        """Winograd's forward over chunks of images (:mod:`nograd.layers.winograd`), each chunk's
        product handed to ``write(n0, n1, M, kernels)``; returns the layer's cache."""
        TH, TW = self._tiles(x.shape)[4:6]
        x = np.ascontiguousarray(x)
        ph, pw = self.padding
        U = _winograd().filter_transform(self._weight(p, x.dtype))
        return "winograd", _tiles_mod().forward(x, U, ph, pw, TH, TW, write, layout), x.shape

    def _forward_winograd(self, x, p):
        N, O, OH, OW, TH, TW, P = self._tiles(x.shape)
        b = p.get("bias")
        bias = np.zeros(O, dtype=x.dtype) if b is None else b.astype(x.dtype, copy=False)
        y = np.empty((N, O, OH, OW), dtype=x.dtype)
        cache = self._wino_chunks(
            x, p, lambda n0, n1, M, wk: wk.output_transform(M, bias, False, TH, TW, y[n0:n1]))
        return y, cache

    def _backward_winograd(self, tiles, xshape, dy, p, need_dx):
        TH, TW = self._tiles(xshape)[4:6]
        dy = np.ascontiguousarray(dy)
        return self._winograd_grads(tiles, xshape,
                                    lambda n0, n1, Z, wk: wk.cotangent_transform(dy[n0:n1], TH, TW, Z),
                                    _fused().channel_sum(dy) if "bias" in p else None, p, need_dx, dy.dtype)

    def _winograd_grads(self, tiles, xshape, cotangent, bias_sum, p, need_dx, dtype):
        """Gradients and input cotangent, chunk by chunk, from ``cotangent(n0, n1, Z)``, which writes
        the transformed output cotangent of images ``n0:n1`` into ``Z (16, O, P)``, and ``bias_sum
        (O,)``, its plain sum per channel (fixed order: :mod:`nograd.kernels.fused`)."""
        wk = _winograd()
        TH, TW = self._tiles(xshape)[4:6]
        W = p["weight"]
        dx = np.empty(xshape, dtype=dtype) if need_dx else None
        U = wk.filter_transform(self._weight(p, dtype)) if need_dx else None
        ph, pw = self.padding
        dU = _tiles_mod().backward(tiles, U, self.out_channels, ph, pw, TH, TW, cotangent, dx, dtype)
        grads = {"weight": wk.filter_grad_transform(dU).astype(W.dtype, copy=False)}
        if bias_sum is not None:
            grads["bias"] = bias_sum.astype(W.dtype)
        return dx, grads

    def _jvp_winograd(self, x, dx, dparams, p):
        wk = _winograd()
        N, O, OH, OW, TH, TW, P = self._tiles(x.shape)
        V = self._wino_v(x, TH, TW, P)
        U = wk.filter_transform(self._weight(p, x.dtype))
        y = self._forward_winograd(x, p)[0]      # the forward's numbers (its kernels, its layout)
        M = np.zeros((16, O, P), dtype=x.dtype)
        if dx is not None:
            check_like(dx, x.shape, "dx")
            M += np.matmul(U, self._wino_v(dx, TH, TW, P))
        if "weight" in dparams:
            M += np.matmul(wk.filter_transform(dparams["weight"].astype(x.dtype, copy=False)), V)
        return y, self._wino_out(M, dparams.get("bias"), (N, O, OH, OW), TH, TW, x.dtype)
