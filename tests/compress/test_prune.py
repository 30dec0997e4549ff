"""nograd.compress.prune: structured pruning of a GPT (MINI-LLM, Cheng et al. 2024, and baselines)."""
import numpy as np
import pytest

import nograd
from nograd.compress.pruning import prune, recover
from nograd.compress.prune_groups import block_sizes, lean_forward, shrink
from nograd.compress.prune_scores import group_scores, lm_loss, zo_gradient, zo_group_gradient


def tiny(seed=0, dtype=np.float32, **kw):
    opts = dict(n_layer=2, n_head=4, n_embd=16)
    opts.update(kw)
    m = nograd.get_model("gpt", (8,), 11, rng=seed, **opts)
    if dtype is not np.float32:
        m.astype(dtype)
    # spread the weights so that the scores differ clearly between groups
    r = np.random.default_rng(seed + 100)
    for a in m.params.values():
        a *= (1 + r.random(a.shape)).astype(a.dtype)
    return m


def calib(seed=0, k=2, B=4, T=8, V=11):
    r = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        x = r.integers(0, V, (B, T + 1))
        out.append((x[:, :-1], x[:, 1:]))
    return out


def zeroed(model, heads, mlp):
    """A float copy of ``model`` with the given groups' weights set to zero (removed[l] lists)."""
    import copy

    m = copy.deepcopy(model)
    _, _, D = block_sizes(m)
    for l, block in enumerate(m._children["h"]):
        attn = block._children["attn"]
        H = attn.num_heads
        win = attn._children["in_proj"]._own["weight"].reshape(3, H, D, -1)
        wout = attn._children["out_proj"]._own["weight"].reshape(-1, H, D)
        for h in heads[l]:
            win[:, h] = 0
            wout[:, h] = 0
        for c in mlp[l]:
            block._children["mlp"][0]._own["weight"][c] = 0
            block._children["mlp"][2]._own["weight"][:, c] = 0
    return m


# ------------------------------------------------------------------ the surgery
@pytest.mark.parametrize("seed", range(4))
def test_pruned_model_equals_the_original_with_the_groups_zeroed(seed):
    model = tiny(seed, np.float64)
    r = np.random.default_rng(seed)
    heads = [np.sort(r.choice(4, size=r.integers(0, 4), replace=False)) for _ in range(2)]
    mlp = [np.sort(r.choice(64, size=r.integers(0, 64), replace=False)) for _ in range(2)]
    keep_h = [np.setdiff1d(np.arange(4), h) for h in heads]
    keep_m = [np.setdiff1d(np.arange(64), c) for c in mlp]
    small = shrink(model, keep_h, keep_m)
    assert small.n_heads == tuple(k.size for k in keep_h)
    assert small.mlp_hidden == tuple(k.size for k in keep_m)
    assert small.num_params < model.num_params or not any(h.size for h in heads + mlp)
    ref = zeroed(model, heads, mlp)
    x = r.integers(0, 11, (3, 8))
    np.testing.assert_allclose(small(x), ref(x), rtol=1e-10, atol=1e-12)
    # and it is not the unpruned model (unless nothing went)
    if any(h.size for h in heads + mlp):
        assert np.abs(small(x) - model(x)).max() > 1e-6


def test_prune_removes_the_reported_groups_exactly():
    model = tiny(1, np.float64)
    small, rep = prune(model, calib(), score="wanda", ratio=0.5)
    # the two lowest-scoring heads of each block went
    assert rep.removed["heads"] == [sorted(np.argsort(s["heads"])[:2].tolist()) for s in rep.scores]
    ref = zeroed(model, rep.removed["heads"], rep.removed["mlp"])
    x = np.random.default_rng(3).integers(0, 11, (2, 8))
    np.testing.assert_allclose(small(x), ref(x), rtol=1e-10, atol=1e-12)
    assert [len(c) for c in rep.removed["mlp"]] == [32, 32]
    assert rep.params_after == small.num_params < rep.params_before == model.num_params


