r"""Static hypernetworks: a small network generates some of the parameters of any target module.

Ha, Dai & Le, "HyperNetworks" (2016), §3.1 ("static hypernetwork"): the weights of a main network
are the output of a hypernetwork, and both are trained end to end. Here the generated arrays are
handed to the target through the ``params=`` override of the module contract (DESIGN.md §2), so
any :class:`~nograd.core.module.Module` can be a target and nothing in it changes.

Two generators:

* ``kind="conv"`` — Ha et al. §3.1 for convolution kernels. Each generated kernel
  ``(O, C, kh, kw)`` is tiled into ``(O/N_out)·(C/N_in)`` basic blocks ``(N_out, N_in, kh, kw)``
  (the paper's tiling for deep ResNets); block ``j`` has a learned layer embedding
  :math:`z_j \in \mathbb R^{N_z}` and one :class:`KernelGenerator`, shared by all blocks, maps it
  to the block by the two-layer linear network

  .. math::
      a_i = W_i z_j + B_i \;(i = 1..N_{in}), \qquad K_i = \langle W_{out}, a_i\rangle + B_{out},
      \qquad K^j = (K_1, …, K_{N_{in}}).

* ``kind="mlp"`` — an MLP over conditional embeddings :math:`e_c` (one per task/condition) that
  outputs the flattened generated arrays; with ``chunk_size`` the output is produced in chunks, each
  from ``[e_c; c_k]`` with a learned chunk embedding :math:`c_k` (the chunked hypernetworks of
  von Oswald et al. 2020, *hypnettorch*), so the generator's output layer stays small.

The dynamic hypernetwork of the same paper (§3.2), :class:`~nograd.models.hyperlstm.HyperLSTM`,
lives in :mod:`nograd.models.hyperlstm`; it is re-exported here, so
``from nograd.models.hypernet import HyperLSTM`` gives the same class.

Backward is the chain rule by hand: the target's backward gives gradients for the generated arrays,
which the generator's backward pulls back to the embeddings and the generator weights; jvp pushes
the tangents of embeddings and generator weights through the generator, then through the target.

>>> import numpy as np
>>> from nograd.models import cnn
>>> net = cnn((1, 8, 8), 10, rng=0, channels=(16, 32), kernel_size=3)
>>> hyper = HyperNetwork(net, names=["3.weight"], block=(16, 16), z_dim=4, hidden=4, rng=0)
>>> hyper.param_counts()["generated"], hyper(np.zeros((2, 1, 8, 8), np.float32)).shape
(4608, (2, 10))
"""
from __future__ import annotations

import numpy as np

from ..core.checks import as_rng, check_array, check_dtype, check_int, check_like, check_positive
from ..core.module import Module, Sequential
from ..layers import Linear, get_activation
from ..layers.linear import affine_tangent
from .hyperlstm import HyperLSTM  # noqa: F401  (re-exported: the old path of the dynamic hypernetwork)


