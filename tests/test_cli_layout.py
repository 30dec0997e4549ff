"""The command line's layout (nograd/cli/): `python -m nograd` hands over to nograd.cli, the old
import path still works, every module stays within the size budget, and the pieces `train` and
`compare` share — the warm-up on a throwaway rule, the peak-memory window — behave as documented."""
import os
import tracemalloc

import pytest

import nograd.__main__ as entry
import nograd.cli as cli
from nograd.cli.rules import PeakMemory
from nograd.rules import Backprop
from nograd.rules import base as rules_base

PACKAGE = os.path.dirname(os.path.abspath(cli.__file__))


def test_main_module_hands_over_to_the_cli_package():
    assert entry.main is cli.main and entry.build_parser is cli.build_parser
    assert entry.UserError is cli.UserError and entry.PROG == cli.PROG == "python -m nograd"
    for name in ("cmd_train", "cmd_compare", "cmd_list", "cmd_demo", "cmd_diabetes", "cmd_grande"):
        assert getattr(entry, name) is getattr(cli, name), name
    with open(entry.__file__) as f:
        assert len(f.read().splitlines()) <= 30


def test_every_cli_module_within_500_lines():
    sizes = {}
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith(".py"):
            with open(os.path.join(PACKAGE, name)) as f:
                sizes[name] = len(f.read().splitlines())
    assert {"__init__.py", "common.py", "rules.py", "tabular.py"} <= set(sizes)
    assert all(n <= 500 for n in sizes.values()), sizes


def test_commands_in_help_order():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == ["compare", "train", "predict", "diabetes", "grande", "list", "demo",
                                 "quantize", "prune"]


def test_warm_up_runs_on_a_throwaway_rule(monkeypatch, capsys):
    """`train` warms up on its own rule instance (one batch), then trains another: the rule that
    trains never sees the warm-up batch."""
    calls = []

    class Probe(Backprop):
        """Backprop that records (instance, batch size) for every grads call."""

        def grads(self, model, x, y, *, rng=None):
            calls.append((id(self), len(x)))
            return super().grads(model, x, y, rng=rng)

    monkeypatch.setattr(rules_base, "_REGISTRY", {"backprop": Backprop})
    rules_base.register("test-probe")(Probe)
    code = cli.main(["train", "--rule", "test-probe", "--epochs", "1", "--batch-size", "512",
                     "--json", "--no-memory"])
    capsys.readouterr()
    assert code == 0
    instances = list(dict.fromkeys(i for i, _ in calls))
    assert len(instances) == 2, calls
    warm = [n for i, n in calls if i == instances[0]]
    trained = [n for i, n in calls if i == instances[1]]
    assert warm == [512]                                  # one batch, before any training step
    assert sum(trained) == 1348 and len(trained) == 3     # digits' 1348 training samples, batch 512


def test_peak_memory_window():
    with PeakMemory(False) as off:
        _ = bytearray(1 << 20)
    assert off.peak is None and not tracemalloc.is_tracing()
    with PeakMemory(True) as on:
        block = bytearray(4 << 20)
        del block
    assert on.peak >= 4 << 20 and not tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        block = bytearray(8 << 20)
        del block                             # the caller's peak is now at least 8 MiB
        with PeakMemory(True) as inner:       # a caller's tracing is reset, not stopped
            pass
        assert tracemalloc.is_tracing() and inner.peak < 8 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("argv, message", [
    (["train", "--rule", "test-picky"], "rule test-picky, model mlp: test-picky needs a model"),
    (["compare", "--rules", "test-picky,backprop"], "rule test-picky cannot train model mlp"),
])
def test_rule_model_mismatch_names_both(monkeypatch, capsys, argv, message):
    class Picky(Backprop):
        """Refuses every model."""

        def check_model(self, model):
            raise ValueError("test-picky needs a model without bias")

    monkeypatch.setattr(rules_base, "_REGISTRY", {"backprop": Backprop})
    rules_base.register("test-picky")(Picky)
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err, err


def test_list_prints_plain_text_not_rest_markup(capsys):
    from nograd.__main__ import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for mark in (":math:", ":meth:", ":class:", "``", "\\"):
        assert mark not in out, f"`list` prints raw markup {mark!r}"
    assert "⊙" in out                       # brSF's B = |R_t| ⊙ sign(W), spelled out


