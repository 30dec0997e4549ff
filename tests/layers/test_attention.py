"""Attention, the transformer block and the GPT model against PyTorch and their definitions."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nograd.layers import MultiheadAttention, TransformerBlock, scaled_dot_product_attention
from nograd.layers.attention import attention_backward, attention_forward, attention_jvp, causal_mask
from nograd.models.gpt import GPT, generate


def _naive_attention(q, k, v, mask):
    """softmax(q kᵀ/√d + M) v, one query row at a time (Vaswani et al. 2017, eq. 1)."""
    out = np.zeros(q.shape[:-1] + v.shape[-1:])
    for idx in np.ndindex(q.shape[:-2]):
        for i in range(q.shape[-2]):
            s = np.array([q[idx][i] @ k[idx][j] / np.sqrt(q.shape[-1]) for j in range(k.shape[-2])])
            s = np.where(mask[i], s, -np.inf)
            w = np.exp(s - s.max())
            out[idx][i] = (w / w.sum()) @ v[idx]
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_the_definition(causal):
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 5, 2))
    mask = causal_mask(5, 5) if causal else np.ones((5, 5), bool)
    np.testing.assert_allclose(scaled_dot_product_attention(q, k, v, causal=causal),
                               _naive_attention(q, k, v, mask), rtol=1e-12, atol=1e-12)


def test_attention_maps_are_transposes_and_match_differences():
    rng = np.random.default_rng(1)
    q, k, v = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 5))
    mask = rng.normal(size=(4, 6))
    o, cache = attention_forward(q, k, v, attn_mask=mask, causal=True)
    do = rng.normal(size=o.shape)
    dq, dk, dv = attention_backward(cache, do)
    tq, tk, tv = (rng.normal(size=a.shape) for a in (q, k, v))
    _, ot = attention_jvp(q, k, v, tq, tk, tv, attn_mask=mask, causal=True)
    lhs = (dq * tq).sum() + (dk * tk).sum() + (dv * tv).sum()
    assert abs(lhs - (do * ot).sum()) < 1e-12 * max(1, abs(lhs))
    h = 1e-5
    f = lambda t: scaled_dot_product_attention(q + t * tq, k + t * tk, v + t * tv,  # noqa: E731
                                               attn_mask=mask, causal=True)
    np.testing.assert_allclose(ot, (f(h) - f(-h)) / (2 * h), rtol=1e-6, atol=1e-8)


def test_attention_equals_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    q, k, v = rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 7, 4)), rng.normal(size=(2, 3, 7, 6))
    fmask, bmask = rng.normal(size=(5, 7)), rng.random((5, 7)) < 0.7
    bmask[:, 0] = True
    T = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    for mask in (None, fmask, bmask):
        ref = F.scaled_dot_product_attention(*T, attn_mask=None if mask is None else torch.tensor(mask))
        o, cache = attention_forward(q, k, v, attn_mask=mask)
        np.testing.assert_allclose(o, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
        do = rng.normal(size=o.shape)
        grads = torch.autograd.grad(ref, T, torch.tensor(do))
        for mine, theirs in zip(attention_backward(cache, do), grads):
            np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-10, atol=1e-12)
    causal = F.scaled_dot_product_attention(*(torch.tensor(a) for a in (q, k[:, :, :5], v[:, :, :5])),
                                            is_causal=True)
    np.testing.assert_allclose(scaled_dot_product_attention(q, k[:, :, :5], v[:, :, :5], causal=True),
                               causal.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_multihead_attention_equals_torch(causal):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        ref.in_proj_bias.normal_()
        ref.out_proj.bias.normal_()
    m = MultiheadAttention(8, 2, causal=causal, rng=0, dtype=np.float64).load_torch_state(ref.state_dict())
    x = np.random.default_rng(3).normal(size=(3, 5, 8))
    xt = torch.tensor(x, requires_grad=True)
    mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1) if causal else None
    yt = ref(xt, xt, xt, attn_mask=mask, need_weights=False)[0]
    y, cache = m.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = np.random.default_rng(4).normal(size=y.shape)
    yt.backward(torch.tensor(dy))
    dx, grads = m.backward(cache, dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["in_proj.weight"], ref.in_proj_weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["out_proj.bias"], ref.out_proj.bias.grad.numpy(), rtol=1e-10, atol=1e-12)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), t=st.integers(0, 5))
def test_causal_output_ignores_the_future(seed, t):
    """Changing token t (its input vector) changes no output before t."""
    rng = np.random.default_rng(seed)
    block = TransformerBlock(6, 2, causal=True, rng=rng, dtype=np.float64)
    x = rng.normal(size=(2, 6, 6))
    x2 = x.copy()
    x2[:, t] += rng.normal(size=(2, 6))
    y, y2 = block(x), block(x2)
    np.testing.assert_array_equal(y[:, :t], y2[:, :t])
    assert np.abs(y[:, t:] - y2[:, t:]).max() > 0


def test_gpt_future_tokens_do_not_change_earlier_logits():
    m = GPT(9, n_layer=2, n_head=2, n_embd=8, block_size=7, rng=0, dtype=np.float64)
    idx = np.random.default_rng(0).integers(0, 9, (2, 7))
    idx2 = idx.copy()
    idx2[:, 4] = (idx2[:, 4] + 1) % 9
    np.testing.assert_array_equal(m(idx)[:, :4], m(idx2)[:, :4])


def test_cached_decoding_equals_the_full_forward_and_generation_is_exact():
    m = GPT(11, n_layer=2, n_head=2, n_embd=8, block_size=6, rng=0, dtype=np.float64)
    idx = np.random.default_rng(1).integers(0, 11, (3, 6))
    cache = m.init_cache(3)
    steps = [m.decode(idx[:, :2], cache)] + [m.decode(idx[:, i:i + 1], cache) for i in range(2, 6)]
    np.testing.assert_allclose(np.concatenate(steps, 1), m(idx), rtol=1e-12, atol=1e-12)
    for prompt, top_k in ((np.array([1, 2]), None), (np.array([[3], [5]]), 3)):
        a = generate(m, prompt, 13, rng=7, top_k=top_k)      # 13 > block_size: the window slides
        b = generate(m, prompt, 13, rng=7, top_k=top_k, use_cache=False)
        np.testing.assert_array_equal(a, b)
        assert a.shape[-1] == prompt.shape[-1] + 13
    with pytest.raises(ValueError, match="block_size"):
        m(np.zeros((1, 7), np.int64))
    with pytest.raises(ValueError, match="prompt"):
        generate(m, np.array([11]), 2)


def test_gpt_equals_a_torch_transformer_with_the_same_weights():
    """GPT's forward and gradients against the same architecture written with torch.nn."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    m = GPT(10, n_layer=2, n_head=2, n_embd=8, block_size=6, rng=0, dtype=np.float64)
    P = {k: torch.tensor(v, requires_grad=True) for k, v in m.params.items()}
    idx = np.random.default_rng(0).integers(0, 10, (3, 6))

    def torch_gpt():
        x = P["wte.weight"][torch.tensor(idx)] + P["wpe.weight"][:6]
        for i in range(2):
            p = f"h.{i}."
            h = F.layer_norm(x, (8,), P[p + "ln1.weight"])
            qkv = h @ P[p + "attn.in_proj.weight"].T
            q, k, v = (t.reshape(3, 6, 2, 4).transpose(1, 2) for t in qkv.split(8, -1))
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(3, 6, 8)
            x = x + o @ P[p + "attn.out_proj.weight"].T
            h = F.layer_norm(x, (8,), P[p + "ln2.weight"])
            x = x + F.gelu(h @ P[p + "mlp.0.weight"].T) @ P[p + "mlp.2.weight"].T
        return F.layer_norm(x, (8,), P["ln_f.weight"]) @ P["wte.weight"].T

    ref = torch_gpt()
    logits, cache = m.forward(idx)
    np.testing.assert_allclose(logits, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = np.random.default_rng(1).normal(size=logits.shape)
    ref.backward(torch.tensor(dy))
    _, grads = m.backward(cache, dy)
    for k, g in grads.items():
        np.testing.assert_allclose(g, P[k].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


def test_gpt_learns_a_repeating_sequence():
    from nograd.core.losses import softmax_cross_entropy
    from nograd.core.optim import AdamW

    m = GPT(5, n_layer=1, n_head=2, n_embd=16, block_size=8, rng=0)
    opt = AdamW(m.params, lr=3e-3)
    seq = np.tile(np.arange(5), 4)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(150):
        s = rng.integers(0, len(seq) - 9, 8)
        x = np.stack([seq[i:i + 8] for i in s])
        y = np.stack([seq[i + 1:i + 9] for i in s])
        logits, cache = m.forward(x, train=True)
        loss, d = softmax_cross_entropy(logits, y)
        opt.step(m.backward(cache, d)[1])
        losses.append(loss)
    assert losses[0] > 1.4 and np.mean(losses[-10:]) < 0.1


def test_bad_configuration_and_input_errors():
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(6, 4)
    with pytest.raises(ValueError, match="attn_mask hides"):
        MultiheadAttention(4, 1, attn_mask=np.zeros((3, 3), bool))(np.zeros((1, 3, 4)))
    with pytest.raises(ValueError, match="x must be"):
        MultiheadAttention(4, 1)(np.zeros((1, 3, 5)))
    with pytest.raises(ValueError, match="dropout"):
        TransformerBlock(4, 2, dropout=1.5)
    with pytest.raises(TypeError, match="idx"):
        GPT(5, n_layer=1, n_head=1, n_embd=4, block_size=4)(np.zeros((1, 3)))
