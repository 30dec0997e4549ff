"""nograd.parallel.ShardedStep: the batch split over threads gives the unsharded loss and gradient
(float64, to rounding), on an MLP, the fused CNN and a tiny GPT, with uneven shards; shards really
run in separate threads with BLAS at one thread, restored afterwards; bad input is refused with
errors that name the argument; batch norm is synchronised (or per shard on request)."""
import copy
import threading

import numpy as np
import pytest

import nograd
from nograd.core.module import Module
from nograd.losses import softmax_cross_entropy
from nograd.models.cnn import cnn
from nograd.models.gpt import GPT
from nograd.parallel import ShardedStep, check_shardable, shard_sizes

F64 = np.float64


def mlp(rng):
    return nograd.Sequential(nograd.Linear(6, 16, rng=rng, dtype=F64), nograd.Tanh(),
                             nograd.Linear(16, 16, rng=rng, dtype=F64), nograd.ReLU(),
                             nograd.Linear(16, 4, rng=rng, dtype=F64))


def serial_mean(model, x, y, loss=softmax_cross_entropy, **opts):
    """The reference written out: one forward/backward over the whole batch."""
    out, cache = model.forward(x, train=True)
    value, dout = loss(out, y, **opts)
    _, grads = model.backward(cache, dout, need_dx=False)
    return float(value), grads


def assert_same(loss_a, grads_a, loss_b, grads_b, tol=1e-12):
    assert set(grads_a) == set(grads_b)
    assert abs(loss_a - loss_b) <= tol * max(1.0, abs(loss_b))
    for k in grads_b:
        assert grads_a[k].shape == grads_b[k].shape and grads_a[k].dtype == grads_b[k].dtype, k
        scale = max(1.0, float(np.abs(grads_b[k]).max()))
        np.testing.assert_allclose(grads_a[k], grads_b[k], rtol=0, atol=tol * scale, err_msg=k)


def test_shard_sizes_are_contiguous_and_as_equal_as_possible():
    assert shard_sizes(10, 3) == [4, 3, 3]
    assert shard_sizes(9, 3) == [3, 3, 3]
    assert shard_sizes(2, 5) == [1, 1]
    assert shard_sizes(7, 1) == [7]
    for n in range(1, 30):
        for k in range(1, 6):
            s = shard_sizes(n, k)
            assert sum(s) == n and len(s) == min(n, k) and max(s) - min(s) <= 1


@pytest.mark.parametrize("n,shards", [(12, 2), (10, 3), (7, 2), (3, 4)])
def test_mlp_gradient_equals_unsharded(n, shards):
    rng = np.random.default_rng(n * 10 + shards)
    model = mlp(rng)
    x, y = rng.standard_normal((n, 6)), rng.integers(0, 4, n)
    with ShardedStep(model, "cross-entropy", shards=shards) as step:
        loss, grads = step(x, y)
    assert_same(loss, grads, *serial_mean(model, x, y))


def test_mlp_mse_and_label_smoothing_options_pass_through():
    rng = np.random.default_rng(3)
    model = mlp(rng)
    x, y = rng.standard_normal((9, 6)), rng.integers(0, 4, 9)
    with ShardedStep(model, "cross-entropy", shards=2, label_smoothing=0.2) as step:
        assert_same(*step(x, y), *serial_mean(model, x, y, label_smoothing=0.2))
    t = rng.standard_normal((9, 4))
    with ShardedStep(model, "mse", shards=3) as step:
        assert_same(*step(x, t), *serial_mean(model, x, t, loss=nograd.losses.mse))


def test_fused_cnn_gradient_equals_unsharded():
    rng = np.random.default_rng(1)
    model = cnn((3, 8, 8), 5, rng=rng, channels=(4, 6), dtype=F64)
    assert type(model).__name__ == "FusedSequential"
    x, y = rng.standard_normal((7, 3, 8, 8)), rng.integers(0, 5, 7)
    with ShardedStep(model, shards=2) as step:        # shards of 4 and 3 images
        loss, grads = step(x, y)
    assert_same(loss, grads, *serial_mean(model, x, y))


@pytest.mark.parametrize("shards", [2, 3])
def test_tiny_gpt_gradient_equals_unsharded(shards):
    rng = np.random.default_rng(2)
    model = GPT(11, n_layer=2, n_head=2, n_embd=8, block_size=6, dropout=0.0, bias=False,
                tie_weights=True, rng=rng, dtype=F64)
    idx, y = rng.integers(0, 11, (5, 6)), rng.integers(0, 11, (5, 6))
    with ShardedStep(model, shards=shards) as step:
        loss, grads = step(idx, y)
    assert_same(loss, grads, *serial_mean(model, idx, y))


