"""Command line: ``python -m nograd <command>`` (``compare``, ``train``, ``list``, ``demo``,
``diabetes``, ``grande``; ``--help`` on each).

The commands live in :mod:`nograd.cli`: the parser and the exit statuses in ``cli/__init__.py``,
shared options in ``cli/common.py``, the rule commands (compare, train, list, demo) in
``cli/rules.py``, the tabular ones (diabetes, grande) in ``cli/tabular.py``; text training is in
``nograd/cli_text.py``. The names below stay importable from here for older code.
"""
import sys

from .cli import PROG, UserError, build_parser, main  # noqa: F401
from .cli.rules import cmd_compare, cmd_demo, cmd_list, cmd_train  # noqa: F401
from .cli.tabular import cmd_diabetes, cmd_grande  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
