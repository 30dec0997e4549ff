"""The model registry and the MLP builder."""
import numpy as np
import pytest

import nograd
from nograd.layers import Flatten, Linear, Tanh
from nograd.models import available_models, get_model, model_description, register_model
from nograd.models import registry as registry_mod


def test_mlp_shapes_and_seed():
    net = get_model("mlp", (1, 8, 8), 10, rng=0)
    assert isinstance(net[0], Flatten) and net[1].in_features == 64
    assert [m.out_features for m in net if isinstance(m, Linear)] == [256, 256, 10]
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    assert net(x).shape == (5, 10) and net(x).dtype == np.float32
    same = get_model("mlp", (1, 8, 8), 10, rng=0)
    assert np.array_equal(nograd.flatten_params(net.params), nograd.flatten_params(same.params))
    other = get_model("mlp", (1, 8, 8), 10, rng=1)
    assert not np.array_equal(nograd.flatten_params(net.params), nograd.flatten_params(other.params))
    flat = get_model("mlp", 64, 3, rng=0, hidden=(16,), activation="tanh")
    assert not isinstance(flat[0], Flatten) and isinstance(flat[1], Tanh)
    assert [m.out_features for m in flat if isinstance(m, Linear)] == [16, 3]


@pytest.mark.parametrize("args,kwargs,err,match", [
    (("resnet", (4,), 3), {}, ValueError, "unknown model 'resnet'; registered models: .*mlp"),
    (("mlp", (), 3), {}, ValueError, "input_shape is empty"),
    (("mlp", (4, 0), 3), {}, ValueError, r"input_shape\[1\] must be positive"),
    (("mlp", (4,), 1), {}, ValueError, "num_classes must be at least 2"),
    (("mlp", (4,), 3), {"hidden": (8, -1)}, ValueError, r"hidden\[1\] must be positive"),
    (("mlp", (4,), 3), {"activation": "swishy"}, ValueError, "unknown activation 'swishy'"),
    (("mlp", None, 3), {}, TypeError, "input_shape must be a tuple"),
])
def test_get_model_errors(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        get_model(*args, **kwargs)


def test_register_a_model_in_one_call(monkeypatch):
    monkeypatch.setattr(registry_mod, "_MODELS", dict(registry_mod._MODELS))

    def linear(input_shape, num_classes, *, rng):
        """A single Linear layer."""
        return nograd.Sequential(Flatten(), Linear(int(np.prod(input_shape)), num_classes, rng=rng))

    register_model("linear", linear)
    assert "linear" in available_models() and model_description("linear") == "A single Linear layer."
    assert get_model("linear", (2, 3), 4, rng=0)(np.zeros((1, 2, 3), np.float32)).shape == (1, 4)
    with pytest.raises(ValueError, match="already registered"):
        register_model("linear", lambda *a, **k: None)
    with pytest.raises(ValueError, match="lowercase with hyphens"):
        register_model("My_Model", linear)
    register_model("broken", lambda s, k, *, rng: "not a module")
    with pytest.raises(TypeError, match="returned str, not a nograd Module"):
        get_model("broken", (2,), 2)