def test_grads_matches_backprop_rule_and_joins_outputs():
    rng = np.random.default_rng(4)
    model = mlp(rng)
    x, y = rng.standard_normal((11, 6)), rng.integers(0, 4, 11)
    ref, ref_info = nograd.Backprop().grads(model, x, y)
    with ShardedStep(model, shards=3) as step:
        grads, info = step.grads(x, y)
    assert_same(info["loss"], grads, float(ref_info["loss"]), ref)
    np.testing.assert_allclose(info["output"], ref_info["output"], rtol=0, atol=1e-13)


class _Spy(Module):
    """Identity that records, per call, the thread it ran in and the BLAS threads seen then."""

    def __init__(self):
        super().__init__()
        self.seen = []                    # the test's own record; list.append is atomic

    def forward(self, x, *, train=False, rng=None, params=None):
        self.seen.append((threading.get_ident(),
                          tuple(b["threads"] for b in nograd.blas_libraries())))
        return x, None

    def backward(self, cache, dy, *, params=None, need_dx=True):
        return dy, {}


def test_shards_run_in_separate_threads_with_one_blas_thread_then_restored():
    before = [b["threads"] for b in nograd.blas_libraries()]
    if not before:
        pytest.skip("no BLAS library reachable to inspect")
    rng = np.random.default_rng(5)
    spy = _Spy()
    model = nograd.Sequential(spy, nograd.Linear(6, 4, rng=rng, dtype=F64))
    x, y = rng.standard_normal((8, 6)), rng.integers(0, 4, 8)
    with nograd.blas_threads(2):
        with ShardedStep(model, shards=2) as step:
            step(x, y)
            step(x, y)
        after = [b["threads"] for b in nograd.blas_libraries()]
    assert len(spy.seen) == 4
    assert len({t for t, _ in spy.seen}) == 2            # two threads: the caller and one worker
    assert all(all(n == 1 for n in blas) for _, blas in spy.seen)
    assert all(n == 2 for n in after)                   # restored to the setting before the step
    assert [b["threads"] for b in nograd.blas_libraries()] == before


def test_one_shard_is_the_serial_step_in_the_calling_thread_blas_untouched():
    """A batch of one row (or shards=1) has nothing to split: the step runs in the calling thread
    with BLAS as the process has it, and equals the unsharded step."""
    if not nograd.blas_libraries():
        pytest.skip("no BLAS library reachable to inspect")
    rng = np.random.default_rng(6)
    spy = _Spy()
    model = nograd.Sequential(spy, nograd.Linear(6, 4, rng=rng, dtype=F64))
    x, y = rng.standard_normal((1, 6)), rng.integers(0, 4, 1)
    with nograd.blas_threads(2):
        with ShardedStep(model, shards=2) as step:
            loss, grads = step(x, y)
    assert [t for t, _ in spy.seen] == [threading.get_ident()]
    assert all(n == 2 for n in spy.seen[0][1])
    assert_same(loss, grads, *serial_mean(model, x, y))


def test_dropout_rng_gives_a_reproducible_step():
    rng = np.random.default_rng(6)
    model = nograd.Sequential(nograd.Linear(6, 16, rng=rng, dtype=F64), nograd.Dropout(0.5),
                              nograd.Linear(16, 4, rng=rng, dtype=F64))
    x, y = rng.standard_normal((10, 6)), rng.integers(0, 4, 10)
    with ShardedStep(model, shards=2) as step:
        a = step(x, y, rng=np.random.default_rng(7))
        b = step(x, y, rng=np.random.default_rng(7))
        c = step(x, y, rng=np.random.default_rng(8))
    assert_same(*a, *b, tol=0)
    assert any(not np.array_equal(a[1][k], c[1][k]) for k in a[1])


