"""The module contract: forward, backward (VJP) and jvp (JVP), with the cache returned.

A :class:`Module` owns trainable arrays (``params``), optional non-trainable state
(``buffers``, e.g. batch-norm running statistics) and child modules. Every module states
three maps (DESIGN.md §2)::

    y, cache   = m.forward(x, train=False, rng=None, params=None)
    dx, grads  = m.backward(cache, dy, params=None, need_dx=True)     # reverse mode
    y, dy      = m.jvp(x, dx, dparams=None, train=False, rng=None, params=None)  # forward mode

The cache is returned, never stored on the module, so a layer can be run several times before
any update (Forward-Forward, PEPITA, MeZO, pipelining). ``params=`` overrides some or all of the
module's arrays for one call (hypernetworks, forward gradients, MeZO); composite modules name their
children's arrays with dotted paths (``"0.weight"``, ``"body.1.bias"``) in a fixed order.

>>> import numpy as np
>>> from nograd.layers import Linear, ReLU
>>> net = Sequential(Linear(3, 4, rng=0), ReLU(), Linear(4, 2, rng=1))
>>> list(net.params)
['0.weight', '0.bias', '2.weight', '2.bias']
>>> x = np.ones((5, 3), np.float32)
>>> y, cache = net.forward(x)
>>> dx, grads = net.backward(cache, np.ones_like(y))
>>> dx.shape, grads["0.weight"].shape
((5, 3), (4, 3))

Rules, metrics and analysis read a model through one structural view, :meth:`Module.leaves` and
:meth:`Module.chain`, and through what its layers declare (see :class:`Module`):

>>> [name for name, _ in net.leaves()]
['0', '1', '2']
>>> [(name, type(m).__name__) for name, m in Sequential(net, Residual(ReLU())).chain()]
[('0.0', 'Linear'), ('0.1', 'ReLU'), ('0.2', 'Linear'), ('1', 'Residual')]
"""
from __future__ import annotations

import numpy as np

from .checks import check_dtype, check_like


def dotted(prefix: str, name: str) -> str:
    """``"prefix.name"``, or ``name`` alone under the root (``prefix == ""``)."""
    return f"{prefix}.{name}" if prefix else name