def test_ratio_zero_returns_an_identical_model():
    model = tiny(2)
    small, rep = prune(model, calib(), score="mini-llm", ratio=0, n=4, rng=0)
    assert small is not model
    assert list(small.params) == list(model.params)
    for k, a in model.params.items():
        np.testing.assert_array_equal(small.params[k], a)
    x = calib()[0][0]
    np.testing.assert_array_equal(small(x), model(x))
    assert rep.removed == {"heads": [[], []], "mlp": [[], []]}


def test_only_the_chosen_kind_is_pruned_and_the_input_model_is_left_alone():
    model = tiny(3)
    before = {k: a.copy() for k, a in model.params.items()}
    small, _ = prune(model, calib(), score="taylor", ratio=0.5, groups=("mlp",))
    assert small.n_heads == (4, 4) and small.mlp_hidden == (32, 32)
    small, _ = prune(model, calib(), score="magnitude", ratio=0.5, groups="heads")
    assert small.n_heads == (2, 2) and small.mlp_hidden == (64, 64)
    for k, a in model.params.items():
        np.testing.assert_array_equal(a, before[k])


def test_pruned_model_saves_and_reloads(tmp_path):
    model = tiny(4)
    small, _ = prune(model, calib(), score="wanda", ratio=0.3)
    path = tmp_path / "small.npz"
    nograd.save_model(small, path)
    again = nograd.load_model(path)
    assert again.n_heads == small.n_heads and again.mlp_hidden == small.mlp_hidden
    x = calib()[0][0]
    np.testing.assert_array_equal(again(x), small(x))
    # and prunes again
    smaller, _ = prune(again, calib(), score="magnitude", ratio=0.5)
    assert smaller.num_params < again.num_params


def test_a_gpt_built_without_get_model_prunes_and_saves(tmp_path):
    from nograd.models.gpt import GPT

    model = GPT(11, n_layer=1, n_head=2, n_embd=8, block_size=8, rng=0)
    small, _ = prune(model, calib(), score="magnitude", ratio=0.5)
    nograd.save_model(small, tmp_path / "g.npz")
    x = calib()[0][0]
    np.testing.assert_array_equal(nograd.load_model(tmp_path / "g.npz")(x), small(x))