def test_batch_norm_is_synchronised_by_default_and_local_on_request():
    """Batch norms are accepted (their statistics synchronised between the shards: the serial
    gradient, tests/test_parallel_batchnorm.py); ``allow_batch_stats=True`` / ``"local"`` keep the
    per-shard statistics (another gradient); a module with running statistics that does not
    declare ``sync_batch_stats`` is refused by name."""
    rng = np.random.default_rng(7)
    model = nograd.Sequential(nograd.Linear(6, 8, rng=rng, dtype=F64),
                              nograd.layers.BatchNorm1d(8, dtype=F64),
                              nograd.Linear(8, 4, rng=rng, dtype=F64))
    check_shardable(model)
    x, y = rng.standard_normal((8, 6)), rng.integers(0, 4, 8)
    serial = serial_mean(copy.deepcopy(model), x, y)
    with ShardedStep(copy.deepcopy(model), shards=2) as step:
        assert step.synchronised and step.batch_stats == "sync"
        assert_same(*step(x, y), *serial)
    local = []
    for kw in ({"allow_batch_stats": True}, {"batch_stats": "local"}):
        with ShardedStep(copy.deepcopy(model), shards=2, **kw) as step:
            assert not step.synchronised and step.allow_batch_stats
            local.append(step(x, y))
    assert_same(*local[0], *local[1], tol=0)
    assert not np.allclose(local[0][1]["0.weight"], serial[1]["0.weight"])
    with pytest.raises(ValueError, match="batch_stats"):
        ShardedStep(model, shards=2, batch_stats="global")
    with pytest.raises(ValueError, match="allow_batch_stats"):
        ShardedStep(model, shards=2, allow_batch_stats=True, batch_stats="sync")

    class RunningStats(nograd.Linear):              # keeps running statistics, cannot sync them
        def __init__(self):
            super().__init__(8, 8, rng=0, dtype=F64)
            self._buffers["running_mean"] = np.zeros(8)

    odd = nograd.Sequential(nograd.Linear(6, 8, rng=rng, dtype=F64), RunningStats())
    with pytest.raises(ValueError, match=r"model\.1 \(RunningStats\).*batch_stats='local'"):
        ShardedStep(odd, shards=2)
    with pytest.raises(ValueError, match="RunningStats"):
        check_shardable(odd)
    check_shardable(odd, batch_stats="local")
    check_shardable(mlp(rng))                     # a model without batch statistics passes


def test_bad_input_is_refused_naming_the_argument():
    rng = np.random.default_rng(8)
    model = mlp(rng)
    x, y = rng.standard_normal((6, 6)), rng.integers(0, 4, 6)
    with pytest.raises(ValueError, match="shards"):
        ShardedStep(model, shards=0)
    with pytest.raises((TypeError, ValueError), match="shards"):
        ShardedStep(model, shards=1.5)
    with pytest.raises(TypeError, match="model"):
        ShardedStep(object())
    with pytest.raises(ValueError, match="class_weight"):
        ShardedStep(model, class_weight=np.ones(4))
    with pytest.raises(ValueError, match="ignore_index"):
        ShardedStep(model, ignore_index=0)
    with pytest.raises(ValueError, match="unknown loss"):
        ShardedStep(model, "no-such-loss")
    with ShardedStep(model, shards=2) as step:
        with pytest.raises(ValueError, match="y has 5 rows but x has 6"):
            step(x, y[:5])
        with pytest.raises(ValueError, match="empty"):
            step(x[:0], y[:0])
        with pytest.raises(ValueError, match="x must be an array"):
            step([1.0, 2.0], y)
        with pytest.raises(TypeError, match="rng"):
            step(x, y, rng="seed")
        bad = y.copy()
        bad[-1] = 9                               # a label out of range, in the last shard
        with pytest.raises(ValueError, match="target"):
            step(x, bad)
        bad = y.copy()
        bad[0] = 9                                # and in the first (the calling thread's) shard
        with pytest.raises(ValueError, match="target"):
            step(x, bad)
        loss, _ = step(x, y)                      # the object still works after refusals
    assert np.isfinite(loss)


def test_default_shards_is_the_usable_cores():
    step = ShardedStep(mlp(np.random.default_rng(9)))
    assert step.shards == nograd.threads.usable_cores()
    step.close()


def test_copies_and_pickles_leave_the_threads_behind_and_still_work():
    import copy
    import pickle

    rng = np.random.default_rng(10)
    model = mlp(rng)
    x, y = rng.standard_normal((8, 6)), rng.integers(0, 4, 8)
    with ShardedStep(model, shards=2) as step:
        ref = step(x, y)
        for twin in (copy.deepcopy(step), pickle.loads(pickle.dumps(step))):
            assert twin._pool is None
            assert_same(*twin(x, y), *ref)        # its own copy of the model: the same numbers
            twin.close()


