"""Regenerate every figure the documentation pages use, each by the exact command its page gives.

    python docs/figures/make_figures.py                  # all (about 50 min on a busy 2-core VM)
    python docs/figures/make_figures.py --max-minutes 2  # only those whose command takes ≤ 2 min
    python docs/figures/make_figures.py --only invconv,grande
    python docs/figures/make_figures.py --list           # the commands and their usual time, nothing run

Run from anywhere (the commands run at the repository's root); needs matplotlib (``pip install
'nograd[plot]'``) and, for the ``grande`` figure, scikit-learn and the OpenML tables in
``../shared/data``. Each page has its own folder ``docs/figures/<page-slug>/``, written by the
script's ``--plot DIR`` option; a page with several commands (``comq``, ``vcas``, ``alignprop``)
has a row per command, and ``--only SLUG`` runs all of them. The AlignProp pretraining figure
retrains the diffusion model into a scratch folder (``{scratch}`` below, removed at the end), so the
shipped weights in ``nograd/diffusion/weights/``, which the other AlignProp figures load, are never
overwritten. BLAS is held to one thread (``OPENBLAS_NUM_THREADS=1`` and friends, unless already
set): the models are small, and on a shared machine spinning BLAS threads make the timings noisy
(the command line picks one thread for these models by itself). ``--max-minutes M`` skips the
commands whose usual time (the minutes column of ``--list``, measured on a busy 2-core VM) is over
M. At the end a table gives, per figure, its size and how long its command took, and every PNG is
checked to be under 150 kB. Exit status 1 if a command fails or a figure is missing.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_BYTES = 150_000

#: (page slug, command after ``python``, PNG files the command writes into docs/figures/<slug>/,
#: usual minutes on a busy 2-core VM); ``{scratch}`` is a temporary folder removed at the end
FIGURES = [
    ("command-line",
     "-m nograd compare --rules backprop,fa,dfa,pepita,ff,mono-forward,foton --seed 0 --no-memory "
     "--plot docs/figures/command-line",
     ["learning_curves.png"], 1),
    ("feedback-alignment",
     "examples/feedback_alignment.py --plot docs/figures/feedback-alignment",
     ["alignment_angles.png"], 0.5),
    ("forward-only",
     "examples/ff_representations.py --plot docs/figures/forward-only",
     ["hoyer_sparsity.png", "class_means.png"], 0.3),
    ("invconv",
     "bench/invconv.py --plot docs/figures/invconv",
     ["scaling.png"], 1),
    ("inverse-flow",
     "examples/inverse_flow.py --plot docs/figures/inverse-flow",
     ["samples.png"], 1.5),
    ("grande",
     "bench/grande_tabular.py --plot docs/figures/grande",
     ["f1_per_dataset.png"], 9),
    ("forward-gradients",
     "-m nograd compare --rules backprop,forward-gradient,forward-gradient-local,mezo,spsa --seed 0 "
     "--no-memory --plot docs/figures/forward-gradients",
     ["learning_curves.png"], 1.5),
    ("diabetesnet",
     "-m nograd compare --model diabetesnet --data csv:../shared/data/pima_diabetes/pima-indians-diabetes.csv "
     "--rules backprop,mezo,spsa --seed 0 --no-memory --plot docs/figures/diabetesnet",
     ["learning_curves.png"], 0.5),
    ("poset-pooling",
     "examples/poset_pooling.py --plot docs/figures/poset-pooling",
     ["accuracy.png"], 1.5),
    ("hypernetworks",
     "examples/hypernet_cnn.py --plot docs/figures/hypernetworks",
     ["learning_curves.png"], 0.5),
    ("causal",
     "examples/causal_rnn.py --plot docs/figures/causal",
     ["echo_training.png"], 0.1),
    ("comq",
     "bench/quantize.py --model cnn --threads 1 --repeats 1 --plot docs/figures/comq",
     ["accuracy_cnn.png"], 0.5),
    ("comq",
     "bench/quantize.py --model vit --threads 1 --repeats 1 --plot docs/figures/comq",
     ["accuracy_vit.png"], 1.5),
    ("vcas",
     "bench/vcas.py --model mlp --json --plot docs/figures/vcas",
     ["mlp.png"], 0.2),
    ("vcas",
     "bench/vcas.py --model vit --json --plot docs/figures/vcas",
     ["vit.png"], 4),
    ("vcas",
     "bench/vcas.py --model gpt --json --plot docs/figures/vcas",
     ["gpt.png"], 5),
    ("pipelined",
     "examples/pipelined_backprop.py --json --plot docs/figures/pipelined",
     ["accuracy_vs_stages.png"], 5),
    ("alignprop",
     "examples/alignprop.py --json --plot docs/figures/alignprop",
     ["base.png", "alignprop.png", "pg.png"], 4),
    ("alignprop",
     "examples/diffusion_digits.py --out {scratch}/digits.npz --plot docs/figures/alignprop",
     ["samples.png"], 8),
    ("dsf",
     "examples/dsf_charlm.py --plot docs/figures/dsf",
     ["loss_curves.png"], 4),
    ("mini-llm",
     "examples/prune_gpt.py --plot docs/figures/mini-llm",
     ["val_loss.png"], 8),
    ("transformers",
     "-m nograd train --model gpt --data shakespeare --iters 2000 "
     "--plot docs/figures/transformers/loss_curve.png",
     ["loss_curve.png"], 3.5),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    slugs = list(dict.fromkeys(f[0] for f in FIGURES))
    ap.add_argument("--only", default=None,
                    help="comma-separated page slugs (default: all): " + ", ".join(slugs))
    ap.add_argument("--max-minutes", type=float, default=None, metavar="M",
                    help="skip the commands whose usual time (see --list) is over M minutes")
    ap.add_argument("--list", action="store_true", help="print the commands and stop")
    args = ap.parse_args(argv)
    wanted = slugs if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in wanted if s not in slugs]
    if bad or not wanted:
        ap.error(f"--only: unknown {bad}; choose from {', '.join(slugs)}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        ap.error(f"--max-minutes: must be > 0, got {args.max_minutes}")
    jobs = [f for f in FIGURES if f[0] in wanted]
    skipped = [] if args.max_minutes is None else [f for f in jobs if f[3] > args.max_minutes]
    jobs = [f for f in jobs if f not in skipped]
    if args.list:
        print(f"{'page':<20}{'min':>5}  command (python ..., at the repository root) -> figures")
        for slug, cmd, files, minutes in jobs:
            print(f"{slug:<20}{minutes:>5g}  python {cmd}   -> {', '.join(files)}")
        for slug, cmd, _, minutes in skipped:
            print(f"skipped (usual {minutes:g} min > --max-minutes): python {cmd}")
        return 0

    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    print("threads: " + ", ".join(f"{v}={env[v]}" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                            "MKL_NUM_THREADS"))
          + f"; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}", flush=True)
    for slug, cmd, _, minutes in skipped:
        print(f"skipping {slug} (usual {minutes:g} min > --max-minutes): python {cmd}", flush=True)
    rows, failed = [], []
    with tempfile.TemporaryDirectory(prefix="nograd-figures-") as scratch:
        for slug, cmd, files, _ in jobs:
            cmd = cmd.replace("{scratch}", scratch)
            print(f"\n== {slug}: python {cmd}", flush=True)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, *shlex.split(cmd)], cwd=ROOT, env=env)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                failed.append(f"{slug}: exit status {done.returncode} from python {cmd}")
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
