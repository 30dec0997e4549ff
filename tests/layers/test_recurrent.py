"""RNN, LSTM, GRU beyond the registry: one step against the written-out formulas, state carried
across calls equals one call on the concatenated sequence (forward, backward through time with the
final-state cotangent carried back, forward mode), the initial-state derivatives, and errors."""
import numpy as np
import pytest

from nograd.layers import GRU, LSTM, RNN

CLASSES = [RNN, LSTM, GRU]
MAKERS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU,
          "LSTM-layernorm": lambda *a, **k: _ln_lstm(LSTM(*a, layer_norm=True, **k))}


def _ln_lstm(m):
    rng = np.random.default_rng(9)
    for k in m._own:
        if k.startswith("ln_"):
            m._own[k] = m._own[k] + rng.normal(0, 0.3, m._own[k].shape)
    return m


def _sig(a):
    return 1 / (1 + np.exp(-a))


def _state(cls, rng, B, H):
    if cls is LSTM:
        return (rng.standard_normal((B, H)), rng.standard_normal((B, H)))
    return rng.standard_normal((B, H))


def _add(a, b, t=1.0):
    if isinstance(a, tuple):
        return tuple(x + t * y for x, y in zip(a, b))
    return a + t * b


def _dot(a, b):
    if isinstance(a, tuple):
        return sum(float(np.sum(x * y)) for x, y in zip(a, b))
    return float(np.sum(a * b))


def test_one_step_matches_the_formulas():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 3))
    for cls in CLASSES:
        m = cls(3, 4, rng=1, dtype=np.float64)
        s0 = _state(cls, rng, 2, 4)
        p = m.params
        xp = x[:, 0] @ p["weight_ih"].T + p["bias_ih"]
        h0 = s0[0] if cls is LSTM else s0
        hp = h0 @ p["weight_hh"].T + p["bias_hh"]
        if cls is RNN:
            h = np.tanh(xp + hp)
        elif cls is LSTM:
            a = xp + hp
            i, f, g, o = _sig(a[:, :4]), _sig(a[:, 4:8]), np.tanh(a[:, 8:12]), _sig(a[:, 12:])
            c = f * s0[1] + i * g
            h = o * np.tanh(c)
        else:
            r, z = _sig(xp[:, :4] + hp[:, :4]), _sig(xp[:, 4:8] + hp[:, 4:8])
            n = np.tanh(xp[:, 8:] + r * hp[:, 8:])
            h = (1 - z) * n + z * h0
        y, cache = m.forward(x, state=s0)
        np.testing.assert_allclose(y[:, 0], h, rtol=1e-12, atol=1e-12)
        if cls is LSTM:
            np.testing.assert_allclose(m.final_state(cache)[1], c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", list(MAKERS))
def test_state_carried_across_calls_equals_one_call(kind):
    make = MAKERS[kind]
    cls = LSTM if kind.startswith("LSTM") else make
    rng = np.random.default_rng(1)
    m = make(3, 4, rng=2, dtype=np.float64)
    x = rng.standard_normal((2, 7, 3))
    s0 = _state(cls, rng, 2, 4)
    y, cache = m.forward(x, state=s0)
    y1, c1 = m.forward(x[:, :3], state=s0)
    y2, c2 = m.forward(x[:, 3:], state=m.final_state(c1))
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, rtol=1e-12, atol=1e-12)
    for a, b in zip(np.atleast_1d(m.final_state(c2)), np.atleast_1d(m.final_state(cache))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)

    # backward through time in two pieces: the second piece's initial-state cotangent is the
    # first piece's final-state cotangent
    dy = rng.standard_normal(y.shape)
    dsT = _state(cls, rng, 2, 4)
    dx, g, ds0 = m.backward_state(cache, dy, dstate=dsT)
    dx2, g2, dmid = m.backward_state(c2, dy[:, 3:], dstate=dsT)
    dx1, g1, ds0_pieces = m.backward_state(c1, dy[:, :3], dstate=dmid)
    np.testing.assert_allclose(np.concatenate([dx1, dx2], axis=1), dx, rtol=1e-10, atol=1e-12)
    for k in g:
        np.testing.assert_allclose(g1[k] + g2[k], g[k], rtol=1e-10, atol=1e-12)
    for a, b in zip(np.atleast_1d(ds0_pieces), np.atleast_1d(ds0)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)

    # forward mode in two pieces
    u = rng.standard_normal(x.shape)
    du0 = _state(cls, rng, 2, 4)
    dp = {k: rng.standard_normal(v.shape) for k, v in m.params.items()}
    _, t, _, _ = m.jvp_state(x, u, dp, state=s0, dstate=du0)
    _, t1, s1, ds1 = m.jvp_state(x[:, :3], u[:, :3], dp, state=s0, dstate=du0)
    _, t2, _, _ = m.jvp_state(x[:, 3:], u[:, 3:], dp, state=s1, dstate=ds1)
    np.testing.assert_allclose(np.concatenate([t1, t2], axis=1), t, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", list(MAKERS))
def test_initial_and_final_state_derivatives(kind):
    make = MAKERS[kind]
    cls = LSTM if kind.startswith("LSTM") else make
    rng = np.random.default_rng(3)
    m = make(2, 3, rng=4, dtype=np.float64)
    x = rng.standard_normal((2, 4, 2))
    s0 = _state(cls, rng, 2, 3)
    v, vT = rng.standard_normal((2, 4, 3)), _state(cls, rng, 2, 3)
    u0 = _state(cls, rng, 2, 3)

    def phi(t):
        y, c = m.forward(x, state=_add(s0, u0, t))
        return float(np.sum(v * y)) + _dot(vT, m.final_state(c))

    h = 1e-5
    numeric = (phi(h) - phi(-h)) / (2 * h)
    _, cache = m.forward(x, state=s0)
    _, _, ds0 = m.backward_state(cache, v, dstate=vT)
    np.testing.assert_allclose(_dot(ds0, u0), numeric, rtol=1e-7)
    _, dy, _, dsT = m.jvp_state(x, None, None, state=s0, dstate=u0)
    np.testing.assert_allclose(float(np.sum(v * dy)) + _dot(vT, dsT), numeric, rtol=1e-7)


def test_float32_and_errors():
    m = LSTM(3, 2, rng=0)
    x = np.zeros((2, 5, 3), np.float32)
    y, cache = m.forward(x)
    assert y.dtype == np.float32 and y.shape == (2, 5, 2)
    h, c = m.final_state(cache)
    assert h.shape == c.shape == (2, 2)
    with pytest.raises(TypeError, match="pair"):
        m.forward(x, state=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="state"):
        m.forward(x, state=(np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32)))
    with pytest.raises(ValueError, match="x must be"):
        RNN(3, 2, rng=0).forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="dstate"):
        GRU(3, 2, rng=0).backward_state(GRU(3, 2, rng=0).forward(x)[1], np.zeros((2, 5, 2), np.float32),
                                        dstate=np.zeros((1, 2), np.float32))
