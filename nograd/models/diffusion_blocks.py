r"""The residual block of the diffusion U-Net: two GroupNorm–SiLU–conv stages and a time/class bias.

Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", Appendix B) build their U-Net from the
wide-ResNet blocks of Zagoruyko & Komodakis with group normalisation and the embedded time step
added to the feature map between the two convolutions. With ``e`` the conditioning vector:

.. math::
    h = \mathrm{Conv}_1(\mathrm{SiLU}(\mathrm{GN}_1(x))) + (W_e\,\mathrm{SiLU}(e) + b_e)[:, :, None, None],
    \qquad y = \mathrm{Conv}_2(\mathrm{SiLU}(\mathrm{GN}_2(h))) + s(x),

``s`` the identity, or a 1×1 convolution when the channel count changes. The block has two
inputs, so its maps take ``e`` (and its cotangent/tangent) beside ``x``.
"""
from __future__ import annotations

import numpy as np

from ..core.checks import check_array
from ..core.module import Module, Sequential
from ..layers import Conv2d, GroupNorm, Linear, SiLU


class ResBlock(Module):
    """``(x (N, C_in, H, W), e (N, E)) -> y (N, C_out, H, W)``, as in the module docstring.

    Children: ``in_layers`` (GroupNorm, SiLU, 3×3 Conv2d), ``emb`` (SiLU, Linear(E, C_out)),
    ``out_layers`` (GroupNorm, SiLU, 3×3 Conv2d) and ``skip`` (a 1×1 Conv2d, only when
    ``C_in != C_out``). ``groups`` must divide both channel counts.
    """

    def __init__(self, in_channels, out_channels, emb_dim, *, groups=8, rng=None, dtype=np.float32):
        super().__init__()
        kw = {"rng": rng, "dtype": dtype}
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self._children["in_layers"] = Sequential(GroupNorm(groups, in_channels, dtype=dtype), SiLU(),
                                                 Conv2d(in_channels, out_channels, 3, padding=1, **kw))
        self._children["emb"] = Sequential(SiLU(), Linear(emb_dim, out_channels, **kw))
        self._children["out_layers"] = Sequential(GroupNorm(groups, out_channels, dtype=dtype), SiLU(),
                                                  Conv2d(out_channels, out_channels, 3, padding=1, **kw))
        if in_channels != out_channels:
            self._children["skip"] = Conv2d(in_channels, out_channels, 1, **kw)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}"

    def _kids(self, params):
        self._check_keys(params)
        return [(c, self._split(params, n)) for n, c in self._children.items()]

    def forward(self, x, e, *, train=False, rng=None, params=None):
        check_array(x, "x", ndim=4)
        (inl, pi), (emb, pe), (outl, po), *skip = self._kids(params)
        h, ci = inl.forward(x, params=pi)
        b, ce = emb.forward(e, params=pe)
        h = h + b[:, :, None, None]
        y, co = outl.forward(h, params=po)
        if skip:
            s, cs = skip[0][0].forward(x, params=skip[0][1])
            y = y + s
        else:
            cs = None
            y = y + x
        return y, (ci, ce, co, cs)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        """Returns ``(dx, de, grads)``: the cotangents of both inputs and of the arrays."""
        ci, ce, co, cs = cache
        (inl, pi), (emb, pe), (outl, po), *skip = self._kids(params)
        grads = {}
        dh, g = outl.backward(co, dy, params=po)
        grads.update(self._prefixed(g, "out_layers"))
        de, g = emb.backward(ce, dh.sum(axis=(2, 3)), params=pe)
        grads.update(self._prefixed(g, "emb"))
        dx, g = inl.backward(ci, dh, params=pi, need_dx=need_dx)
        grads.update(self._prefixed(g, "in_layers"))
        if skip:
            dxs, g = skip[0][0].backward(cs, dy, params=skip[0][1], need_dx=need_dx)
            grads.update(self._prefixed(g, "skip"))
        else:
            dxs = dy
        if need_dx:
            dx = dx + dxs
        order = [k for k in self.params if k in grads]
        return dx, de, {k: grads[k] for k in order}

    def jvp(self, x, dx, e, de, dparams=None, *, params=None):
        """Forward mode along ``dx``, ``de`` (either may be None) and ``dparams``: ``(y, dy)``."""
        check_array(x, "x", ndim=4)
        self._check_keys(dparams, "dparams")
        kids = self._kids(params)
        tan = [self._split(dparams, n) for n in self._children]
        (inl, pi), (emb, pe), (outl, po), *skip = kids
        h, dh = inl.jvp(x, dx, tan[0], params=pi)
        b, db = emb.jvp(e, de, tan[1], params=pe)
        h, dh = h + b[:, :, None, None], dh + db[:, :, None, None]
        y, dy = outl.jvp(h, dh, tan[2], params=po)
        if skip:
            s, ds = skip[0][0].jvp(x, dx, tan[3], params=skip[0][1])
        else:
            s, ds = x, (0 if dx is None else dx)
        return y + s, dy + ds
