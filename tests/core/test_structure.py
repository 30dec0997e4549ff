"""The structural view of a model (Module.leaves, Module.chain) and the layers' declarations.

Each declaration is checked against what it promises, by running the layer, over every module of
the layer registry that makes it: a new layer that declares ``feedback_weight``, ``dense``,
``elementwise``, ``shape_only`` or a ``combinator`` is held to the same laws.
"""
import numpy as np
import pytest

from nograd.core import Module, Residual, Sequential
from nograd.core.module import dotted
from nograd.layers import (GELU, Activation, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d,
                           ConvTranspose2d, Dropout, Embedding, Flatten, GroupNorm, Identity,
                           LayerNorm, Linear, MaxPool2d, ReLU, Reshape, Sigmoid, Tanh,
                           TransformerBlock)
from registry import ENTRIES, build

IDS = [e.name for e in ENTRIES]


def nested(dtype=np.float64):
    rng = np.random.default_rng(0)
    return Sequential(Flatten(),
                      Sequential(Linear(6, 5, rng=rng, dtype=dtype), Tanh()),
                      Residual(Sequential(Linear(5, 5, rng=rng, dtype=dtype), ReLU()),
                               Linear(5, 5, bias=False, rng=rng, dtype=dtype)),
                      Sequential(Sequential(Linear(5, 4, rng=rng, dtype=dtype)), Sigmoid()),
                      Linear(4, 3, rng=rng, dtype=dtype))


# ----------------------------------------------------------------------------- leaves
def test_leaves_of_a_nested_model_in_execution_order():
    net = nested()
    names = [n for n, _ in net.leaves()]
    assert names == ["0", "1.0", "1.1", "2.body.0", "2.body.1", "2.shortcut", "3.0.0", "3.1", "4"]
    kinds = [type(m).__name__ for _, m in net.leaves()]
    assert kinds == ["Flatten", "Linear", "Tanh", "Linear", "ReLU", "Linear", "Linear", "Sigmoid",
                     "Linear"]
    # the dotted names are the keys of model.params, in the same order
    keys = [dotted(n, k) for n, m in net.leaves() for k in m.params]
    assert keys == list(net.params)
    for n, m in net.leaves():
        for k, v in m.params.items():
            assert net.params[dotted(n, k)] is v          # the live arrays, not copies


def test_a_leaf_is_its_own_only_leaf_and_prefix_is_prepended():
    lin = Linear(2, 3, rng=0)
    assert list(lin.leaves()) == [("", lin)]
    assert [n for n, _ in Sequential(lin, ReLU()).leaves("head")] == ["head.0", "head.1"]
    assert dotted("", "weight") == "weight" and dotted("a.b", "weight") == "a.b.weight"


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_leaves_and_modules_name_every_array_of_every_registered_module(entry):
    """Every array of ``params`` belongs to exactly one module of the tree under its dotted name;
    leaves come in the order of ``params``; composite modules' own arrays are the rest."""
    module, _ = build(entry, np.float64, 0, 2)
    params = module.params
    leaf_keys = [dotted(n, k) for n, m in module.leaves() for k in m.params]
    own_keys = [dotted(n, k) for n, m in module.modules() if m.children for k in m._own]
    assert sorted(leaf_keys + own_keys) == sorted(params)
    order = {k: i for i, k in enumerate(params)}
    assert [order[k] for k in leaf_keys] == sorted(order[k] for k in leaf_keys)
    assert all(not m.children for _, m in module.leaves())


# ----------------------------------------------------------------------------- chain
def test_chain_flattens_sequentials_and_keeps_composite_blocks_whole():
    net = nested()
    blocks = net.chain()
    assert [n for n, _ in blocks] == ["0", "1.0", "1.1", "2", "3.0.0", "3.1", "4"]
    assert isinstance(blocks[3][1], Residual)
    assert [n for n, _ in net.chain("m")][:2] == ["m.0", "m.1.0"]
    lin = Linear(2, 2, rng=0)
    assert lin.chain() == [("", lin)]
    block = TransformerBlock(4, 2, rng=0)
    assert Sequential(block, Linear(4, 2, rng=0)).chain()[0] == ("0", block)
    assert Sequential().chain() == []


def test_running_the_chain_block_by_block_is_the_model():
    net = nested()
    x = np.random.default_rng(1).normal(size=(3, 2, 3))
    h = x
    for _, block in net.chain():
        h = block(h)
    np.testing.assert_array_equal(h, net(x))


# ----------------------------------------------------------------------------- declarations
def test_what_each_layer_declares():
    assert Module.feedback_weight is None and Module.combinator is None and Module.df is None
    assert not (Module.dense or Module.elementwise or Module.normalization or Module.shape_only)
    assert Linear.feedback_weight == "weight" and Linear.dense
    assert Conv2d.feedback_weight == "weight" and not Conv2d.dense
    assert ConvTranspose2d.feedback_weight is None
    for act in (ReLU(), Tanh(), GELU(), Identity(), Activation(np.sin, lambda x, y: np.cos(x))):
        assert act.elementwise and callable(act.df) and act.feedback_weight is None
    assert Dropout.elementwise and Dropout(0.5).df is None
    for norm in (LayerNorm, BatchNorm1d, BatchNorm2d, GroupNorm):
        assert norm.normalization and norm.feedback_weight is None
    assert Flatten.shape_only and Reshape.shape_only and not Linear.shape_only
    for other in (MaxPool2d, AvgPool2d, Embedding, TransformerBlock):
        assert (other.feedback_weight, other.dense, other.elementwise, other.normalization,
                other.shape_only, other.combinator) == (None, False, False, False, False, None)
    assert Sequential.combinator == "chain" and Residual.combinator == "sum"
    assert GroupNorm(1, 2, affine=False).normalization      # the affine flag is another thing


