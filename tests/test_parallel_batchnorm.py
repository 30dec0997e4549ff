"""Synchronised batch norm in nograd.parallel.ShardedStep (issue #28): a sharded step of a model
with BatchNorm2d (fused with its ReLU and not) or BatchNorm1d gives the serial step's loss,
gradients and running averages — float64 to 1e-12, float32 to 1e-6 of each array's scale (about
8 float32 ulps: the step's products and sums run in another order, per-shard GEMMs and statistics
combined by parts; measured at most 9e-8 on these nets) — deterministically; the shard group's collectives; errors in one
shard stop the others (no hang) and the step reports the original error; evaluation and models
without batch norm are untouched.

The mutation checked: normalising each shard with its own mean (``gmean`` replaced by the local
``mean`` in ``BatchNorm1d._sync_forward``) fails ``test_sharded_step_equals_the_serial_step``
and ``test_mlp_with_batchnorm1d_equals_the_serial_step`` (loss off by ~1e-2)."""
import copy
import threading
import time

import numpy as np
import pytest

import nograd
import nograd.parallel as parallel
from nograd.core.checks import NonFiniteError
from nograd.core.module import Module
from nograd.layers import (BatchNorm1d, BatchNorm2d, Conv2d, Flatten, FusedSequential, GlobalAvgPool2d,
                           Linear, ReLU)
from nograd.layers.norm import current_shard, shard_scope
from nograd.parallel import ShardedStep
from nograd.shard_sync import ShardGroup

F64, F32 = np.float64, np.float32
TOL = {F64: 1e-12, F32: 1e-6}


def conv_net(dtype, fuse, seed=1):
    """conv → BN → ReLU → conv → BN → ReLU → pool → linear, the BN's affine arrays not at 1, 0."""
    rng = np.random.default_rng(seed)
    chain = FusedSequential if fuse else nograd.Sequential
    net = chain(Conv2d(3, 4, 3, padding=1, bias=False, rng=rng, dtype=dtype), BatchNorm2d(4, momentum=0.3, dtype=dtype),
                ReLU(), Conv2d(4, 5, 3, padding=1, rng=rng, dtype=dtype), BatchNorm2d(5, dtype=dtype), ReLU(),
                GlobalAvgPool2d(), Flatten(), Linear(5, 3, rng=rng, dtype=dtype))
    for k in ("1", "4"):
        c = net.params[f"{k}.weight"].shape[0]
        net.params[f"{k}.weight"][...] = rng.uniform(0.5, 1.5, c)
        net.params[f"{k}.bias"][...] = 0.3 * rng.standard_normal(c)
    return net


def bn_mlp(dtype, seed=2):
    rng = np.random.default_rng(seed)
    return nograd.Sequential(Linear(6, 8, rng=rng, dtype=dtype), BatchNorm1d(8, dtype=dtype), nograd.Tanh(),
                             Linear(8, 8, rng=rng, dtype=dtype), BatchNorm1d(8, affine=False, dtype=dtype),
                             ReLU(), Linear(8, 3, rng=rng, dtype=dtype))


def serial_step(model, x, y):
    grads, info = nograd.Backprop().grads(model, x, y)
    return float(info["loss"]), grads


def assert_close(a, b, tol):
    a, b = np.asarray(a, F64), np.asarray(b, F64)
    scale = max(1.0, float(np.abs(b).max()))
    assert np.abs(a - b).max() <= tol * scale, (float(np.abs(a - b).max()), tol * scale)


def assert_same_step(model, twin, got, want, tol):
    assert abs(got[0] - want[0]) <= tol * max(1.0, abs(want[0])), (got[0], want[0])
    assert list(got[1]) == list(want[1])
    for k in want[1]:
        assert got[1][k].dtype == want[1][k].dtype, k
        assert_close(got[1][k], want[1][k], tol)
    for k in twin.buffers:                          # the running averages moved once, the same way
        assert_close(model.buffers[k], twin.buffers[k], tol)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("shards", [2, 3])
