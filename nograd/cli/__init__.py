"""The command line, ``python -m nograd <command>``: the parser and the dispatch.

One module per family of commands:

* :mod:`nograd.cli.common` — program name, :class:`UserError`, the one-line-error parser, argument
  types, the options ``train`` and ``compare`` share, the exit on divergence;
* :mod:`nograd.cli.rules` — ``compare``, ``train``, ``list``, ``demo`` (learning rules on registered
  models; text data goes on to :mod:`nograd.cli_text`);
* :mod:`nograd.cli.tabular` — ``diabetes`` and ``grande`` (CSV tables);
* :mod:`nograd.cli.predict` — ``predict`` (a model file of ``train --save`` on a dataset).

Exit statuses: 0 when the command ran; 2 for any argument error (a bad option, an unknown
rule/model/dataset, a missing or malformed file), reported as one line on stderr with no
traceback; 1 when training diverged (NaN/inf), also one line.
"""
from __future__ import annotations

import sys

from . import predict, rules, tabular
from .common import PROG, Parser, UserError
from .rules import cmd_compare, cmd_demo, cmd_list, cmd_train
from .tabular import cmd_diabetes, cmd_grande
from .prune import add_prune
from .quantize import add_quantize

# the sub-parsers in the order ``--help`` lists them
COMMANDS = (rules.add_compare, rules.add_train, predict.add_predict, tabular.add_diabetes,
            tabular.add_grande, rules.add_list, rules.add_demo, add_quantize,
            add_prune)


def build_parser():
    """The ``argparse`` parser of ``python -m nograd``: one sub-parser per command, each setting
    ``func`` to the function that runs it."""
    p = Parser(prog=PROG, description="nograd: learning without autodiff",
               epilog="Argument errors: one line on stderr, exit status 2.")
    sub = p.add_subparsers(dest="command", metavar="command", parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    return p


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit status: 0 when
    it ran, 2 after a :class:`UserError` (printed as ``PROG command: error: ...``) or with no
    command (the help is printed). argparse's own errors and a divergence leave through
    ``SystemExit`` with 2 and 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        from .common import threads_context

        context, described = threads_context(args)
        with context:
            args.func(args)
        if not getattr(args, "json", False) and args.command in ("train", "compare", "diabetes", "grande"):
            print(described[0], file=sys.stderr)       # after the run: an error stays one line
    except UserError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = ["PROG", "UserError", "build_parser", "cmd_compare", "cmd_demo", "cmd_diabetes",
           "cmd_grande", "cmd_list", "cmd_train", "main"]