def _entries(pred):
    out = []
    for e in ENTRIES:
        module, _ = build(e, np.float64, 0, 2)
        if pred(module):
            out.append(e)
    return out


def _run(entry, seed=0):
    module, x = build(entry, np.float64, seed, 3)
    return module, x, np.random.default_rng(seed + 1)


@pytest.mark.parametrize("entry", _entries(lambda m: m.feedback_weight is not None),
                         ids=lambda e: e.name)
def test_feedback_weight_can_be_replaced_in_the_backward(entry):
    """Linear in the weight and in the input: with ``params={w: B}`` the backward sends ``dy``
    through ``B`` (as a layer whose weight is ``B`` would), and the weight gradient stays exact."""
    module, x, rng = _run(entry)
    w = module.feedback_weight
    W = module.params[w]
    B = rng.normal(size=W.shape)
    y, cache = module.forward(x)
    dy = rng.normal(size=y.shape)
    dx_fb, g_fb = module.backward(cache, dy, params={w: B})
    dx_true, g_true = module.backward(cache, dy)
    _, cache_b = module.forward(x, params={w: B})
    dx_b, _ = module.backward(cache_b, dy, params={w: B})
    np.testing.assert_allclose(dx_fb, dx_b, rtol=1e-12, atol=1e-12)
    for k in g_true:
        np.testing.assert_allclose(g_fb[k], g_true[k], rtol=1e-12, atol=1e-12)
    assert not np.allclose(dx_fb, dx_true)                # B really was used


@pytest.mark.parametrize("entry", _entries(lambda m: m.dense), ids=lambda e: e.name)
def test_dense_layers_are_x_w_transpose_plus_b(entry):
    module, x, _ = _run(entry)
    p = module.params
    W = p["weight"]
    assert W.shape == (module.out_features, module.in_features)
    ref = x @ W.T + (p["bias"] if "bias" in p else 0)
    np.testing.assert_allclose(module(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("entry", _entries(lambda m: m.elementwise), ids=lambda e: e.name)
def test_elementwise_layers_have_a_diagonal_jacobian(entry):
    module, x, _ = _run(entry)
    for train in entry.modes:
        y, _ = module.forward(x, train=train, rng=np.random.default_rng(3))
        assert y.shape == x.shape
        flat = np.zeros(x.size)
        flat[x.size // 2] = 1.0
        _, dy = module.jvp(x, flat.reshape(x.shape), train=train, rng=np.random.default_rng(3))
        off = np.delete(dy.ravel(), x.size // 2)
        assert np.all(off == 0)


@pytest.mark.parametrize("entry", _entries(lambda m: m.elementwise and m.df is not None),
                         ids=lambda e: e.name)
def test_declared_derivative_is_the_backward(entry):
    module, x, rng = _run(entry)
    y, cache = module.forward(x)
    dy = rng.normal(size=y.shape)
    dx, _ = module.backward(cache, dy)
    np.testing.assert_allclose(dx, dy * module.df(x, y), rtol=1e-12, atol=1e-12)
    h = 1e-6                                               # and df is f' (central differences)
    fd = (module(x + h) - module(x - h)) / (2 * h)
    np.testing.assert_allclose(module.df(x, y), fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("entry", _entries(lambda m: m.shape_only), ids=lambda e: e.name)
def test_shape_only_layers_only_move_entries(entry):
    module, x, rng = _run(entry)
    assert not module.params
    y, cache = module.forward(x)
    np.testing.assert_array_equal(y.ravel(), x.ravel())
    dy = rng.normal(size=y.shape)
    dx, _ = module.backward(cache, dy)
    np.testing.assert_array_equal(dx, dy.reshape(x.shape))


@pytest.mark.parametrize("entry", _entries(lambda m: m.normalization), ids=lambda e: e.name)
def test_norm_layers_hold_only_per_feature_scales_and_shifts(entry):
    module, x, _ = _run(entry)
    assert set(module.params) <= {"weight", "bias"} and module.feedback_weight is None
    assert not module.children and not module.dense


@pytest.mark.parametrize("entry", _entries(lambda m: m.combinator is not None),
                         ids=lambda e: e.name)
def test_combinators_are_what_they_declare(entry):
    module, x, _ = _run(entry)
    assert not module._own                                 # no arrays of their own
    kids = list(module.children.values())
    if module.combinator == "chain":
        ref = x
        for k in kids:
            ref = k(ref)
    else:
        assert module.combinator == "sum"
        ref = sum(k(x) for k in kids) + (x if len(kids) == 1 else 0)
    np.testing.assert_allclose(module(x), ref, rtol=1e-12, atol=1e-12)


def test_arrays_buffers_and_children_are_attributes_and_the_live_objects():
    import nograd as ng

    lin, bn = ng.Linear(3, 2, rng=0), ng.BatchNorm1d(2)
    net = ng.Sequential(lin, bn)
    assert lin.weight is lin.params["weight"] and lin.bias is lin.params["bias"]
    assert bn.running_mean is bn.buffers["running_mean"]
    assert getattr(net, "0") is lin and getattr(net, "1").weight is net.params["1.weight"]
    lin.weight[...] = 0.0                          # in place, through the attribute
    assert not net.params["0.weight"].any()
    with pytest.raises(AttributeError, match="has no attribute 'wieght'"):
        lin.wieght