def test_the_optimizer_choices_are_every_registered_optimizer():
    import nograd
    from nograd.cli.common import OPTIMIZERS

    assert set(OPTIMIZERS) == set(nograd.core.optim.OPTIMIZERS)


def test_threads_option_sets_the_blas_threads_of_the_run(capsys):
    from nograd.__main__ import main
    from nograd.rules import Backprop
    from nograd.rules.base import _REGISTRY, register
    from nograd.threads import blas_libraries

    if not blas_libraries():
        pytest.skip("no BLAS library reachable to limit")
    seen = []

    class ThreadProbe(Backprop):
        def grads(self, model, x, y, *, rng=None):
            seen.append({lib["threads"] for lib in blas_libraries()})
            return super().grads(model, x, y, rng=rng)

    register("test-thread-probe")(ThreadProbe)
    try:
        assert main(["compare", "--rules", "test-thread-probe", "--epochs", "1", "--threads", "1",
                     "--no-memory"]) == 0
    finally:
        _REGISTRY.pop("test-thread-probe", None)
    assert seen and all(s == {1} for s in seen)
    assert "BLAS threads: 1 (--threads)" in capsys.readouterr().err


def _probe_run(monkeypatch, argv, env=None):
    """Run ``compare`` with a rule that records the BLAS thread counts it trains under."""
    from nograd.__main__ import main
    from nograd.rules import Backprop
    from nograd.rules.base import _REGISTRY, register
    from nograd.threads import THREAD_ENV, blas_libraries, blas_threads

    if not blas_libraries():
        pytest.skip("no BLAS library reachable to limit")
    for var in THREAD_ENV:
        monkeypatch.delenv(var, raising=False)
    for var, value in (env or {}).items():
        monkeypatch.setenv(var, value)
    seen = []

    class ThreadProbe(Backprop):
        def grads(self, model, x, y, *, rng=None):
            seen.append({lib["threads"] for lib in blas_libraries()})
            return super().grads(model, x, y, rng=rng)

    register("test-thread-probe")(ThreadProbe)
    try:
        with blas_threads(2):              # the process starts with two threads, as OpenBLAS would
            assert main(["compare", "--rules", "test-thread-probe", "--epochs", "1", "--no-memory"]
                        + argv) == 0
            after = {lib["threads"] for lib in blas_libraries()}
    finally:
        _REGISTRY.pop("test-thread-probe", None)
    return seen, after


def test_default_threads_are_one_for_a_small_model_and_restored_after(monkeypatch, capsys):
    seen, after = _probe_run(monkeypatch, [])
    assert seen and all(s == {1} for s in seen)
    assert after == {2}                                # the run's choice does not leak out of main
    err = capsys.readouterr().err
    assert "BLAS threads: 1 (auto: 1 thread for a small step" in err


def test_default_threads_use_every_core_for_a_large_step(monkeypatch, capsys):
    from nograd import threads

    if threads.usable_cores() < 2:
        pytest.skip("one core: nothing to choose")
    monkeypatch.setattr(threads, "LARGE_STEP_FLOPS", 1.0)      # every step counts as large
    seen, _ = _probe_run(monkeypatch, [])
    # seen[0] is the untimed warm-up batch, run before the model (and so the choice) exists
    assert len(seen) > 1 and all(s == {threads.usable_cores()} for s in seen[1:])
    assert f"auto: {threads.usable_cores()} threads for a large step" in capsys.readouterr().err


def test_threads_from_the_environment_are_left_alone(monkeypatch, capsys):
    seen, _ = _probe_run(monkeypatch, [], env={"OPENBLAS_NUM_THREADS": "2"})
    assert seen and all(s == {2} for s in seen)
    assert "from the environment (OPENBLAS_NUM_THREADS=2)" in capsys.readouterr().err


def test_step_flops_of_a_gpt_counts_six_per_parameter_and_token():
    from nograd.cli.common import step_flops
    from nograd.models import get_model

    model = get_model("gpt", (16,), 65, rng=0, n_layer=1, n_head=2, n_embd=16)
    assert step_flops(model, (16,), 3) == 6 * model.num_params * 3 * 16
