"""Seed-only ZO data parallelism on Ray: bit-identical replicas, equality with the single-process
rule on the union of the shards, traffic independent of the model size, death and resume."""
import time

import numpy as np
import pytest

pytest.importorskip("ray")

import nograd as ng  # noqa: E402
from nograd.distributed import (WorkerDiedError, load_history, params_hash, replay,  # noqa: E402
                                zo_data_parallel)
from nograd.distributed.zo import union_batch  # noqa: E402
from nograd.rules import SPSA, MeZO  # noqa: E402

LR, SEED, BATCH = 0.05, 3, 12


def model_fn(hidden=16):
    return ng.models.mlp((6,), 3, rng=np.random.default_rng(1), hidden=(hidden,),
                         activation="tanh", dtype=np.float64)


def big_model_fn():
    return model_fn(512)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)


def kill_and_wait(ray, actor):
    """Kill ``actor`` and return once it is gone (``ray.kill`` is asynchronous)."""
    ray.kill(actor)
    for _ in range(200):
        try:
            ray.get(actor.hash.remote(), timeout=30)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the actor did not die")


def run(data, steps=8, **kw):
    kw = {"workers": 2, "batch_size": BATCH, "lr": LR, "seed": SEED, **kw}
    return zo_data_parallel(kw.pop("model_fn", model_fn), kw.pop("rule", "mezo"), data,
                            steps=steps, **kw)


def test_replicas_stay_bit_identical(ray_cluster, data):
    res = run(data, steps=10)
    start = params_hash(model_fn().params)
    assert len(res.replica_hashes) == 2
    assert res.replica_hashes[0] == res.replica_hashes[1] == params_hash(res.model.params)
    assert res.replica_hashes[0] != start                     # the weights did move
    assert len(res.history["seeds"]) == 10 and res.restarts == 0


@pytest.mark.parametrize("rule", ["mezo", "spsa"])
def test_equals_single_process_run_on_the_union(ray_cluster, data, rule):
    steps = 8
    res = run(data, steps=steps, rule=rule)
    ref = model_fn()
    seeds = np.random.default_rng(SEED)
    mezo, spsa = MeZO(), SPSA()
    losses = []
    for t in range(steps):
        x, y = union_batch(data, t, workers=2, batch_size=BATCH, data_seed=SEED)
        if rule == "mezo":                          # Algorithm 1, seeds from the same stream
            losses.append(mezo.step(ref, x, y, lr=LR, rng=seeds)["loss"])
        else:                                       # Spall's estimate, then plain SGD
            s = int(seeds.integers(0, 2 ** 63 - 1))
            g, info = spsa.grads(ref, x, y, rng=np.random.default_rng(s))
            for k, v in g.items():
                ref.params[k] -= LR * v
            losses.append(info["loss"])
    for k in ref.params:
        np.testing.assert_allclose(res.model.params[k], ref.params[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.losses, losses, rtol=1e-12)
    assert not np.allclose(ref.params["0.weight"], model_fn().params["0.weight"])


def test_traffic_does_not_grow_with_the_model(ray_cluster, data):
    small, big = run(data, steps=4), run(data, steps=4, model_fn=big_model_fn)
    n_small = sum(p.size for p in model_fn().params.values())
    n_big = sum(p.size for p in big_model_fn().params.values())
    assert n_big > 30 * n_small
    for a, b in [(small.bytes_sent_per_step, big.bytes_sent_per_step),
                 (small.bytes_received_per_step, big.bytes_received_per_step)]:
        assert 0 < b < 1.1 * a and b < 400          # a few scalars per worker, either way


@pytest.fixture(scope="module")
def whole(ray_cluster, data):
    """A run of 9 steps that nothing interrupts."""
    return run(data, steps=9)


def test_worker_death_is_reported_and_the_run_resumes(ray_cluster, data, whole, tmp_path):
    ray = ray_cluster
    steps, path = 9, str(tmp_path / "zo.npz")

    def kill(step, state):
        if step == 4:
            kill_and_wait(ray, state.workers[1])

    with pytest.raises(WorkerDiedError, match=r"worker 1 died during step 4.*resume=") as err:
        run(data, steps=steps, checkpoint=path, callback=kill)
    assert err.value.worker == 1 and err.value.completed == 4
    hist = load_history(path)
    assert len(hist["seeds"]) == 4 and hist["seeds"] == whole.history["seeds"][:4]
    # the initial weights and the seed history are the whole state: replay, then continue
    assert params_hash(replay(model_fn(), hist).params) != params_hash(model_fn().params)
    resumed = run(data, steps=steps, resume=path)
    assert resumed.replica_hashes == whole.replica_hashes


def test_in_process_restart_after_a_death(ray_cluster, data, whole):
    ray, killed = ray_cluster, []

    def kill(step, state):
        if step == 3 and not killed:
            killed.append(step)
            kill_and_wait(ray, state.workers[0])

    res = run(data, steps=9, restarts=1, callback=kill)
    assert killed and res.restarts == 1
    assert res.replica_hashes == whole.replica_hashes


def test_bad_arguments_are_named(ray_cluster, data):
    with pytest.raises(ValueError, match="rule must be 'mezo' or 'spsa'"):
        run(data, rule="adam")
    with pytest.raises(ValueError, match="batch_size=100"):
        run(data, batch_size=100)
    with pytest.raises(TypeError, match="data must be a pair"):
        zo_data_parallel(model_fn, "mezo", data[0])

    def fresh():                                   # new random weights at every call
        return ng.models.mlp((6,), 3, rng=np.random.default_rng(), hidden=(4,))

    with pytest.raises(ValueError, match="same weights"):
        run(data, model_fn=fresh, steps=1)