class KernelGenerator(Module):
    r"""The two-layer linear kernel generator of Ha et al. §3.1 (eq. 2, the static hypernetwork).

    Shapes: ``x = z (M, N_z) -> K (M, N_out, N_in, kh, kw)`` (PyTorch conv layout per block);
    ``w_in (N_in·d, N_z)``, ``b_in (N_in·d,)`` stack the paper's :math:`W_i, B_i`;
    ``w_out (N_out·kh·kw, d)``, ``b_out (N_out·kh·kw,)`` are :math:`W_{out}, B_{out}`.

    .. math::
        a = z W_{in}^\top + b_{in} \in \mathbb R^{M \times N_{in} \times d},\quad
        K = a W_{out}^\top + b_{out};\qquad
        \bar a = \bar K W_{out},\; \bar W_{out} = \textstyle\sum \bar K^\top a,\;
        \bar W_{in} = \bar a^\top z,\; \bar z = \bar a W_{in}.

    Both layers are linear, so the jvp reuses the products. ``kernel_std`` sets the initial
    scale of the generated kernels (He's :math:`\sqrt{2/\mathrm{fan\_in}}` of the target conv when
    the :class:`HyperNetwork` builds it): ``w_in ~ N(0, 1/N_z)`` keeps :math:`a` at unit scale for unit
    embeddings and ``w_out ~ N(0, σ²/d)`` gives kernels of standard deviation σ.
    """

    def __init__(self, z_dim, in_block, out_block, kernel_size, hidden=None, *, kernel_std=0.1,
                 rng=None, dtype=np.float32):
        super().__init__()
        for v, n in ((z_dim, "z_dim"), (in_block, "in_block"), (out_block, "out_block")):
            check_positive(v, n, integer=True)
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else tuple(kernel_size)
        check_positive(kh, "kernel_size", integer=True)
        check_positive(kw, "kernel_size", integer=True)
        d = int(z_dim if hidden is None else hidden)
        check_positive(d, "hidden", integer=True)
        dt = check_dtype(dtype)
        rng = as_rng(rng)
        self.z_dim, self.in_block, self.out_block, self.hidden = int(z_dim), int(in_block), int(out_block), d
        self.kernel_size = (int(kh), int(kw))
        k = self.out_block * kh * kw
        self._own["w_in"] = (rng.standard_normal((self.in_block * d, self.z_dim)) / np.sqrt(self.z_dim)).astype(dt)
        self._own["b_in"] = np.zeros(self.in_block * d, dt)
        self._own["w_out"] = (rng.standard_normal((k, d)) * (kernel_std / np.sqrt(d))).astype(dt)
        self._own["b_out"] = np.zeros(k, dt)

    def extra_repr(self):
        return (f"z_dim={self.z_dim}, block=({self.out_block}, {self.in_block}, "
                f"{self.kernel_size[0]}, {self.kernel_size[1]}), hidden={self.hidden}")

    @property
    def block_shape(self):
        return (self.out_block, self.in_block) + self.kernel_size

    def _check(self, z):
        check_array(z, "x", ndim=2)
        if z.shape[1] != self.z_dim:
            raise ValueError(f"x (the embeddings z) must have {self.z_dim} features in its last axis, "
                             f"got shape {z.shape}")

    def _cast(self, p, dtype):
        return {k: (v if v.dtype == dtype else v.astype(dtype)) for k, v in p.items()}

    def _kernel(self, k):
        """``(M, N_in, N_out·kh·kw) -> (M, N_out, N_in, kh, kw)``."""
        M = k.shape[0]
        kh, kw = self.kernel_size
        return np.ascontiguousarray(
            k.reshape(M, self.in_block, self.out_block, kh, kw).transpose(0, 2, 1, 3, 4))

    def _unkernel(self, K):
        """The inverse permutation: ``(M, N_out, N_in, kh, kw) -> (M, N_in, N_out·kh·kw)``."""
        M = K.shape[0]
        return np.ascontiguousarray(K.transpose(0, 2, 1, 3, 4)).reshape(M, self.in_block, -1)

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check(x)
        p = self._cast(self._use(params), x.dtype)
        M, d = x.shape[0], self.hidden
        a = (x @ p["w_in"].T + p["b_in"]).reshape(M, self.in_block, d)
        k = a @ p["w_out"].T + p["b_out"]
        return self._kernel(k), (x, a)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        z, a = cache
        M = z.shape[0]
        check_like(dy, (M,) + self.block_shape)
        p = self._use(params)
        q = self._cast(p, dy.dtype)
        dk = self._unkernel(dy)                                        # (M, N_in, N_out·kh·kw)
        dk2, a2 = dk.reshape(-1, dk.shape[-1]), a.reshape(-1, self.hidden)
        grads = {"w_out": dk2.T @ a2, "b_out": dk2.sum(axis=0)}
        da = (dk @ q["w_out"]).reshape(M, -1)                          # (M, N_in·d)
        grads["w_in"] = da.T @ z
        grads["b_in"] = da.sum(axis=0)
        grads = {k: grads[k].astype(p[k].dtype, copy=False) for k in ("w_in", "b_in", "w_out", "b_out")}
        return (da @ q["w_in"] if need_dx else None), grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        self._check(x)
        p = self._cast(self._use(params), x.dtype)
        dp = self._cast(self._tangents(dparams) or {}, x.dtype)
        M, d = x.shape[0], self.hidden
        a = (x @ p["w_in"].T + p["b_in"]).reshape(M, self.in_block, d)
        y = self._kernel(a @ p["w_out"].T + p["b_out"])
        if dx is not None:
            check_like(dx, x.shape, "dx")
        da = affine_tangent(x, dx, p["w_in"], dp.get("w_in"), dp.get("b_in"))
        dk = da.reshape(M, self.in_block, d) @ p["w_out"].T
        if "w_out" in dp:
            dk += a @ dp["w_out"].T
        if "b_out" in dp:
            dk += dp["b_out"]
        return y, self._kernel(dk)


