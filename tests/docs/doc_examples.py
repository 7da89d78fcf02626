"""The fenced code blocks of README.md and docs/*.md, with the markers that say how each one is tested.

Markers are HTML comments on the line right before a block (invisible on a rendered page, plain in the source):

- ``<!-- not-run: REASON -->``: the block is not run (it needs Microsoft 365, runs until stopped, ...); it is
  still parsed (Python compiled, YAML loaded) and reported as skipped with its reason;
- ``<!-- example: file PATH -->``: the block is the content of the file PATH, which a reader of the page
  would create; it is written into the page's directory before the page's examples run;
- ``<!-- example: add to mailconnector.yaml -->``: the block's sections are added (merged) to the page's
  project file, the one ``mailconnector sandbox`` writes.

The rest of the rules (which languages run, how) are in ``test_examples.py`` and docs/testing.md.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

__all__ = [
    "ROOT",
    "SHELL",
    "Block",
    "DocError",
    "blocks_of",
    "doc_files",
    "shell_commands",
]

ROOT = Path(__file__).resolve().parents[2]
SHELL = frozenset({"sh", "bash", "shell", "console"})
PYTHON = frozenset({"python", "py"})
YAML = frozenset({"yaml", "yml"})

_MARKER = re.compile(r"\A<!--\s*(not-run|example)\s*:\s*(.*?)\s*-->\s*\Z", re.DOTALL)
_FILE = re.compile(r"\Afile\s+(\S+)\Z")
_ADD_TO_PROJECT = "add to mailconnector.yaml"


class DocError(ValueError):
    """A marker or block the test cannot understand: an error in the doc, reported with its place."""


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its text and its marker."""

    doc: str          # path relative to the repository, e.g. "docs/state.md"
    line: int         # 1-based line of the opening fence
    lang: str         # the info string's first word, lower-cased ("" when none)
    text: str
    not_run: str | None = None   # the reason, for <!-- not-run: ... -->
    file: str | None = None      # the path, for <!-- example: file PATH -->
    add_to_project: bool = False

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def marked(self) -> bool:
        return self.not_run is not None or self.file is not None or self.add_to_project


def doc_files() -> list[Path]:
    """README.md and every page of docs/, in a stable order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    """Every fenced block of one page (also those inside list items), with the marker just before it."""
    doc = path.relative_to(ROOT).as_posix()
    tokens = MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8"))
    out: list[Block] = []
    for i, tok in enumerate(tokens):
        if tok.type != "fence" or tok.map is None:
            continue
        lang = tok.info.split()[0].lower() if tok.info.strip() else ""
        line = tok.map[0] + 1
        not_run: str | None = None
        file: str | None = None
        add = False
        prev = tokens[i - 1] if i else None
        # The marker must sit on the line right above the fence, so that it cannot drift to another block.
        if prev is not None and prev.type == "html_block" and prev.map is not None and prev.map[1] == tok.map[0]:
            found = _MARKER.match(prev.content.strip())
            if found is None and prev.content.strip().startswith("<!--"):
                # A comment right above a block is meant for this test: a misspelt one must not go unnoticed.
                raise DocError(f"{doc}:{line}: a marker this test does not know: {prev.content.strip()!r} "
                               "(expected <!-- not-run: REASON --> or <!-- example: ... -->)")
            if found is not None:
                kind, arg = found.groups()
                if kind == "not-run":
                    if not arg:
                        raise DocError(f"{doc}:{line}: <!-- not-run: --> needs a reason")
                    not_run = arg
                elif (m := _FILE.match(arg)) is not None:
                    file = m.group(1)
                elif arg == _ADD_TO_PROJECT:
                    add = True
                else:
                    raise DocError(f"{doc}:{line}: unknown example marker {arg!r} (expected 'file PATH' or "
                                   f"{_ADD_TO_PROJECT!r})")
        out.append(Block(doc, line, lang, tok.content, not_run, file, add))
    return out


def shell_commands(block: Block) -> list[tuple[int, list[str]]]:
    """The commands of a shell block with the doc line of each: every line that is not blank or a comment
    (in a ``console`` block: every line that starts with ``$ ``; the others are output)."""
    commands: list[tuple[int, list[str]]] = []
    for offset, raw in enumerate(block.text.splitlines()):
        line = raw.strip()
        if block.lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise DocError(f"{block.doc}:{block.line + 1 + offset}: cannot split {line!r}: {exc}") from None
        commands.append((block.line + 1 + offset, words))
    return commands