def test_lean_forward_is_the_models_forward():
    model = tiny(5)
    x = calib()[0][0]
    np.testing.assert_allclose(lean_forward(model, x), model(x), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ the scores
def test_scores_are_deterministic_under_a_seed():
    # scoring restores θ to rounding (as MeZO does), so each call gets its own copy of the model
    import copy

    model = tiny(6)
    a, b, c = (prune(copy.deepcopy(model), calib(), score="mini-llm", ratio=0.25, n=8, rng=s)[1].scores
               for s in (7, 7, 8))
    for s, t, u in zip(a, b, c):
        np.testing.assert_array_equal(s["mlp"], t["mlp"])
        np.testing.assert_array_equal(s["heads"], t["heads"])
        assert not np.array_equal(s["mlp"], u["mlp"])


def test_scoring_leaves_the_weights_in_place():
    model = tiny(7)
    before = {k: a.copy() for k, a in model.params.items()}
    prune(model, calib(), score="mini-llm", ratio=0.25, n=6, rng=0)
    for k, a in model.params.items():
        np.testing.assert_allclose(a, before[k], rtol=0, atol=1e-6)


def test_spsa_estimate_is_the_two_point_formula_written_out():
    """Ĝ = (1/n) Σ_k (L(θ+εz_k) − L(θ−εz_k)) / (2ε) · z_k, z_k drawn from default_rng([s, k, m])
    for matrix m (Malladi et al. 2023, Definition 1), computed here on copies, not in place."""
    model = tiny(8, np.float64)
    batches, seed, eps, n = calib(), 5, 1e-4, 3
    got = zo_gradient(model, batches, n=n, eps=eps, seed=seed)["grads"]
    names = list(got)
    base = {k: model.params[k].copy() for k in names}
    expect = {k: np.zeros_like(base[k]) for k in names}
    for k in range(n):
        z = {name: np.random.default_rng([seed, k, m]).standard_normal(base[name].shape)
             for m, name in enumerate(names)}
        losses = []
        for sign in (1, -1):
            for name in names:
                model.params[name][...] = base[name] + sign * eps * z[name]
            x, y = batches[k % len(batches)]
            losses.append(lm_loss(model(x), y))
        for name in names:
            model.params[name][...] = base[name]
            expect[name] += (losses[0] - losses[1]) / (2 * eps) * z[name] / n
    for name in names:
        np.testing.assert_allclose(got[name], expect[name], rtol=1e-6, atol=1e-9)


def test_fms_score_is_the_papers_formula_written_out():
    """S_g = Σ_{(i,j)∈g} |W_ij Ĝ_ij| ‖X_j‖₂ (Cheng et al. 2024, §3), with X the input of each
    matrix over all calibration tokens; loops over the group's rows and columns."""
    model = tiny(9, np.float64)
    batches = calib()
    got = group_scores(model, batches, "mini-llm", n=4, eps=1e-4, seed=3, directions="weights")
    G = zo_gradient(model, batches, n=4, eps=1e-4, seed=3)["grads"]
    H, D, E, M = 4, 4, 16, 64
    for l, block in enumerate(model._children["h"]):
        feats = {"in": [], "out": [], "up": [], "down": []}
        for x, _ in batches:            # the inputs of each matrix, from a plain forward pass
            h = model._children["wpe"](model._children["wte"](x))
            for b in list(model._children["h"])[:l]:
                h = b(h)
            _, c = block.forward(h)
            for key, a in zip(feats, (c["attn"][0], c["attn"][2], c["mlp"][0], c["mlp"][2])):
                feats[key].append(a.reshape(-1, a.shape[-1]))
        xn = {k: np.sqrt((np.concatenate(v) ** 2).sum(0)) for k, v in feats.items()}
        W = {"in": block.attn.in_proj.weight, "out": block.attn.out_proj.weight,
             "up": block.mlp[0].weight, "down": block.mlp[2].weight}
        g = {"in": G[f"h.{l}.attn.in_proj.weight"], "out": G[f"h.{l}.attn.out_proj.weight"],
             "up": G[f"h.{l}.mlp.0.weight"], "down": G[f"h.{l}.mlp.2.weight"]}
        for head in range(H):
            s = 0.0
            for part in range(3):
                for d in range(D):
                    i = part * H * D + head * D + d
                    s += sum(abs(W["in"][i, j] * g["in"][i, j]) * xn["in"][j] for j in range(E))
            for d in range(D):
                j = head * D + d
                s += sum(abs(W["out"][i, j] * g["out"][i, j]) * xn["out"][j] for i in range(E))
            assert got[l]["heads"][head] == pytest.approx(s, rel=1e-9)
        for ch in (0, 17, M - 1):
            s = sum(abs(W["up"][ch, j] * g["up"][ch, j]) * xn["up"][j] for j in range(E))
            s += sum(abs(W["down"][i, ch] * g["down"][i, ch]) * xn["down"][ch] for i in range(E))
            assert got[l]["mlp"][ch] == pytest.approx(s, rel=1e-9)


def test_zo_gradient_correlates_with_the_backprop_gradient():
    """With n probes in d dimensions the cosine of Ĝ and G is about 1/√(1 + (d+1)/n): 0.71 at
    n = d. Bar: above 0.5 at n = d, and the estimate with n = d/16 (cosine ≈ 0.24) is worse."""
    from nograd.compress.prune_scores import backprop_gradient

    model = nograd.get_model("gpt", (8,), 7, rng=0, n_layer=1, n_head=2, n_embd=8)
    model.astype(np.float64)
    batches = calib(V=7, k=1, B=8)
    G = backprop_gradient(model, batches)
    d = sum(g.size for g in G.values())

    def cosine(n):
        Z = zo_gradient(model, batches, n=n, eps=1e-5, seed=1)["grads"]
        a = np.concatenate([G[k].ravel() for k in G])
        b = np.concatenate([Z[k].ravel() for k in G])
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    full, few = cosine(d), cosine(d // 16)
    assert full > 0.5
    assert few < full


def hadamard(r, d):
    """Row r of the Sylvester-Hadamard matrix, first d entries: (-1)^popcount(r & j)."""
    return np.array([(-1.0) ** bin(r & j).count("1") for j in range(d)])


def test_group_spsa_is_the_two_point_formula_in_gate_space_written_out():
    """â = (1/n_kind) Σ_{k of the kind} (L(W_g(1+εu_kg)) − L(W_g(1−εu_kg))) / (2ε) · u_k with
    u_k = signs ⊙ (Hadamard row perm[j mod P]) drawn from default_rng([s, kind, cycle]), heads on
    even probes and MLP channels on odd ones; computed here on copies, not in place."""
    model = tiny(13, np.float64)
    batches, seed, eps, n = calib(), 4, 1e-5, 6
    got = zo_group_gradient(model, batches, n=n, eps=eps, seed=seed)["gates"]
    base = {k: a.copy() for k, a in model.params.items()}
    expect = [{"heads": np.zeros(4), "mlp": np.zeros(64)} for _ in range(2)]
    for k in range(n):
        kind, ki, j = ("heads", "mlp")[k % 2], k % 2, k // 2
        d = 8 if kind == "heads" else 128
        gen = np.random.default_rng([seed, ki, j // d])
        perm = gen.permutation(d)
        u = gen.choice(np.array([-1.0, 1.0]), size=d) * hadamard(int(perm[j % d]), d)
        us = np.split(u, 2)
        losses = []
        for sign in (1, -1):
            for l in range(2):
                f = 1 + sign * eps * us[l]
                p = f"h.{l}."
                if kind == "heads":
                    w = base[p + "attn.in_proj.weight"].reshape(3, 4, 4, 16) * f[None, :, None, None]
                    model.params[p + "attn.in_proj.weight"][...] = w.reshape(48, 16)
                    w = base[p + "attn.out_proj.weight"].reshape(16, 4, 4) * f[None, :, None]
                    model.params[p + "attn.out_proj.weight"][...] = w.reshape(16, 16)
                else:
                    model.params[p + "mlp.0.weight"][...] = base[p + "mlp.0.weight"] * f[:, None]
                    model.params[p + "mlp.2.weight"][...] = base[p + "mlp.2.weight"] * f[None, :]
            x, y = batches[(j // d) % len(batches)]
            losses.append(lm_loss(model(x), y))
        for name, a in base.items():
            model.params[name][...] = a
        for l in range(2):
            expect[l][kind] += (losses[0] - losses[1]) / (2 * eps) * us[l] / (n // 2)
    for l in range(2):
        for kind in ("heads", "mlp"):
            np.testing.assert_allclose(got[l][kind], expect[l][kind], rtol=1e-6, atol=1e-10)
    # and the FMS with these directions: S_g = |â_g| Σ_{(i,j)∈g} W_ij² ‖X_j‖₂
    S = group_scores(model, batches, "mini-llm", n=n, eps=eps, seed=seed, directions="gates")
    from nograd.compress.prune_scores import activation_norms

    xn = activation_norms(model, batches)
    for l, block in enumerate(model._children["h"]):
        W1, W2 = block.mlp[0].weight, block.mlp[2].weight
        for ch in (0, 31, 63):
            m = sum(W1[ch, j] ** 2 * xn[l]["up"][j] for j in range(16))
            m += sum(W2[i, ch] ** 2 * xn[l]["down"][ch] for i in range(16))
            assert S[l]["mlp"][ch] == pytest.approx(abs(expect[l]["mlp"][ch]) * m, rel=1e-5)


def test_group_spsa_is_exact_after_a_complete_cycle_and_correlates_before():
    """a_g = Σ_{(i,j)∈g} W_ij G_ij from backprop. A complete Hadamard cycle (P = d probes of a kind on
    one batch) recovers it to O(ε²): cosine > 0.9999. With a quarter of a cycle of the 64 MLP
    channels the estimate is a noisy one: cosine above 0.2 (about 0.5 expected), below the full."""
    from nograd.compress.prune_groups import aggregate, block_weights
    from nograd.compress.prune_scores import backprop_gradient

    model = nograd.get_model("gpt", (8,), 7, rng=0, n_layer=1, n_head=4, n_embd=16)
    model.astype(np.float64)
    batches = calib(V=7, k=1, B=8)
    G = backprop_gradient(model, batches)
    block = model._children["h"][0]
    W = block_weights(block)
    names = {"in": "attn.in_proj", "out": "attn.out_proj", "up": "mlp.0", "down": "mlp.2"}
    a = aggregate(block, {r: W[r] * G[f"h.0.{names[r]}.weight"] for r in W})

    def cosine(n, kind):
        est = zo_group_gradient(model, batches, n=n, eps=1e-5, seed=2)["gates"][0][kind]
        return a[kind] @ est / np.linalg.norm(a[kind]) / np.linalg.norm(est)

    assert cosine(2 * 64, "mlp") > 0.9999
    assert cosine(2 * 4, "heads") > 0.9999
    assert 0.2 < cosine(2 * 16, "mlp") < 0.99


def test_mixed_directions_take_heads_from_gates_and_channels_from_weights():
    """directions="mixed": head scores |â_h| Σ W² ‖X‖ from whole Hadamard cycles of head gates
    (n = 5 rounded up to whole cycles of 8, one per calibration batch: 16), channel scores the isotropic FMS of the
    MLP matrices alone."""
    from nograd.compress.prune_scores import activation_norms

    model = tiny(14, np.float64)
    batches, seed, eps = calib(), 6, 1e-5
    got = group_scores(model, batches, "mini-llm", n=5, eps=eps, seed=seed)
    heads = zo_group_gradient(model, batches, n=16, eps=eps, seed=seed, kinds=("heads",))["gates"]
    G = zo_gradient(model, batches, n=5, eps=eps, seed=seed, roles=("up", "down"))["grads"]
    assert sorted(G) == ["h.0.mlp.0.weight", "h.0.mlp.2.weight", "h.1.mlp.0.weight", "h.1.mlp.2.weight"]
    xn = activation_norms(model, batches)
    for l, block in enumerate(model._children["h"]):
        Win = block.attn.in_proj.weight.reshape(3, 4, 4, 16)
        Wout = block.attn.out_proj.weight.reshape(16, 4, 4)
        m = ((Win ** 2) * xn[l]["in"]).sum(axis=(0, 2, 3)) + \
            ((Wout ** 2) * xn[l]["out"].reshape(1, 4, 4)).sum(axis=(0, 2))
        # (each estimate restores θ to rounding, so the next one starts an ulp away: rtol 1e-6)
        np.testing.assert_allclose(got[l]["heads"], np.abs(heads[l]["heads"]) * m, rtol=1e-6)
        W1, W2 = block.mlp[0].weight, block.mlp[2].weight
        mlp = (np.abs(W1 * G[f"h.{l}.mlp.0.weight"]) * xn[l]["up"]).sum(1) + \
            (np.abs(W2 * G[f"h.{l}.mlp.2.weight"]) * xn[l]["down"]).sum(0)
        np.testing.assert_allclose(got[l]["mlp"], mlp, rtol=1e-6)


@pytest.mark.parametrize("directions", ["mixed", "gates", "weights"])
def test_every_direction_prunes(directions):
    small, rep = prune(tiny(15), calib(), ratio=0.5, n=4, directions=directions, rng=0)
    assert small.n_heads == (2, 2) and small.mlp_hidden == (32, 32)


def test_taylor_score_uses_the_exact_gradient():
    from nograd.compress.prune_scores import backprop_gradient

    model = tiny(10, np.float64)
    batches = calib()
    G = backprop_gradient(model, batches)
    # directional finite difference along a random direction of one matrix
    name = "h.1.mlp.0.weight"
    w = model.params[name]
    u = np.random.default_rng(0).standard_normal(w.shape)
    h = 1e-6
    w += h * u
    up = np.mean([lm_loss(model(x), y) for x, y in batches])
    w -= 2 * h * u
    down = np.mean([lm_loss(model(x), y) for x, y in batches])
    w += h * u
    assert (up - down) / (2 * h) == pytest.approx(float((G[name] * u).sum()), rel=1e-5)
    s = group_scores(model, batches, "taylor")
    W1 = model.params[name]
    W2 = model.params["h.1.mlp.2.weight"]
    expect = np.abs(W1 * G[name]).sum(1) + np.abs(W2 * G["h.1.mlp.2.weight"]).sum(0)
    np.testing.assert_allclose(s[1]["mlp"], expect, rtol=1e-12)


# ------------------------------------------------------------------ recovery
def test_backprop_recovery_lowers_the_loss_and_keeps_the_pruned_shapes():
    model = tiny(11)
    small, _ = prune(model, calib(), score="magnitude", ratio=0.5)
    shapes = {k: a.shape for k, a in small.params.items()}
    data = calib(seed=1, k=1, B=8)
    before = lm_loss(small(data[0][0]), data[0][1])
    hist = recover(small, data, steps=30, method="backprop", rank=2, lr=1e-2, rng=0)
    assert {k: a.shape for k, a in small.params.items()} == shapes
    assert lm_loss(small(data[0][0]), data[0][1]) < before - 0.05
    assert len(hist["losses"]) == 30


def test_mezo_recovery_runs_forward_only_and_merges():
    model = tiny(12)
    small, _ = prune(model, calib(), score="magnitude", ratio=0.5)
    before = {k: a.copy() for k, a in small.params.items()}
    data = calib(seed=2, k=1, B=8)
    hist = recover(small, data, steps=20, method="mezo", rank=2, lr=1e-2, rng=0)
    assert set(small.params) == set(before)
    assert any(not np.array_equal(small.params[k], before[k]) for k in before)
    assert np.all(np.isfinite(hist["losses"]))


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, match", [
    ({"ratio": 1.0}, "ratio"), ({"ratio": -0.1}, "ratio"), ({"ratio": "0.2"}, "ratio"),
    ({"groups": ("heads", "layers")}, "groups"), ({"groups": ()}, "groups"),
    ({"score": "random"}, "score"), ({"n": 0}, "n"), ({"directions": "diagonal"}, "directions"),
    ({"eps": -1.0}, "eps"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        prune(tiny(), calib(), **kwargs)


def test_bad_calibration_batches_and_models_are_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match="calib_batches is empty"):
        prune(model, [])
    with pytest.raises(ValueError, match="outside"):
        prune(model, calib(V=30))
    with pytest.raises(TypeError, match="calib_batches"):
        prune(model, calib()[0])
    with pytest.raises(TypeError, match="model must be a nograd GPT"):
        prune(nograd.Sequential(nograd.Linear(2, 2)), calib())
    nograd.lora.apply(model, 2)
    with pytest.raises(TypeError, match="merge LoRA"):
        prune(model, calib())
    with pytest.raises(ValueError, match="method"):
        recover(tiny(), calib(), steps=1, method="sgd")


def test_a_pruned_gpt_decodes_with_its_key_value_cache():
    from nograd.models.gpt import generate

    small, _ = prune(tiny(16), calib(), score="magnitude", ratio=0.5)
    a = generate(small, np.array([1, 2, 3]), 10, rng=0, use_cache=True)
    b = generate(small, np.array([1, 2, 3]), 10, rng=0, use_cache=False)
    np.testing.assert_array_equal(a, b)


def test_the_package_export_prunes_after_the_submodule_was_imported():
    import nograd.compress
    import nograd.compress.pruning  # noqa: F401

    small, _ = nograd.compress.prune(tiny(17), calib(), score="magnitude", ratio=0.5)
    assert small.n_heads == (2, 2)