def test_sharded_step_equals_the_serial_step(dtype, fuse, shards):
    """7 images in 2 or 3 uneven shards, two steps (the running averages move twice)."""
    model = conv_net(dtype, fuse)
    twin = copy.deepcopy(model)
    rng = np.random.default_rng(3)
    with ShardedStep(model, "cross-entropy", shards=shards) as step:
        assert step.synchronised
        for _ in range(2):
            x = (2 + rng.standard_normal((7, 3, 5, 6))).astype(dtype)
            y = rng.integers(0, 3, 7)
            assert_same_step(model, twin, step(x, y), serial_step(twin, x, y), TOL[dtype])


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("n, shards", [(10, 3), (9, 2), (3, 3)])
def test_mlp_with_batchnorm1d_equals_the_serial_step(dtype, n, shards):
    """BatchNorm1d (with and without affine) on (N, C); (3, 3): shards of one row each, whose own
    statistics would not exist (one value per channel), the batch's do."""
    model = bn_mlp(dtype)
    twin = copy.deepcopy(model)
    rng = np.random.default_rng(n)
    x, y = rng.standard_normal((n, 6)).astype(dtype), rng.integers(0, 3, n)
    with ShardedStep(model, "cross-entropy", shards=shards) as step:
        got = step(x, y)
    assert_same_step(model, twin, got, serial_step(twin, x, y), TOL[dtype])


@pytest.mark.parametrize("dtype", [F64, F32])
def test_batchnorm1d_on_sequences(dtype):
    rng = np.random.default_rng(4)
    model = nograd.Sequential(BatchNorm1d(3, dtype=dtype), Flatten(), Linear(12, 2, rng=rng, dtype=dtype))
    twin = copy.deepcopy(model)
    x, y = (2 + rng.standard_normal((9, 3, 4))).astype(dtype), rng.integers(0, 2, 9)
    with ShardedStep(model, shards=2) as step:
        got = step(x, y)
    assert_same_step(model, twin, got, serial_step(twin, x, y), TOL[dtype])


@pytest.mark.parametrize("layer, dtype", [(BatchNorm1d, F64), (BatchNorm2d, F64), (BatchNorm2d, F32)])
def test_statistics_of_data_with_a_large_mean(layer, dtype):
    """Input 1e4 + N(0, 1) straight into the norm (momentum 1: the running averages are the
    batch's mean and unbiased variance), 9 samples in 3 shards: the running variance equals the
    float64 two-pass variance of the whole batch to 1e-12 in float64 (raw float64 sums would be off
    by ~1e-8), to float32 rounding in float32; the step equals the serial one. (BatchNorm1d's
    serial path computes in the input's dtype, which in float32 loses ~3 digits at this mean — the
    sharded path sums in float64 — so it is compared in float64 only.)"""
    rng = np.random.default_rng(5)
    shape = (9, 3, 4) if layer is BatchNorm1d else (9, 3, 2, 2)
    model = nograd.Sequential(layer(3, momentum=1.0, dtype=dtype), Flatten(), Linear(12, 2, rng=rng, dtype=dtype))
    twin = copy.deepcopy(model)
    x, y = (1e4 + rng.standard_normal(shape)).astype(dtype), rng.integers(0, 2, 9)
    with ShardedStep(model, shards=3) as step:
        got = step(x, y)
    assert_same_step(model, twin, got, serial_step(twin, x, y), TOL[dtype])
    xd = x.astype(F64).swapaxes(0, 1).reshape(3, -1)
    m = xd.shape[1]
    np.testing.assert_allclose(model.buffers["0.running_var"], xd.var(axis=1) * m / (m - 1),
                               rtol=1e-12 if dtype == F64 else 1e-7)
    np.testing.assert_allclose(model.buffers["0.running_mean"], xd.mean(axis=1),
                               rtol=1e-15 if dtype == F64 else 1e-7)


def test_the_sharded_step_is_deterministic():
    model = conv_net(F32, True)
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((8, 3, 4, 4)).astype(F32), rng.integers(0, 3, 8)
    runs = []
    for _ in range(2):
        m = copy.deepcopy(model)
        with ShardedStep(m, shards=2) as step:
            runs.append((step(x, y), m.buffers))
    (a, ba), (b, bb) = runs
    assert a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
    assert all(np.array_equal(ba[k], bb[k]) for k in ba)


