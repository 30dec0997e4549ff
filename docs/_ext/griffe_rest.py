"""A griffe extension for the API reference: nograd's docstrings are written in a reST-ish style
(``:math:`...``` roles, ``.. math::`` blocks, ``::`` literal blocks and doctests), which
mkdocstrings would otherwise read as Markdown, where a doctest's output such as ``['0', '1']``
parses as a reference link. Each docstring is rewritten once, before rendering:

- a doctest (``>>>`` lines, ``...`` continuations and the output up to a blank line) is fenced as
  Python code;
- a ``.. math::`` directive or a paragraph ending in ``::`` fences the indented block after it;
- a role ``:name:`text``` becomes the code span ``text`` (``~a.b.C`` shows ``C``).

The source files are not touched; this only changes what the documentation site shows.
"""
from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":[a-zA-Z]+:`(~?)([^`]+)`")


def _role(m: re.Match) -> str:
    text = m.group(2)
    if m.group(1):
        text = text.rsplit(".", 1)[-1]
    return f"`{text}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rest_to_markdown(text: str) -> str:
    """Rewrite one docstring (see the module docstring); plain Markdown passes through unchanged."""
    lines = _ROLE.sub(_role, text).split("\n")      # roles first: one may span a line break
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        pad = " " * _indent(line)
        if stripped.startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(pad):] if lines[i].startswith(pad) else lines[i].strip())
                i += 1
            out += [pad + "```python", *[pad + b for b in block], pad + "```"]
            continue
        literal = stripped.startswith(".. math::") or (stripped.endswith("::") and not
                                                       stripped.startswith(".."))
        if literal:
            head = stripped[len(".. math::"):].strip() if stripped.startswith(".. math::") else None
            if head is None:
                out.append(line[:-1])      # "text::" -> "text:"
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            body = []
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > _indent(line)):
                body.append(lines[j])
                j += 1
            while body and not body[-1].strip():
                body.pop()
            if head:
                body.insert(0, pad + "    " + head)
            if body:
                cut = min(_indent(b) for b in body if b.strip())
                out += ["", pad + "```text", *[pad + b[cut:] for b in body], pad + "```", ""]
                i = j
                continue
            if head is not None:          # an empty math directive: keep the line as text
                out.append(line)
            i += 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RestToMarkdown(griffe.Extension):
    """Apply :func:`rest_to_markdown` to every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rest_to_markdown(obj.docstring.value)
