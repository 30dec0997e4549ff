r"""A small U-Net noise predictor :math:`\epsilon_\theta(x_t, t[, c])` for diffusion models.

Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", §4 and Appendix B): a U-Net (Ronneberger
et al. 2015) of residual blocks with group normalisation, the time step given to every block through
a sinusoidal embedding and an MLP, down-sampling on the way in, up-sampling on the way out and skip
connections (concatenation) between the two paths at each resolution. Sizes here are for 8×8 or
28×28 grey images trained in minutes on a CPU: two resolutions by default, no attention.

With ``L = len(channel_mult)`` levels, channels ``c_i = channels · channel_mult[i]`` and
:class:`~nograd.models.diffusion_blocks.ResBlock` ``R``::

    e   = MLP(Sinusoidal(t)) [+ Embedding(label)]
    h   = Conv_in(x)
    for i < L:  h = R_down_i(h, e); skip_i = h; h = AvgPool2(h) unless i = L-1
    h   = R_mid(h, e)
    for i ≥ 0 descending:  h = R_up_i([h, skip_i], e); h = Upsample2(h) unless i = 0
    eps = Conv_out(SiLU(GN(h)))

The time step ``t`` and the class ``label`` condition the map but are not differentiated: the
maps of the contract are in ``x`` and the arrays (``forward(x, t=..., labels=...)``,
``backward(cache, dy) -> (dx, grads)``, ``jvp(x, dx, dparams, t=..., labels=...)``).
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_array, check_dtype, check_like, check_positive, is_int
from ..core.module import Module, Sequential
from ..layers import AvgPool2d, Conv2d, Embedding, GroupNorm, Linear, SiLU, SinusoidalEmbedding, Upsample2d
from .diffusion_blocks import ResBlock


class UNet(Module):
    r"""Noise predictor ``x (N, C, H, W), t (N,) [, labels (N,)] -> eps (N, C, H, W)``.

    ``H`` and ``W`` must be divisible by ``2^(L-1)``. Cost per sample is dominated by the 3×3
    convolutions: about ``2·9·c_i²·H_i·W_i`` multiply-adds per block at each level.

    Parameters
    ----------
    in_channels : image channels ``C`` (1 for grey digits).
    channels : base width ``c``; ``channel_mult`` the width of each level as a multiple of ``c``.
    emb_dim : size of the conditioning vector ``e`` (default ``4c``).
    num_classes : ``None`` for an unconditional model; else class labels ``0..K-1`` are embedded
        and added to ``e``, and one extra row (index ``K``) is the "no label" used when
        ``labels=None`` (as in classifier-free guidance, Ho & Salimans 2022).
    groups : GroupNorm groups (must divide every width).
    rng, dtype : initial weights' seed/Generator and dtype.
    """

    def __init__(self, in_channels=1, channels=32, channel_mult=(1, 2), emb_dim=None, num_classes=None,
                 *, groups=8, rng=None, dtype=np.float32):
        super().__init__()
        check_positive(in_channels, "in_channels", integer=True)
        check_positive(channels, "channels", integer=True)
        mult = tuple(channel_mult)
        if not mult or not all(is_int(m) and m > 0 for m in mult):
            raise ValueError(f"channel_mult must be a non-empty tuple of positive ints, got {channel_mult!r}")
        emb_dim = 4 * channels if emb_dim is None else check_positive(emb_dim, "emb_dim", integer=True)
        if num_classes is not None:
            check_positive(num_classes, "num_classes", integer=True)
        widths = [channels * m for m in mult]
        for w in widths:
            if w % groups:
                raise ValueError(f"groups ({groups}) must divide every width {widths}")
        dt = check_dtype(dtype)
        rng = as_rng(rng)
        kw = {"rng": rng, "dtype": dt}
        self.in_channels, self.channels, self.channel_mult = int(in_channels), int(channels), mult
        self.emb_dim, self.num_classes, self.groups = int(emb_dim), num_classes, int(groups)
        self.levels = len(mult)
        ch = self._children
        ch["time"] = SinusoidalEmbedding(channels if channels % 2 == 0 else channels + 1)
        ch["time_mlp"] = Sequential(Linear(ch["time"].dim, emb_dim, **kw), SiLU(), Linear(emb_dim, emb_dim, **kw))
        if num_classes is not None:
            ch["label"] = Embedding(num_classes + 1, emb_dim, rng=rng, dtype=dt)
        ch["conv_in"] = Conv2d(in_channels, channels, 3, padding=1, **kw)
        prev = channels
        for i, w in enumerate(widths):
            ch[f"down{i}"] = ResBlock(prev, w, emb_dim, groups=groups, **kw)
            prev = w
        ch["mid"] = ResBlock(prev, prev, emb_dim, groups=groups, **kw)
        for i in reversed(range(self.levels)):
            ch[f"up{i}"] = ResBlock(prev + widths[i], widths[i], emb_dim, groups=groups, **kw)
            prev = widths[i]
        ch["out"] = Sequential(GroupNorm(groups, channels, dtype=dt), SiLU(),
                               Conv2d(channels, in_channels, 3, padding=1, **kw))
        self._pool, self._upsample = AvgPool2d(2), Upsample2d(2)

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, channels={self.channels}, "
                f"channel_mult={self.channel_mult}, num_classes={self.num_classes}")

    # ----------------------------------------------------------------- inputs
    def _inputs(self, x, t, labels):
        check_array(x, "x", ndim=4)
        n, c, hgt, wid = x.shape
        if c != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels in axis 1, got shape {x.shape}")
        step = 2 ** (self.levels - 1)
        if hgt % step or wid % step:
            raise ValueError(f"x's height and width must be divisible by {step}, got shape {x.shape}")
        if t is None:
            raise TypeError("t (the time step of each sample) is required")
        t = np.asarray(t)
        if t.dtype.kind not in "iuf":
            raise TypeError(f"t must hold numbers, got dtype {t.dtype}")
        if t.ndim == 0:
            t = np.full(n, t)
        if t.shape != (n,):
            raise ValueError(f"t must be a scalar or have shape ({n},), got {t.shape}")
        if self.num_classes is None:
            if labels is not None:
                raise ValueError("labels given to an unconditional UNet (num_classes=None)")
        else:
            labels = np.full(n, self.num_classes) if labels is None else np.asarray(labels)
            if labels.shape != (n,) or labels.dtype.kind not in "iu":
                raise ValueError(f"labels must be {n} integers, got {labels.dtype} array of shape {labels.shape}")
            if labels.min() < 0 or labels.max() > self.num_classes:
                raise ValueError(f"labels must lie in [0, {self.num_classes}], got {labels.min()}..{labels.max()}")
        return t.astype(x.dtype), labels

    def _p(self, params, name):
        return self._split(params, name)

    # ----------------------------------------------------------------- the three maps
    def forward(self, x, *, t=None, labels=None, train=False, rng=None, params=None):
        self._check_keys(params)
        t, labels = self._inputs(x, t, labels)
        k, p = self._children, params
        s, _ = k["time"].forward(t)
        e, c_m = k["time_mlp"].forward(s, params=self._p(p, "time_mlp"))
        c_l = None
        if labels is not None:
            le, c_l = k["label"].forward(labels, params=self._p(p, "label"))
            e = e + le
        h, c_in = k["conv_in"].forward(x, params=self._p(p, "conv_in"))
        blocks, skips, resize, split = {}, [], {}, []
        for i in range(self.levels):
            h, blocks[f"down{i}"] = k[f"down{i}"].forward(h, e, params=self._p(p, f"down{i}"))
            skips.append(h)
            if i < self.levels - 1:
                h, resize[f"pool{i}"] = self._pool.forward(h)
        h, blocks["mid"] = k["mid"].forward(h, e, params=self._p(p, "mid"))
        for i in reversed(range(self.levels)):
            split.append(h.shape[1])
            h, blocks[f"up{i}"] = k[f"up{i}"].forward(np.concatenate([h, skips[i]], axis=1), e,
                                                      params=self._p(p, f"up{i}"))
            if i > 0:
                h, resize[f"upsample{i}"] = self._upsample.forward(h)
        y, c_out = k["out"].forward(h, params=self._p(p, "out"))
        return y, (x.shape, c_m, c_l, c_in, blocks, resize, split, c_out)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        """Reverse mode: ``(dx, grads)``; the cotangent of ``e`` is summed over every block and
        sent through the label embedding and the time MLP (the time step itself gets none)."""
        xshape, c_m, c_l, c_in, blocks, resize, split, c_out = cache
        check_like(dy, xshape)
        self._check_keys(params)
        k, p = self._children, params
        grads = {}
        dh, g = k["out"].backward(c_out, dy, params=self._p(p, "out"))
        grads.update(self._prefixed(g, "out"))
        de = 0
        dskips = [None] * self.levels
        for i in range(self.levels):                 # the up path in reverse: up0, upsample1, up1, ...
            if i > 0:
                dh = self._upsample.backward(resize[f"upsample{i}"], dh)[0]
            dcat, de_i, g = k[f"up{i}"].backward(blocks[f"up{i}"], dh, params=self._p(p, f"up{i}"))
            grads.update(self._prefixed(g, f"up{i}"))
            de = de + de_i
            c = split[self.levels - 1 - i]
            dh, dskips[i] = dcat[:, :c], dcat[:, c:]
        dh, de_i, g = k["mid"].backward(blocks["mid"], dh, params=self._p(p, "mid"))
        grads.update(self._prefixed(g, "mid"))
        de = de + de_i
        for i in reversed(range(self.levels)):
            if i < self.levels - 1:
                dh = self._pool.backward(resize[f"pool{i}"], dh)[0]
            dh, de_i, g = k[f"down{i}"].backward(blocks[f"down{i}"], dh + dskips[i],
                                                 params=self._p(p, f"down{i}"))
            grads.update(self._prefixed(g, f"down{i}"))
            de = de + de_i
        dx, g = k["conv_in"].backward(c_in, dh, params=self._p(p, "conv_in"), need_dx=need_dx)
        grads.update(self._prefixed(g, "conv_in"))
        if c_l is not None:
            grads.update(self._prefixed(k["label"].backward(c_l, de, params=self._p(p, "label"))[1], "label"))
        g = k["time_mlp"].backward(c_m, de, params=self._p(p, "time_mlp"), need_dx=False)[1]
        grads.update(self._prefixed(g, "time_mlp"))
        return dx, {name: grads[name] for name in self.params if name in grads}

    def jvp(self, x, dx, dparams=None, *, t=None, labels=None, train=False, rng=None, params=None):
        """Forward mode along the image tangent ``dx`` (None: zero) and ``dparams``: ``(eps, deps)``."""
        self._check_keys(params)
        self._check_keys(dparams, "dparams")
        t, labels = self._inputs(x, t, labels)
        if dx is not None:
            check_like(dx, x.shape, "dx")
        k, p, d = self._children, params, dparams
        s, _ = k["time"].forward(t)
        e, de = k["time_mlp"].jvp(s, None, self._p(d, "time_mlp"), params=self._p(p, "time_mlp"))
        if labels is not None:
            le, dle = k["label"].jvp(labels, None, self._p(d, "label"), params=self._p(p, "label"))
            e, de = e + le, de + dle
        h, dh = k["conv_in"].jvp(x, dx, self._p(d, "conv_in"), params=self._p(p, "conv_in"))
        skips = []
        for i in range(self.levels):
            h, dh = k[f"down{i}"].jvp(h, dh, e, de, self._p(d, f"down{i}"), params=self._p(p, f"down{i}"))
            skips.append((h, dh))
            if i < self.levels - 1:
                h, dh = self._pool(h), self._pool(dh)
        h, dh = k["mid"].jvp(h, dh, e, de, self._p(d, "mid"), params=self._p(p, "mid"))
        for i in reversed(range(self.levels)):
            h = np.concatenate([h, skips[i][0]], axis=1)
            dh = np.concatenate([dh, skips[i][1]], axis=1)
            h, dh = k[f"up{i}"].jvp(h, dh, e, de, self._p(d, f"up{i}"), params=self._p(p, f"up{i}"))
            if i > 0:
                h, dh = self._upsample(h), self._upsample(dh)
        return k["out"].jvp(h, dh, self._p(d, "out"), params=self._p(p, "out"))

    def __call__(self, x, *, t=None, labels=None, **kwargs):
        """Inference: the predicted noise ``forward(x, t=t, labels=labels)[0]``."""
        return self.forward(x, t=t, labels=labels, **kwargs)[0]
