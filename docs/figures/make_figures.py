"""Regenerate every figure the documentation pages use, each by the exact command its page gives.

    python docs/figures/make_figures.py                  # all (18 min on a busy 2-core VM; GRANDE half)
    python docs/figures/make_figures.py --only invconv,grande
    python docs/figures/make_figures.py --list           # the commands, nothing run

Run from anywhere (the commands run at the repository's root); needs matplotlib (``pip install
'nograd[plot]'``) and, for the ``grande`` figure, scikit-learn and the OpenML tables in
``../shared/data``. Each page has its own folder ``docs/figures/<page-slug>/``, written by the
script's ``--plot DIR`` option. BLAS is held to one thread (``OPENBLAS_NUM_THREADS=1`` and friends,
unless already set): the models are small, and on a shared machine spinning BLAS threads make the
timings noisy. At the end a table gives, per figure, its size and how long its command took, and
every PNG is checked to be under 150 kB. Exit status 1 if a command fails or a figure is missing.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_BYTES = 150_000

#: (page slug, command after ``python``, PNG files the command writes into docs/figures/<slug>/)
FIGURES = [
    ("command-line",
     "-m nograd compare --rules backprop,fa,dfa,pepita,ff,mono-forward,foton --seed 0 --no-memory "
     "--plot docs/figures/command-line",
     ["learning_curves.png"]),
    ("feedback-alignment",
     "examples/feedback_alignment.py --plot docs/figures/feedback-alignment",
     ["alignment_angles.png"]),
    ("forward-only",
     "examples/ff_representations.py --plot docs/figures/forward-only",
     ["hoyer_sparsity.png", "class_means.png"]),
    ("invconv",
     "bench/invconv.py --plot docs/figures/invconv",
     ["scaling.png"]),
    ("inverse-flow",
     "examples/inverse_flow.py --plot docs/figures/inverse-flow",
     ["samples.png"]),
    ("grande",
     "bench/grande_tabular.py --plot docs/figures/grande",
     ["f1_per_dataset.png"]),
    ("forward-gradients",
     "-m nograd compare --rules backprop,forward-gradient,forward-gradient-local,mezo,spsa --seed 0 "
     "--no-memory --plot docs/figures/forward-gradients",
     ["learning_curves.png"]),
    ("diabetesnet",
     "-m nograd compare --model diabetesnet --data csv:../shared/data/pima_diabetes/pima-indians-diabetes.csv "
     "--rules backprop,mezo,spsa --seed 0 --no-memory --plot docs/figures/diabetesnet",
     ["learning_curves.png"]),
    ("poset-pooling",
     "examples/poset_pooling.py --plot docs/figures/poset-pooling",
     ["accuracy.png"]),
    ("hypernetworks",
     "examples/hypernet_cnn.py --plot docs/figures/hypernetworks",
     ["learning_curves.png"]),
    ("causal",
     "examples/causal_rnn.py --plot docs/figures/causal",
     ["echo_training.png"]),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None,
                    help="comma-separated page slugs (default: all): " + ", ".join(s for s, _, _ in FIGURES))
    ap.add_argument("--list", action="store_true", help="print the commands and stop")
    args = ap.parse_args(argv)
    slugs = [s for s, _, _ in FIGURES]
    wanted = slugs if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in wanted if s not in slugs]
    if bad or not wanted:
        ap.error(f"--only: unknown {bad}; choose from {', '.join(slugs)}")
    jobs = [f for f in FIGURES if f[0] in wanted]
    if args.list:
        for slug, cmd, files in jobs:
            print(f"{slug:<20} python {cmd}   -> {', '.join(files)}")
        return 0

    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    print("threads: " + ", ".join(f"{v}={env[v]}" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                            "MKL_NUM_THREADS"))
          + f"; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows, failed = [], []
    for slug, cmd, files in jobs:
        print(f"\n== {slug}: python {cmd}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *shlex.split(cmd)], cwd=ROOT, env=env)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            failed.append(f"{slug}: exit status {done.returncode}")
        for name in files:
            path = os.path.join(ROOT, "docs", "figures", slug, name)
            size = os.path.getsize(path) if os.path.isfile(path) else None
            if size is None:
                failed.append(f"{slug}/{name}: not written")
            elif size >= MAX_BYTES:
                failed.append(f"{slug}/{name}: {size / 1e3:.0f} kB, over {MAX_BYTES / 1e3:.0f} kB")
            rows.append((f"{slug}/{name}", size, seconds, cmd))
    print(f"\n{'figure':<40}{'kB':>6}{'seconds':>9}  command (python ..., at the repository root)")
    for name, size, seconds, cmd in rows:
        kb = "-" if size is None else f"{size / 1e3:.0f}"
        print(f"{name:<40}{kb:>6}{seconds:>9.0f}  python {cmd}")
    for f in failed:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
