"""Griffe extension: render the code base's reStructuredText-flavoured docstrings as Markdown.

The docstrings are prose with Sphinx roles, doctests and ``::`` literal blocks, read by
``help()`` and tested by the suite; the API pages (mkdocstrings) render Markdown. Before a
docstring is parsed this extension rewrites, outside code:

- a role (``:class:`~pkg.mod.Name```, ``:func:`name```, ``:mod:`pkg```, ...) as a link to the
  object's API entry when the site documents it, else as inline code (an optional reference:
  never a warning in strict mode);
- a doctest (``>>>`` lines and their output) as a fenced ``pycon`` block;
- a ``::`` literal block as a fenced block (Python, YAML or text).

The source files are not touched.
"""

from __future__ import annotations

import ast
import html
import re

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const|type):`(?P<body>[^`]+)`")
TITLED = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$")
PACKAGES = ("nas", "latency_models", "search_spaces")
YAML_LINE = re.compile(r"^\s*(#.*|- .*|[\w.\-]+:(\s.*)?)$")


def _qualify(name: str, obj: Object) -> str:
    """A role's target as a full path, where the documented object's scope says what it is."""
    if name.startswith("."):
        return f"{obj.module.path}{name}"
    head = name.split(".")[0]
    if head in PACKAGES:
        return name
    scopes = [o for o in (obj, obj.parent, obj.module) if o is not None and o.is_kind({"class", "module"})]
    for scope in scopes:
        member = scope.members.get(head)
        if member is None:
            continue
        base = member.target_path if member.is_alias else member.path
        return base + name[len(head):]
    return name


def _role(match: re.Match, obj: Object) -> str:
    body = match["body"].strip()
    titled = TITLED.match(body)
    if titled:
        title, target = titled["title"], titled["target"]
    else:
        target = body.lstrip("~")
        title = target.rsplit(".", 1)[-1] if body.startswith("~") else target
    ident = _qualify(target.lstrip("~"), obj)
    return f'<autoref identifier="{html.escape(ident)}" optional><code>{html.escape(title)}</code></autoref>'


def _language(lines: list[str]) -> str:
    text = "\n".join(lines)
    if all(YAML_LINE.match(line) for line in lines if line.strip()) and any(":" in line for line in lines):
        return "yaml"
    try:
        ast.parse(text)
    except SyntaxError:
        return "text"
    return "python"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _fence(out: list[str], block: list[str], indent: str, language: str) -> None:
    if out and out[-1].strip():
        out.append("")
    out.append(f"{indent}```{language}")
    out.extend(f"{indent}{line}" if line.strip() else "" for line in block)
    out.append(f"{indent}```")


def convert(text: str, obj: Object) -> str:
    lines = ROLE.sub(lambda m: _role(m, obj), text).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(">>>"):  # a doctest runs to the next blank line
            pad = line[:_indent(line)]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(pad):] if lines[i].startswith(pad) else lines[i].strip())
                i += 1
            _fence(out, block, pad, "pycon")
            continue
        if stripped.endswith("::") and not stripped.endswith(":::"):
            # an RST literal block: the indented lines after it
            lead = stripped[:-2].rstrip()
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > _indent(line):
                if lead:
                    out.append(line[:_indent(line)] + lead + ":")
                k, block = j, []
                while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) > _indent(line)):
                    block.append(lines[k])
                    k += 1
                while block and not block[-1].strip():
                    block.pop()
                cut = min(_indent(b) for b in block if b.strip())
                block = [b[cut:] for b in block]
                _fence(out, block, line[:_indent(line)], _language(block))
                out.append("")
                i = k
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class SphinxProse(Extension):
    """Rewrite every docstring once the object tree is complete (scopes resolve)."""

    def on_object(self, *, obj: Object, **kwargs) -> None:
        if obj.docstring is not None and not obj.is_alias:
            obj.docstring.value = convert(obj.docstring.value, obj)

    def on_package(self, *, pkg: Object, **kwargs) -> None:
        # (griffe fires on_object for a package's members, not for the package itself)
        self.on_object(obj=pkg)
