"""Rules see a model through the module contract, its structural view and the layers' declarations
(DESIGN.md §1-2): no rule imports a concrete layer class, a layer the rules have never heard of is
trained as soon as it declares what they need, and the FA family is the model's own backward with
the feedback weights overridden."""
import ast
import pathlib

import numpy as np
import pytest

import nograd.rules
from nograd.analysis import hidden_activities
from nograd.core import Module, Residual, Sequential
from nograd.layers import (BatchNorm2d, Conv2d, Flatten, GroupNorm, LayerNorm, Linear, ReLU, Tanh,
                           TransformerBlock)
from nograd.rules import AFA, BRSF, DFA, FA, FRSF, PEPITA, USF, ForwardForward, MonoForward
from nograd.rules.zeroth_order import _no_decay_names

RULES_DIR = pathlib.Path(nograd.rules.__file__).parent

#: the only names a rules module may import from nograd.layers, and only to *build* a module of
#: its own, never to look at a model: the test below checks that these names are only ever called.
#: Empty: a rule's own arrays (local heads, projections) are plain arrays in ``rule.params``.
BUILDS_OWN_MODULES: dict = {}


def _layer_imports(tree, path):
    """``{name: node}`` of everything a rules module imports from ``nograd.layers``."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:                      # resolve a relative import from nograd/rules/x.py
                base = ["nograd", "rules", path.stem][: max(0, 3 - node.level)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if module == "nograd.layers" or module.startswith("nograd.layers.") \
                        or full == "nograd.layers":
                    out[alias.asname or alias.name] = node
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "nograd.layers" or alias.name.startswith("nograd.layers."):
                    out[alias.asname or alias.name] = node
    return out


def test_the_import_resolver_sees_layer_imports():
    """The checker itself can fail: each way of importing a layer class is caught."""
    path = RULES_DIR / "made_up.py"
    for src in ("from ..layers import Linear", "from ..layers.linear import Linear",
                "from .. import layers", "import nograd.layers", "from nograd.layers import ReLU",
                "def f():\n    from ..layers.norm import LayerNorm as N\n"):
        assert _layer_imports(ast.parse(src), path), src
    for src in ("from ..core.module import Module", "from .base import Rule", "import numpy"):
        assert not _layer_imports(ast.parse(src), path), src


def test_no_rule_imports_a_concrete_layer_class():
    files = sorted(RULES_DIR.glob("*.py"))
    assert len(files) > 10
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        names = _layer_imports(tree, path)
        allowed = BUILDS_OWN_MODULES.get(path.name, set())
        assert set(names) <= allowed, f"{path.name} imports {sorted(set(names) - allowed)} " \
                                      f"from nograd.layers"
        if not names:
            continue
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in names:
                assert id(node) in called, (f"{path.name}:{node.lineno} uses {node.id} other than "
                                            f"to build a module (e.g. in isinstance)")


# ----------------------------------------------------------------------------- FA = backward(params=B)
def _residual_net(rng, dtype=np.float64):
    return Sequential(Linear(5, 6, rng=rng, dtype=dtype), Tanh(),
                      Residual(Sequential(Linear(6, 6, rng=rng, dtype=dtype), Tanh())),
                      Linear(6, 3, rng=rng, dtype=dtype))


def test_fa_on_a_residual_net_is_the_chain_rule_with_b_in_place_of_w():
    """FA written out by hand for ``x → L1 → tanh → (h + L2(h) → tanh) → L3``."""
    rng = np.random.default_rng(0)
    net = _residual_net(rng)
    x, y = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    p = net.params
    B = {k: rng.normal(size=p[k].shape) for k in ("0.weight", "2.body.0.weight", "3.weight")}
    grads, info = FA(feedback=B).grads(net, x, y, rng=0)
    a1 = x @ p["0.weight"].T + p["0.bias"]
    h1 = np.tanh(a1)
    a2 = h1 @ p["2.body.0.weight"].T + p["2.body.0.bias"]
    t2 = np.tanh(a2)
    h2 = h1 + t2
    z = h2 @ p["3.weight"].T + p["3.bias"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    dz = (e - np.eye(3)[y]) / len(x)
    dh2 = dz @ B["3.weight"]
    da2 = dh2 * (1 - t2 ** 2)
    dh1 = da2 @ B["2.body.0.weight"] + dh2                # body with B, plus the identity skip
    da1 = dh1 * (1 - h1 ** 2)
    ref = {"0.weight": da1.T @ x, "0.bias": da1.sum(0), "2.body.0.weight": da2.T @ h1,
           "2.body.0.bias": da2.sum(0), "3.weight": dz.T @ h2, "3.bias": dz.sum(0)}
    assert list(grads) == list(net.params)
    for k, v in ref.items():
        np.testing.assert_allclose(grads[k], v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(info["output"], z, rtol=1e-12)


@pytest.mark.parametrize("cls", [FA, USF, FRSF, BRSF])
def test_fa_family_grads_are_the_models_backward_with_its_feedback_matrices(cls):
    rng = np.random.default_rng(1)
    net = Sequential(Conv2d(1, 2, 3, padding=1, rng=rng, dtype=np.float64), ReLU(),
                     GroupNorm(1, 2, dtype=np.float64),
                     Residual(Sequential(Conv2d(2, 2, 3, padding=1, rng=rng, dtype=np.float64),
                                         Tanh())),
                     Flatten(), Linear(2 * 16, 3, rng=rng, dtype=np.float64))
    x, y = rng.normal(size=(4, 1, 4, 4)), rng.integers(0, 3, 4)
    rule = cls(seed=3)
    grads, _ = rule.grads(net, x, y, rng=np.random.default_rng(9))
    gen = np.random.default_rng(9)          # replay the draws: forward, then the matrices (BRSF)
    out, cache = net.forward(x, train=True, rng=gen)
    B = rule.feedback_matrices(net, rng=gen)
    _, ref = net.backward(cache, rule.loss(out, y)[1], params=B)
    assert set(B) == {"0.weight", "3.body.0.weight", "5.weight"}
    for k in net.params:
        np.testing.assert_array_equal(grads[k], ref[k])


# ----------------------------------------------------------------------------- layers by declaration
class Dense(Module):
    """A fully connected layer the rules have never heard of (not a Linear): ``y = x Wᵀ``."""

    feedback_weight = "weight"
    dense = True

    def __init__(self, w):
        super().__init__()
        self._own["weight"] = w.copy()
        self.out_features, self.in_features = w.shape

    def forward(self, x, *, train=False, rng=None, params=None):
        return x @ self._use(params)["weight"].T, x

    def backward(self, cache, dy, *, params=None, need_dx=True):
        W = self._use(params)["weight"]
        return (dy @ W if need_dx else None), {"weight": dy.T @ cache}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        W = self._use(params)["weight"]
        dparams = self._tangents(dparams) or {}
        dy = (dx @ W.T if dx is not None else 0) + (x @ dparams["weight"].T if dparams else 0)
        return x @ W.T, dy + np.zeros((len(x), W.shape[0]))


class Cube(Module):
    """An elementwise activation that is not an Activation: ``y = x³/3 + x``, ``f' = x² + 1``."""

    elementwise = True

    def df(self, x, y):
        return x * x + 1

    def forward(self, x, *, train=False, rng=None, params=None):
        return x ** 3 / 3 + x, (x, x ** 3 / 3 + x)

    def backward(self, cache, dy, *, params=None, need_dx=True):
        x, y = cache
        return dy * self.df(x, y), {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        y = x ** 3 / 3 + x
        return y, (np.zeros_like(x) if dx is None else dx * self.df(x, y))


def _twin_nets():
    rng = np.random.default_rng(2)
    W1, W2 = rng.normal(size=(6, 4)) * 0.5, rng.normal(size=(3, 6)) * 0.5
    known = Sequential(Linear(4, 6, bias=False, dtype=np.float64),
                       Sequential(Tanh()), Linear(6, 3, bias=False, dtype=np.float64))
    known.params["0.weight"][:] = W1
    known.params["2.weight"][:] = W2
    unknown = Sequential(Dense(W1), Sequential(Tanh()), Dense(W2))
    return known, unknown, rng.normal(size=(8, 4)), rng.integers(0, 3, 8)


@pytest.mark.parametrize("make", [FA, USF, DFA, PEPITA, AFA, lambda: ForwardForward(seed=0),
                                  lambda: MonoForward(seed=0)],
                         ids=["fa", "usf", "dfa", "pepita", "afa", "ff", "mono"])
def test_a_layer_that_declares_what_rules_need_is_trained_like_linear(make):
    known, unknown, x, y = _twin_nets()
    g_known, _ = make().grads(known, x, y, rng=np.random.default_rng(4))
    rule = make()
    g_unknown, _ = rule.grads(unknown, x, y, rng=np.random.default_rng(4))
    assert list(unknown.params) == list(known.params)
    assert list(g_unknown) == list(unknown.params) + list(rule.params)   # rule.params: its own
    for k in g_known:
        np.testing.assert_allclose(g_unknown[k], g_known[k], rtol=1e-10, atol=1e-12)


def test_an_elementwise_layer_with_a_derivative_is_an_activation_to_the_rules():
    rng = np.random.default_rng(5)
    net = Sequential(Linear(4, 6, rng=rng, dtype=np.float64), Cube(),
                     Linear(6, 3, rng=rng, dtype=np.float64))
    x, y = rng.normal(size=(8, 4)), rng.integers(0, 3, 8)
    for rule in (PEPITA(), AFA(), ForwardForward(seed=0), MonoForward(seed=0)):
        g, _ = rule.grads(net, x, y, rng=np.random.default_rng(0))
        assert list(g) == list(net.params) + list(rule.params)
        assert all(np.isfinite(v).all() for v in g.values())
    (h,) = hidden_activities(net, x)
    a = x @ net.params["0.weight"].T + net.params["0.bias"]
    np.testing.assert_allclose(h, a ** 3 / 3 + a, rtol=1e-12)


def test_without_the_declaration_the_rules_refuse_the_layer_by_name():
    class Opaque(Dense):
        feedback_weight = None
        dense = False

    rng = np.random.default_rng(6)
    net = Sequential(Opaque(rng.normal(size=(6, 4))), Tanh(), Linear(6, 3, rng=rng))
    for rule in (FA(), DFA(), PEPITA(), ForwardForward(), MonoForward()):
        with pytest.raises(ValueError, match="cannot train Opaque"):
            rule.check_model(net)
    with pytest.raises(ValueError, match="cannot read Opaque"):
        hidden_activities(net, np.zeros((2, 4), np.float32))


def test_composites_are_refused_by_name_and_nested_chains_are_flattened():
    rng = np.random.default_rng(7)
    attn = Sequential(Linear(4, 4, rng=rng), TransformerBlock(4, 2, rng=rng), Linear(4, 3, rng=rng))
    for rule in (FA(), DFA(), PEPITA(), ForwardForward(), MonoForward()):
        with pytest.raises(ValueError, match="cannot train TransformerBlock .*'1'"):
            rule.check_model(attn)
    with pytest.raises(ValueError, match="cannot read TransformerBlock"):
        hidden_activities(attn, np.zeros((2, 4), np.float32))
    flat = Sequential(Linear(4, 5, rng=0), ReLU(), Linear(5, 3, rng=1))
    deep = Sequential(Sequential(Linear(4, 5, rng=0), Sequential(ReLU())), Linear(5, 3, rng=1))
    x, y = rng.normal(size=(6, 4)).astype(np.float32), rng.integers(0, 3, 6)
    names = {"0.weight": "0.0.weight", "0.bias": "0.0.bias", "2.weight": "1.weight",
             "2.bias": "1.bias"}
    for make in (DFA, PEPITA, AFA, FA):
        g_flat, _ = make().grads(flat, x, y, rng=0)
        g_deep, _ = make().grads(deep, x, y, rng=0)
        assert list(g_deep) == list(deep.params)
        for k, v in g_flat.items():
            np.testing.assert_array_equal(g_deep[names[k]], v)


def test_mezo_auto_no_decay_reads_the_normalization_declaration():
    rng = np.random.default_rng(8)
    net = Sequential(Conv2d(1, 2, 3, rng=rng), BatchNorm2d(2), GroupNorm(1, 2, affine=False),
                     Flatten(), Linear(8, 4, bias=False, rng=rng), LayerNorm(4), Tanh())
    skip = _no_decay_names(net, "auto")
    assert skip == {"0.bias", "1.weight", "1.bias", "5.weight", "5.bias"}