def test_backprop_shards_option_trains_like_the_serial_rule_in_fit():
    """fit with Backprop(shards=2) follows the serial run step for step (float64)."""
    from nograd.train import fit

    rng = np.random.default_rng(11)
    X, y = rng.standard_normal((50, 6)), rng.integers(0, 4, 50)
    runs = {}
    for shards in (None, 2):
        model = mlp(np.random.default_rng(12))
        rule = nograd.Backprop(shards=shards)
        opt = nograd.SGD(model.params, lr=0.1)
        hist = fit(model, rule, opt, (X, y), epochs=3, batch_size=16, rng=0, progress=False)
        runs[shards] = (model.params, hist)
        assert (rule._sharded is not None) == (shards is not None)   # the sharded path ran
    for k, p in runs[None][0].items():
        np.testing.assert_allclose(runs[2][0][k], p, rtol=0, atol=1e-12, err_msg=k)
    assert repr(nograd.Backprop(shards=2)) == "Backprop(loss=softmax_cross_entropy, shards=2)"


def test_backprop_shards_option_refuses_what_sharding_cannot_do():
    rng = np.random.default_rng(13)
    bn = nograd.Sequential(nograd.Linear(6, 8, rng=rng), nograd.layers.BatchNorm1d(8))
    nograd.Backprop(shards=2).check_model(bn)             # synchronised batch statistics
    nograd.Backprop().check_model(bn)
    with pytest.raises(ValueError, match="shards"):
        nograd.Backprop(shards=0)
    with pytest.raises(ValueError, match="ignore_index"):
        nograd.Backprop(shards=2, ignore_index=0)
    import copy

    rule = nograd.Backprop(shards=2)
    model = mlp(rng)
    x, y = rng.standard_normal((6, 6)), rng.integers(0, 4, 6)
    g, _ = rule.grads(model, x, y)
    twin = copy.deepcopy(rule)                           # as AlignmentLogger copies rules
    assert twin._sharded is None
    g2, _ = twin.grads(model, x, y)
    assert_same(0.0, g2, 0.0, g)


def _recording(opt, seen):
    """Record the thread of every per-array update of ``opt`` (wraps its ``_update``)."""
    inner = opt._update

    def update(name, p, g, group, scale):
        seen.append((threading.get_ident(), name))
        inner(name, p, g, group, scale)
    opt._update = update


def test_update_spreads_adamw_over_the_threads_bit_for_bit():
    """ShardedStep.update = optimizer.step, same bits (clipping scale, two groups, 3 steps), with
    the arrays' updates split over two threads, each array updated once."""
    rng = np.random.default_rng(21)
    model = GPT(13, n_layer=2, n_head=2, n_embd=16, block_size=8, dropout=0.0, bias=False,
                tie_weights=True, rng=rng, dtype=np.float32)
    twin = copy.deepcopy(model)

    def adamw(m):
        mats = {k: v for k, v in m.params.items() if v.ndim >= 2}
        rest = {k: v for k, v in m.params.items() if v.ndim < 2}
        return nograd.AdamW([{"params": mats, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}], lr=1e-2, clip_norm=0.05)
    serial_opt, opt = adamw(twin), adamw(model)
    seen = []
    _recording(opt, seen)
    with ShardedStep(model, shards=2) as step:
        for _ in range(3):
            idx, y = rng.integers(0, 13, (4, 8)), rng.integers(0, 13, (4, 8))
            _, grads = step(idx, y)
            serial_opt.step({k: g.copy() for k, g in grads.items()})
            step.update(opt, grads)
    for k, p in twin.params.items():
        np.testing.assert_array_equal(model.params[k], p, err_msg=k)
        for s in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt.state[k][s], serial_opt.state[k][s], err_msg=k)
    assert len({t for t, _ in seen}) == 2                      # both threads updated arrays
    assert sorted(n for _, n in seen) == sorted(list(model.params) * 3)   # each array once a step


def test_update_keeps_other_optimizers_serial():
    """SGD (its updates share scratch buffers) updates in the calling thread only."""
    rng = np.random.default_rng(22)
    model = mlp(rng)
    opt, seen = nograd.SGD(model.params, lr=0.1, momentum=0.9), []
    _recording(opt, seen)
    x, y = rng.standard_normal((8, 6)), rng.integers(0, 4, 8)
    with ShardedStep(model, shards=2) as step:
        _, grads = step(x, y)
        step.update(opt, grads)
    assert {t for t, _ in seen} == {threading.get_ident()} and len(seen) == len(model.params)
    with pytest.raises(ValueError, match="unknown parameter name"):
        with ShardedStep(model, shards=2) as step:
            step.update(opt, {"nope": np.zeros(3)})
