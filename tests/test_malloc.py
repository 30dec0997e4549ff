"""nograd.malloc: after retain_freed_memory, a loop that allocates and frees the same large arrays
stops faulting pages in (glibc; measured in a fresh interpreter, before and after)."""
import os
import subprocess
import sys
import textwrap

import pytest

import nograd.malloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import nograd.malloc
    if sys.argv[1] == "retain":
        assert nograd.malloc.retain_freed_memory()
    def cycle():                     # four 1.6 MB arrays written and freed, like a training step
        arrays = [np.empty(400_000, np.float32) for _ in range(4)]
        for a in arrays:
            a.fill(1.0)
    for _ in range(3):
        cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        cycle()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode):
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], env=env, capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(nograd.malloc._mallopt() is None or not sys.platform.startswith("linux"),
                    reason="glibc mallopt not available")
def test_retained_memory_stops_the_page_faults_of_a_repeated_allocation_pattern():
    default, retained = _faults("default"), _faults("retain")
    # 20 cycles × 4 arrays × ~390 pages would all fault with the default thresholds
    assert default > 20 * 4 * 390 // 2
    assert retained < default // 20


def test_train_lm_can_leave_malloc_alone(monkeypatch):
    import numpy as np

    from nograd.data.text import TextData
    from nograd.models.gpt import GPT
    from nograd.train_lm import train_lm

    calls = []
    monkeypatch.setattr(nograd.malloc, "retain_freed_memory", lambda: calls.append(1) or True)
    data = TextData("abcdefgh" * 40)
    for flag in (False, True):
        model = GPT(data.vocab.size, n_layer=1, n_head=1, n_embd=8, block_size=8, rng=0)
        train_lm(model, data, iters=1, batch_size=2, eval_interval=1, eval_iters=1, rng=np.random.default_rng(0),
                 retain_memory=flag)
    assert calls == [1]