class Module:
    r"""Base class of every differentiable piece.

    Subclasses put their trainable arrays in ``self._own`` (name → array), non-trainable state in
    ``self._buffers`` and child modules in ``self._children`` — all ordered dicts filled in
    ``__init__`` — and implement :meth:`forward`, :meth:`backward` and :meth:`jvp`.

    **Declarations.** Class attributes state what a learning rule may rely on, so rules read them
    instead of testing classes (the defaults below promise nothing):

    - ``feedback_weight`` — the name of the own array :math:`W` that a feedback rule (FA, DFA)
      replaces in the backward pass: the layer is linear in :math:`W` and in its input, so
      ``backward(cache, dy, params={feedback_weight: B})`` sends ``dy`` down through ``B`` and
      still returns the exact gradient of :math:`W`. ``"weight"`` on Linear and Conv2d.
    - ``dense`` — a fully connected layer :math:`y = x W^\top + b` over the last axis, with
      ``weight (out_features, in_features)``, optional ``bias`` and the attributes
      ``in_features``, ``out_features`` (Linear): the layers of the forward-only rules' blocks.
    - ``elementwise`` — :math:`y_i` depends on :math:`x_i` alone (a diagonal Jacobian, same
      shape): activations, dropout. ``df(x, y)`` is :math:`f'(x)` where the layer is a fixed
      function :math:`y = f(x)` (activations); ``None`` otherwise (dropout's Jacobian is its mask).
    - ``normalization`` — a normalisation layer (LayerNorm, BatchNorm, GroupNorm): its arrays are
      per-feature scales and shifts and its backward transports no weight matrix.
    - ``shape_only`` — only moves entries (Flatten, Reshape): no arrays, the backward is the
      inverse reshape.
    - ``combinator`` — how a composite combines its children: ``"chain"`` runs them one after
      another (Sequential); ``"sum"`` adds their outputs on the same input, plus the input itself
      when there is a single child (Residual); ``None``: the module's own maps (attention, GPT),
      which a rule that needs the structure refuses. A ``"chain"`` or ``"sum"`` composite passes
      each child its part of ``params=`` and has no arrays of its own.
    """

    feedback_weight: str | None = None
    dense: bool = False
    elementwise: bool = False
    df = None
    normalization: bool = False
    shape_only: bool = False
    combinator: str | None = None

    def __init__(self):
        self._own: dict[str, np.ndarray] = {}
        self._buffers: dict[str, np.ndarray] = {}
        self._children: dict[str, Module] = {}

    # ----------------------------------------------------------------- the three maps
    def forward(self, x, *, train=False, rng=None, params=None):
        """Return ``(y, cache)``; ``cache`` holds what :meth:`backward` needs."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, cache, dy, *, params=None, need_dx=True):
        """Return ``(dx, grads)``: the input's cotangent and a dict shaped like ``params``; with
        ``need_dx=False`` a module may skip ``dx`` and return ``None`` (a network's first layer)."""
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        """Return ``(y, dy)``: the output and its derivative along the input tangent ``dx``
        (``None`` means zero) and the parameter tangents ``dparams`` (missing keys mean zero)."""
        raise NotImplementedError(f"{type(self).__name__} does not define jvp")

    def __call__(self, x, **kwargs):
        """Inference: ``forward(x)[0]`` (evaluation mode unless ``train=True`` is passed)."""
        return self.forward(x, **kwargs)[0]

    # ----------------------------------------------------------------- parameters
    @property
    def params(self) -> dict[str, np.ndarray]:
        """Flat ordered dict of every trainable array, own first, then children (dotted names).

        The values are the live arrays: updating them in place updates the model.
        """
        out = dict(self._own)
        for cname, child in self._children.items():
            out.update((f"{cname}.{k}", v) for k, v in child.params.items())
        return out

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Flat ordered dict of non-trainable state (e.g. running statistics), dotted names."""
        out = dict(self._buffers)
        for cname, child in self._children.items():
            out.update((f"{cname}.{k}", v) for k, v in child.buffers.items())
        return out

    @property
    def children(self) -> dict[str, "Module"]:
        return dict(self._children)

    def __getattr__(self, name):
        """``linear.weight``, ``bn.running_mean``, ``net.block``: an own array, buffer or child by
        name — the live objects of ``params``/``buffers`` (assign through them, in place)."""
        for store in ("_own", "_buffers", "_children"):
            found = self.__dict__.get(store, {})
            if name in found:
                return found[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def modules(self, prefix: str = ""):
        """Yield ``(dotted_name, module)`` for this module and every descendant, in order."""
        yield prefix, self
        for cname, child in self._children.items():
            yield from child.modules(dotted(prefix, cname))

    def leaves(self, prefix: str = ""):
        """Yield ``(dotted_name, leaf)`` for every module without children, depth first in the
        order of the children: the execution order of a chain (a Residual gives its body's leaves,
        then its shortcut's). ``dotted(name, k)`` is the key in ``params`` of the leaf's array
        ``k``; a module that is itself a leaf yields ``(prefix, self)``."""
        for name, m in self.modules(prefix):
            if not m._children:
                yield name, m

    def chain(self, prefix: str = "") -> list:
        """The blocks this module runs one after another, ``[(dotted_name, block), ...]``: a
        ``"chain"`` module (Sequential) concatenates its children's chains, so nested Sequentials
        flatten; any other module is one block, itself (a leaf, or a composite such as a Residual
        or an attention block, which a rule needing a plain chain refuses by name)."""
        if self.combinator != "chain":
            return [(prefix, self)]
        out = []
        for cname, child in self._children.items():
            out += child.chain(dotted(prefix, cname))
        return out

    @property
    def num_params(self) -> int:
        return int(sum(a.size for a in self.params.values()))

    @property
    def dtype(self):
        """The dtype of the first parameter (``None`` for a module without parameters)."""
        for a in self.params.values():
            return a.dtype
        return None

    def astype(self, dtype) -> "Module":
        """Convert every float parameter and buffer of this module tree to ``dtype``; returns self.

        An array cannot change dtype in place, so each float array of another dtype is *replaced*
        by a converted copy (an array shared by several entries stays shared), and the array it
        replaces is made read-only: it is retired, the model no longer reads it. An optimizer
        built over the old ``params`` would otherwise keep updating those orphans while the model
        never changes; instead its next ``step`` raises (and :func:`nograd.train.fit` refuses it at
        once). Build optimizers after ``astype``. Arrays already of ``dtype`` are kept as they are.
        """
        dt = check_dtype(dtype)
        converted: dict[int, np.ndarray] = {}      # id(old array) -> its copy, to keep ties tied
        retired = []
        for _, m in self.modules():
            for store in (m._own, m._buffers):
                for k, v in store.items():
                    if v.dtype.kind == "f" and v.dtype != dt:
                        new = converted.get(id(v))
                        if new is None:
                            new = converted[id(v)] = v.astype(dt)
                            retired.append(v)
                        store[k] = new
            if hasattr(m, "_dtype"):
                m._dtype = dt
        for v in retired:
            v.flags.writeable = False
        return self

    # ----------------------------------------------------------------- helpers for subclasses
    def _use(self, params):
        """A leaf's arrays for one call: its own, with ``params`` overriding some or all of them."""
        if params is None:
            return self._own
        for k, v in params.items():
            if k not in self._own:
                raise ValueError(f"params has unknown key {k!r} for {type(self).__name__}; "
                                 f"expected some of {list(self._own)}")
            if not isinstance(v, np.ndarray) or v.shape != self._own[k].shape:
                shape = getattr(v, "shape", type(v).__name__)
                raise ValueError(f"params[{k!r}] must be an array of shape "
                                 f"{self._own[k].shape}, got {shape}")
        if len(params) == len(self._own):
            return params
        return {**self._own, **params}

    def _tangents(self, dparams):
        """Validate a leaf's parameter tangents: known keys, matching shapes (None → no tangent)."""
        if not dparams:
            return None
        for k, v in dparams.items():
            if k not in self._own:
                raise ValueError(f"dparams has unknown key {k!r} for {type(self).__name__}; "
                                 f"expected some of {list(self._own)}")
            if not isinstance(v, np.ndarray) or v.shape != self._own[k].shape:
                shape = getattr(v, "shape", type(v).__name__)
                raise ValueError(f"dparams[{k!r}] must be an array of shape "
                                 f"{self._own[k].shape}, got {shape}")
        return dparams

    def _input_jvp(self, x, dx, dparams, y, tangent):
        """The jvp of a layer without parameters: ``(y, tangent(dx))``, zero when ``dx`` is None.

        ``tangent`` applies the layer's derivative at ``x`` to a tangent of the input's shape.
        """
        self._tangents(dparams)
        if dx is None:
            return y, np.zeros_like(y)
        check_like(dx, x.shape, "dx")
        return y, tangent(dx)

    def _split(self, params, name):
        """The part of a dotted ``params`` (or ``dparams``) dict that belongs to child ``name``."""
        if not params:
            return None
        pre = name + "."
        n = len(pre)
        sub = {k[n:]: v for k, v in params.items() if k.startswith(pre)}
        return sub or None

    def _check_keys(self, params, what="params"):
        """Refuse keys that name no own array and no child (composite modules)."""
        if not params:
            return
        for k in params:
            head = k.split(".", 1)[0]
            if k not in self._own and head not in self._children:
                raise ValueError(f"{what} has unknown key {k!r} for {type(self).__name__}")

    @staticmethod
    def _prefixed(grads, name):
        return {f"{name}.{k}": v for k, v in grads.items()}

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        head = f"{type(self).__name__}({self.extra_repr()})"
        if not self._children:
            return head
        lines = [f"{type(self).__name__}("]
        for cname, child in self._children.items():
            sub = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({cname}): {sub}")
        lines.append(")")
        return "\n".join(lines)


class Sequential(Module):
    """Composition ``f_n ∘ … ∘ f_1``; children are named ``"0"``, ``"1"``, ….

    Backward is the chain rule run in reverse, ``dx_{i-1} = J_i^T dx_i``; jvp runs it forward,
    ``dy_i = J_i dy_{i-1} + ∂_θ f_i · dθ_i``.
    """

    combinator = "chain"

    def __init__(self, *layers: Module):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layers[{i}] must be a nograd Module, got {type(layer).__name__}")
            self._children[str(i)] = layer

    def __len__(self):
        return len(self._children)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*list(self._children.values())[i])
        return list(self._children.values())[i]

    def __iter__(self):
        return iter(self._children.values())

    def __call__(self, x, *, train=False, rng=None, params=None):
        """Inference through the chain, dropping each layer's cache as soon as it is done, so the
        peak memory is one layer's input and output, not every activation of the network."""
        self._check_keys(params)
        for name, layer in self._children.items():
            x = layer(x, train=train, rng=rng, params=self._split(params, name))
        return x

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check_keys(params)
        caches = []
        for name, layer in self._children.items():
            x, c = layer.forward(x, train=train, rng=rng, params=self._split(params, name))
            caches.append(c)
        return x, caches

    def backward(self, cache, dy, *, params=None, need_dx=True):
        grads = {}
        items = list(self._children.items())
        for i in range(len(items) - 1, -1, -1):
            name, layer = items[i]
            dy, g = layer.backward(cache[i], dy, params=self._split(params, name),
                                   need_dx=need_dx or i > 0)
            for k, v in g.items():
                grads[f"{name}.{k}"] = v
        # report in forward (parameter) order
        return dy, {k: grads[k] for k in self._ordered_names() if k in grads}

    def _ordered_names(self):
        for name, layer in self._children.items():
            for k in layer.params:
                yield f"{name}.{k}"

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        self._check_keys(params)
        self._check_keys(dparams, "dparams")
        for name, layer in self._children.items():
            x, dx = layer.jvp(x, dx, self._split(dparams, name), train=train, rng=rng,
                              params=self._split(params, name))
        return x, dx


class Residual(Module):
    """``y = body(x) + shortcut(x)``; the shortcut is the identity unless a module is given.

    Backward adds the two branches' input cotangents; jvp adds their tangents.
    """

    combinator = "sum"

    def __init__(self, body: Module, shortcut: Module | None = None):
        super().__init__()
        if not isinstance(body, Module):
            raise TypeError(f"body must be a nograd Module, got {type(body).__name__}")
        if shortcut is not None and not isinstance(shortcut, Module):
            raise TypeError(f"shortcut must be a nograd Module or None, got {type(shortcut).__name__}")
        self._children["body"] = body
        if shortcut is not None:
            self._children["shortcut"] = shortcut

    def forward(self, x, *, train=False, rng=None, params=None):
        self._check_keys(params)
        body = self._children["body"]
        y, cb = body.forward(x, train=train, rng=rng, params=self._split(params, "body"))
        short = self._children.get("shortcut")
        if short is None:
            s, cs = x, None
        else:
            s, cs = short.forward(x, train=train, rng=rng, params=self._split(params, "shortcut"))
        if y.shape != s.shape:
            raise ValueError(f"Residual: body output shape {y.shape} differs from shortcut "
                             f"output shape {s.shape}")
        return y + s, (cb, cs, y.shape)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        cb, cs, shape = cache
        check_like(dy, shape)
        dxb, grads = self._children["body"].backward(cb, dy, params=self._split(params, "body"),
                                                     need_dx=need_dx)
        grads = self._prefixed(grads, "body")
        short = self._children.get("shortcut")
        if short is None:
            dxs = dy
        else:
            dxs, gs = short.backward(cs, dy, params=self._split(params, "shortcut"),
                                     need_dx=need_dx)
            grads.update(self._prefixed(gs, "shortcut"))
        return (dxb + dxs if need_dx else None), grads

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        self._check_keys(params)
        self._check_keys(dparams, "dparams")
        y, dyb = self._children["body"].jvp(x, dx, self._split(dparams, "body"), train=train,
                                            rng=rng, params=self._split(params, "body"))
        short = self._children.get("shortcut")
        if short is None:
            s, ds = x, (dx if dx is not None else np.zeros_like(x))
        else:
            s, ds = short.jvp(x, dx, self._split(dparams, "shortcut"), train=train, rng=rng,
                              params=self._split(params, "shortcut"))
        return y + s, dyb + ds
