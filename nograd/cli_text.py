"""Old import path of the text (language-model) training command, which lives in
:mod:`nograd.cli.text`; ``from nograd.cli_text import cmd_train_text, is_text`` keeps working.

>>> from nograd.cli import text
>>> cmd_train_text is text.cmd_train_text and is_text is text.is_text
True
"""
from .cli.text import cmd_train_text, is_text

__all__ = ["cmd_train_text", "is_text"]