# ---------------------------------------------------------------------------- the shard group
def _in_threads(group, fn):
    """Run ``fn(i)`` as participant ``i`` of ``group`` in its own thread; ``(results, errors)``."""
    results, errors = [None] * group.size, [None] * group.size

    def run(i):
        try:
            results[i] = fn(i)
        except BaseException as e:      # noqa: BLE001 - recorded for the test
            errors[i] = e
    threads = [threading.Thread(target=run, args=(i,)) for i in range(group.size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a participant hangs"
    return results, errors


def test_allreduce_sums_in_participant_order_and_gathers():
    rng = np.random.default_rng(7)
    parts = [rng.standard_normal(5) * 10.0 ** rng.integers(-8, 8, 5) for _ in range(4)]
    group = ShardGroup(4)

    def fn(i):
        total, = group.allreduce(i, (parts[i],), tag="t")
        gathered = group.members[i].allgather((parts[i][:2],))
        group.finish(i)
        return total, gathered
    results, errors = _in_threads(group, fn)
    assert errors == [None] * 4
    want = ((parts[0] + parts[1]) + parts[2]) + parts[3]
    for total, gathered in results:
        assert np.array_equal(total, want) and total is results[0][0]     # one sum, shared
        assert not total.flags.writeable
        assert all(np.array_equal(g[0], p[:2]) for g, p in zip(gathered, parts))


def test_mismatched_collectives_raise_instead_of_hanging():
    group = ShardGroup(2)
    _, errors = _in_threads(group, lambda i: group.allreduce(i, (np.zeros(3 + i),), tag="x"))
    assert sum(isinstance(e, RuntimeError) and "different collectives" in str(e) for e in errors) == 1
    assert sum(isinstance(e, threading.BrokenBarrierError) for e in errors) == 1
    group = ShardGroup(2)                    # one participant stops early: finish meets allreduce
    _, errors = _in_threads(group, lambda i: group.finish(i) if i else group.allreduce(i, (np.ones(2),)))
    assert any(isinstance(e, RuntimeError) for e in errors) and group.broken
    with pytest.raises(ValueError, match="index"):
        ShardGroup(2).allreduce(2, (np.ones(1),))
    with pytest.raises(ValueError, match="size"):
        ShardGroup(0)


class Fails(Module):
    """Identity, except that it raises in its forward (``when="forward"``) or backward on a shard
    of ``rows`` rows while ``armed``."""

    def __init__(self, rows, when="forward"):
        super().__init__()
        self.rows, self.when, self.armed = rows, when, True

    def forward(self, x, *, train=False, rng=None, params=None):
        if self.armed and self.when == "forward" and x.shape[0] == self.rows:
            raise ArithmeticError("shard forward failed")
        return x, x.shape[0]

    def backward(self, cache, dy, *, params=None, need_dx=True):
        if self.armed and self.when == "backward" and cache == self.rows:
            raise ArithmeticError("shard backward failed")
        return dy, {}

    def jvp(self, x, dx, dparams=None, *, train=False, rng=None, params=None):
        return x, dx


@pytest.mark.parametrize("where", [0, 2, 4])
@pytest.mark.parametrize("when", ["forward", "backward"])
def test_an_error_in_one_shard_is_raised_promptly_and_the_next_step_works(where, when):
    """The shard of 3 rows (shard 1 of 7 rows in 2) raises before the first batch norm, between
    the two, or after them, in the forward or the backward; shard 0 would otherwise wait for it at
    the next exchange. The step raises that error (not the other shard's BrokenBarrierError)
    within seconds, and then works."""
    rng = np.random.default_rng(8)
    fails = Fails(3, when)
    kids = [Linear(4, 6, rng=rng, dtype=F64), BatchNorm1d(6, dtype=F64), nograd.Tanh(),
            Linear(6, 6, rng=rng, dtype=F64), BatchNorm1d(6, dtype=F64), Linear(6, 3, rng=rng, dtype=F64)]
    kids.insert(where, fails)
    model = nograd.Sequential(*kids)
    twin = copy.deepcopy(model)
    twin[where].armed = False
    x, y = rng.standard_normal((7, 4)), rng.integers(0, 3, 7)
    with ShardedStep(model, shards=2) as step:
        outcome = {}

        def call():
            try:
                step(x, y)
            except BaseException as e:          # noqa: BLE001 - recorded for the test
                outcome["error"] = e
        t0 = time.perf_counter()
        t = threading.Thread(target=call)
        t.start()
        t.join(timeout=20)
        assert not t.is_alive(), "the step hangs"
        assert time.perf_counter() - t0 < 10
        assert isinstance(outcome.get("error"), ArithmeticError), outcome
        assert f"shard {when} failed" in str(outcome["error"])
        fails.armed = False
        loss, grads = step(x, y)                    # the same object steps again
        assert np.isfinite(loss) and set(grads) == set(model.params)
    for k in twin.buffers:                          # the failed step's forward moved them (or not)
        model.buffers[k][...] = twin.buffers[k]     # as a serial failure would; compare from here
    with ShardedStep(model, shards=2) as step:
        assert_same_step(model, twin, step(x, y), serial_step(twin, x, y), 1e-12)


def test_non_finite_input_in_one_shard_is_refused_before_the_exchange():
    model = nograd.Sequential(BatchNorm2d(2, dtype=F64), Flatten(), Linear(8, 2, rng=0, dtype=F64))
    x = np.random.default_rng(9).standard_normal((5, 2, 2, 2))
    x[4, 1, 0, 0] = np.nan                             # in the second shard
    before = {k: v.copy() for k, v in model.buffers.items()}
    with ShardedStep(model, shards=2) as step, pytest.raises(NonFiniteError, match="x contains NaN"):
        step(x, np.zeros(5, int))
    assert all(np.array_equal(model.buffers[k], before[k]) for k in before)   # no update


# ---------------------------------------------------------------------------- left unchanged
def test_evaluation_and_the_serial_path_are_untouched_inside_a_shard_scope():
    """Evaluation inside a shard scope runs the running statistics, bit for bit as outside; the
    jvp refuses training inside one; a synchronised cache's backward outside its group raises."""
    rng = np.random.default_rng(10)
    bn2, bn1 = BatchNorm2d(3, dtype=F32), BatchNorm1d(3, dtype=F32)
    for bn in (bn2, bn1):
        bn.buffers["running_mean"][...] = rng.standard_normal(3)
        bn.buffers["running_var"][...] = rng.uniform(0.5, 2, 3)
    x2, x1 = rng.standard_normal((4, 3, 2, 2)).astype(F32), rng.standard_normal((4, 3)).astype(F32)
    outside = [bn2.forward(x2)[0], bn1.forward(x1)[0]]
    member = ShardGroup(1).members[0]
    with shard_scope(member):
        assert current_shard() is member
        assert np.array_equal(bn2.forward(x2)[0], outside[0]) and np.array_equal(bn1(x1), outside[1])
        with pytest.raises(RuntimeError, match="jvp"):
            bn2.jvp(x2, x2, train=True)
        _, cache = bn1.forward(x1, train=True)              # a group of one: the batch's own
    assert current_shard() is None
    with pytest.raises(RuntimeError, match="outside the shard group"):
        bn1.backward(cache, np.ones_like(x1))


def test_a_model_without_batch_norm_runs_without_a_group(monkeypatch):
    def no_group(*a, **k):
        raise AssertionError("a ShardGroup was made for a model without batch norm")
    monkeypatch.setattr(parallel, "ShardGroup", no_group)
    rng = np.random.default_rng(11)
    model = nograd.Sequential(Linear(5, 7, rng=rng, dtype=F64), ReLU(), Linear(7, 3, rng=rng, dtype=F64))
    x, y = rng.standard_normal((9, 5)), rng.integers(0, 3, 9)
    with ShardedStep(model, shards=3) as step:
        assert not step.synchronised
        assert_same_step(model, model, step(x, y), serial_step(model, x, y), 1e-12)