class HyperNetwork(Module):
    r"""A target module some of whose parameters are generated by a hypernetwork (Ha et al. §3.1).

    Parameters
    ----------
    target : any Module; its arrays named in ``names`` are generated, the rest stay trainable and
        appear here as ``"target.<name>"``.
    kind : ``"conv"`` (the static kernel hypernetwork; ``names`` must be 4-D conv weights whose
        out/in channels are multiples of ``block`` and share one kernel size) or ``"mlp"`` (an MLP
        over conditional embeddings, any arrays).
    names : the target parameter names to generate; default: every 4-D weight (``"conv"``) or every
        parameter (``"mlp"``).
    z_dim, hidden, block : ``"conv"``: embedding size :math:`N_z`, the generator's :math:`d`
        (default :math:`N_z`) and the basic block ``(N_out, N_in)`` (default: the smallest kernel's).
    num_conditions, emb_dim, hidden, activation, chunk_size, chunk_dim : ``"mlp"``: the number of
        conditional embeddings of size ``emb_dim``, the MLP's hidden sizes (a tuple; ``()`` gives a
        single Linear), its activation, and the optional chunking (chunk size and chunk embedding size).

    Trainable arrays: ``"z.<name>"`` (layer embeddings, ``(blocks, N_z)``) or ``"emb"``
    (``(num_conditions, emb_dim)``) and ``"chunk_emb"``; ``"target.<name>"``; ``"generator.*"``.
    ``forward(x, ..., condition=c)`` selects the condition of the MLP kind (default: the attribute
    ``condition``, 0 unless set), and so do ``jvp`` and the gradients of ``backward``.
    """

    def __init__(self, target, *, kind="conv", names=None, z_dim=4, hidden=None, block=None,
                 num_conditions=1, emb_dim=8, activation="tanh", chunk_size=None, chunk_dim=4,
                 rng=None, dtype=None):
        super().__init__()
        if not isinstance(target, Module):
            raise TypeError(f"target must be a nograd Module, got {type(target).__name__}")
        if kind not in ("conv", "mlp"):
            raise ValueError(f"kind must be 'conv' or 'mlp', got {kind!r}")
        tp = target.params
        dt = check_dtype(dtype if dtype is not None else (target.dtype or np.float32))
        rng = as_rng(rng)
        if names is None:
            names = [k for k, v in tp.items() if v.ndim == 4] if kind == "conv" else list(tp)
        names = list(names)
        if not names:
            raise ValueError("names is empty: the hypernetwork must generate at least one array")
        for n in names:
            if n not in tp:
                raise ValueError(f"names has {n!r}, which is not a parameter of the target; "
                                 f"its parameters are {list(tp)}")
        self.target, self.kind, self.names, self.condition = target, kind, names, 0
        self.shapes = {n: tp[n].shape for n in names}
        if kind == "conv":
            self._build_conv(z_dim, hidden, block, rng, dt)
        else:
            self._build_mlp(num_conditions, emb_dim, hidden, activation, chunk_size, chunk_dim, rng, dt)
        for k, v in tp.items():
            if k not in self.shapes:
                self._own["target." + k] = v.astype(dt)

    # ----------------------------------------------------------------- construction
    def _build_conv(self, z_dim, hidden, block, rng, dt):
        shapes = list(self.shapes.values())
        for n, s in self.shapes.items():
            if len(s) != 4:
                raise ValueError(f"kind='conv' generates 4-D conv weights; {n!r} has shape {s}")
        if len({s[2:] for s in shapes}) != 1:
            raise ValueError(f"kind='conv' needs one kernel size for all generated weights, got "
                             f"{ {n: s[2:] for n, s in self.shapes.items()} }")
        if block is None:
            block = (min(s[0] for s in shapes), min(s[1] for s in shapes))
        n_out, n_in = int(block[0]), int(block[1])
        for n, s in self.shapes.items():
            if s[0] % n_out or s[1] % n_in:
                raise ValueError(f"{n!r} of shape {s} does not tile into blocks of "
                                 f"(out, in) = {(n_out, n_in)}")
        fan_in = min(s[1] * s[2] * s[3] for s in shapes)
        self._children["generator"] = KernelGenerator(
            z_dim, n_in, n_out, shapes[0][2:], hidden, kernel_std=np.sqrt(2.0 / fan_in), rng=rng, dtype=dt)
        self.block = (n_out, n_in)
        for n, s in self.shapes.items():
            self._own["z." + n] = rng.standard_normal(((s[0] // n_out) * (s[1] // n_in), int(z_dim))).astype(dt)

    def _build_mlp(self, num_conditions, emb_dim, hidden, activation, chunk_size, chunk_dim, rng, dt):
        check_positive(num_conditions, "num_conditions", integer=True)
        check_positive(emb_dim, "emb_dim", integer=True)
        hidden = () if hidden is None else ((hidden,) if np.isscalar(hidden) else tuple(hidden))
        self.total = int(sum(int(np.prod(s)) for s in self.shapes.values()))
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        width = int(emb_dim)
        if self.chunk_size is not None:
            check_positive(chunk_size, "chunk_size", integer=True)
            check_positive(chunk_dim, "chunk_dim", integer=True)
            self.num_chunks = -(-self.total // self.chunk_size)
            out = self.chunk_size
            width += int(chunk_dim)
        else:
            self.num_chunks, out = 1, self.total
        self.emb_dim = int(emb_dim)
        self._own["emb"] = rng.standard_normal((int(num_conditions), self.emb_dim)).astype(dt)
        if self.chunk_size is not None:
            self._own["chunk_emb"] = rng.standard_normal((self.num_chunks, int(chunk_dim))).astype(dt)
        layers, w = [], width
        for h in hidden:
            layers += [Linear(w, int(h), rng=rng, init="xavier_uniform", dtype=dt), get_activation(activation)]
            w = int(h)
        head = Linear(w, out, rng=rng, init="xavier_uniform", dtype=dt)
        head._own["weight"] *= dt.type(0.1)          # small initial generated weights
        layers.append(head)
        self._children["generator"] = Sequential(*layers)

    # ----------------------------------------------------------------- counts and plumbing
    def param_counts(self) -> dict:
        """``{"hypernetwork": trainable arrays here, "target": the plain target's, "generated": the
        entries the generator produces, "generator": the generator's own weights}``."""
        return {"hypernetwork": self.num_params, "target": self.target.num_params,
                "generated": int(sum(int(np.prod(s)) for s in self.shapes.values())),
                "generator": self._children["generator"].num_params}

    def extra_repr(self):
        return f"kind={self.kind!r}, generated={self.names}"

    @property
    def buffers(self):
        out = super().buffers
        out.update({"target." + k: v for k, v in self.target.buffers.items()})
        return out

    def astype(self, dtype):
        super().astype(dtype)
        self.target.astype(dtype)
        return self

    def _parts(self, params, what="params"):
        """Own arrays (with overrides) and the generator's override dict."""
        self._check_keys(params, what)
        if not params:
            return self._own, None
        own = {k: v for k, v in params.items() if k in self._own}
        return (self._use(own) if own else self._own), self._split(params, "generator")

    def _gen_input(self, p, condition, dtype):
        """The generator's input rows: the layer embeddings (conv) or ``[e_c; c_k]`` rows (mlp)."""
        if self.kind == "conv":
            return np.concatenate([p["z." + n] for n in self.names]).astype(dtype, copy=False)
        emb = p["emb"]
        check_int(condition, "condition", low=0, high=emb.shape[0] - 1)
        e = np.repeat(emb[condition][None].astype(dtype, copy=False), self.num_chunks, axis=0)
        if self.chunk_size is None:
            return e
        return np.concatenate([e, p["chunk_emb"].astype(dtype, copy=False)], axis=1)

    def _gen_input_tangent(self, dp, condition, dtype):
        if self.kind == "conv":
            if not any("z." + n in dp for n in self.names):
                return None
            return np.concatenate([dp.get("z." + n, np.zeros(self._own["z." + n].shape))
                                   for n in self.names]).astype(dtype, copy=False)
        if "emb" not in dp and "chunk_emb" not in dp:
            return None
        de = dp["emb"][condition] if "emb" in dp else np.zeros(self.emb_dim)
        rows = np.repeat(de[None].astype(dtype, copy=False), self.num_chunks, axis=0)
        if self.chunk_size is None:
            return rows
        dc = dp.get("chunk_emb", np.zeros(self._own["chunk_emb"].shape))
        return np.concatenate([rows, dc.astype(dtype, copy=False)], axis=1)

    def _unpack(self, out):
        """Generator output -> ``{name: array}`` in the target's shapes."""
        res, i = {}, 0
        if self.kind == "conv":
            n_out, n_in = self.block
            for n in self.names:
                O, C, kh, kw = self.shapes[n]
                p, q = O // n_out, C // n_in
                blocks = out[i:i + p * q].reshape(p, q, n_out, n_in, kh, kw)
                res[n] = np.ascontiguousarray(blocks.transpose(0, 2, 1, 3, 4, 5)).reshape(O, C, kh, kw)
                i += p * q
            return res
        flat = out.reshape(-1)
        for n in self.names:
            size = int(np.prod(self.shapes[n]))
            res[n] = flat[i:i + size].reshape(self.shapes[n])
            i += size
        return res

    def _pack(self, arrays, like):
        """The adjoint of :meth:`_unpack` (a permutation, plus zeros for the unused chunk tail)."""
        if self.kind == "conv":
            n_out, n_in = self.block
            rows = []
            for n in self.names:
                O, C, kh, kw = self.shapes[n]
                g = arrays[n].reshape(O // n_out, n_out, C // n_in, n_in, kh, kw)
                rows.append(g.transpose(0, 2, 1, 3, 4, 5).reshape(-1, n_out, n_in, kh, kw))
            return np.ascontiguousarray(np.concatenate(rows))
        flat = np.zeros(like.size, like.dtype)
        flat[:self.total] = np.concatenate([arrays[n].reshape(-1) for n in self.names])
        return flat.reshape(like.shape)

    # ----------------------------------------------------------------- the three maps
    def forward(self, x, *, train=False, rng=None, params=None, condition=None):
        condition = self.condition if condition is None else condition
        p, gp = self._parts(params)
        dtype = x.dtype if isinstance(x, np.ndarray) and x.dtype.kind == "f" else self.dtype
        u = self._gen_input(p, condition, dtype)
        out, gcache = self._children["generator"].forward(u, train=train, rng=rng, params=gp)
        tparams = {k[7:]: v for k, v in p.items() if k.startswith("target.")}
        tparams.update(self._unpack(out))
        y, tcache = self.target.forward(x, train=train, rng=rng, params=tparams)
        return y, (tcache, gcache, tparams, out, condition)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        tcache, gcache, tparams, out, condition = cache
        p, gp = self._parts(params)
        dx, tg = self.target.backward(tcache, dy, params=tparams, need_dx=need_dx)
        dout = self._pack({n: tg[n] for n in self.names}, out)
        du, gg = self._children["generator"].backward(gcache, dout, params=gp, need_dx=True)
        grads = {}
        if self.kind == "conv":
            i = 0
            for n in self.names:
                m = self._own["z." + n].shape[0]
                grads["z." + n] = du[i:i + m]
                i += m
        else:
            demb = np.zeros(p["emb"].shape, du.dtype)
            demb[condition] = du[:, :self.emb_dim].sum(axis=0)
            grads["emb"] = demb
            if self.chunk_size is not None:
                grads["chunk_emb"] = du[:, self.emb_dim:]
        for k in tg:
            if k not in self.shapes:
                grads["target." + k] = tg[k]
        grads = {k: grads[k].astype(p[k].dtype, copy=False) for k in self._own}
        grads.update(self._prefixed(gg, "generator"))
        return dx, grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None, condition=None):
        condition = self.condition if condition is None else condition
        p, gp = self._parts(params)
        self._check_keys(dparams, "dparams")
        dparams = dparams or {}
        for k, v in dparams.items():
            if k in self._own and (not isinstance(v, np.ndarray) or v.shape != self._own[k].shape):
                raise ValueError(f"dparams[{k!r}] must be an array of shape {self._own[k].shape}")
        dtype = x.dtype if isinstance(x, np.ndarray) and x.dtype.kind == "f" else self.dtype
        u = self._gen_input(p, condition, dtype)
        du = self._gen_input_tangent(dparams, condition, dtype)
        out, dout = self._children["generator"].jvp(u, du, self._split(dparams, "generator"),
                                                    train=train, rng=rng, params=gp)
        tparams = {k[7:]: v for k, v in p.items() if k.startswith("target.")}
        tparams.update(self._unpack(out))
        dt = {k[7:]: v for k, v in dparams.items() if k.startswith("target.")}
        dt.update(self._unpack(dout))
        return self.target.jvp(x, dx, dt, train=train, rng=rng, params=tparams)

