"""Command-line wording stays in cli/: the library's hints name settings, never flags, because a worker and
the web console show them too; the command line adds its own options by the error's ``topic``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mailconnector.cli._advice import EVERY_COMMAND, advised, advising
from mailconnector.errors import ConfigError, MessageError
from mailconnector.records.send import ErrorInfo

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "mailconnector"
# The command line and the sandbox (a command-line tool of its own) may speak of flags; nothing else may.
CLI_PARTS = {"cli", "sandbox.py", "_sandbox_config.py", "__main__.py"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")


def _hint_texts(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "hint":
            found += [(n.lineno, n.value) for n in ast.walk(node.value)
                      if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and "HINT" in t.id for t in node.targets):
            found += [(n.lineno, n.value) for n in ast.walk(node.value)
                      if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return found


def test_the_librarys_hints_name_no_command_line_flag() -> None:
    offending = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] in CLI_PARTS:
            continue
        for line, text in _hint_texts(ast.parse(path.read_text(encoding="utf-8"))):
            if FLAG.search(text):
                offending.append(f"{path.relative_to(PACKAGE)}:{line}: {text!r}")
    assert not offending, "hints that name a flag (give the error a topic; cli/ adds its options):\n" + \
        "\n".join(offending)


def test_the_scan_sees_a_flag_in_a_hint() -> None:
    tree = ast.parse('raise ConfigError("x", hint=f"use {a} --wait")\n_UNCERTAIN_HINT = ("see --sent")')
    assert sorted(f for _, t in _hint_texts(tree) for f in FLAG.findall(t)) == ["--sent", "--wait"]


def test_a_command_adds_its_advice_to_an_error_of_that_topic() -> None:
    advice = {"folder-missing": "or run again with --create-missing"}
    assert advised("create it", "folder-missing", advice) == "create it; or run again with --create-missing"
    assert advised(None, "folder-missing", advice) == "or run again with --create-missing"
    assert advised("create it", "other", advice) == "create it"  # another topic: the library's words alone
    assert advised("create it", None, advice) == "create it"
    once = advised("create it", "folder-missing", advice)
    assert advised(once, "folder-missing", advice) == once  # not twice when it passes two layers
    assert advised("make one", "project-file-missing", {}) == f"make one; {EVERY_COMMAND['project-file-missing']}"


def test_advising_extends_the_hint_of_the_error_that_leaves_the_block() -> None:
    error = ConfigError("folder 'X' does not exist", hint="create it", topic="folder-missing")
    try:
        with advising({"folder-missing": "--create-missing helps"}):
            raise error
    except ConfigError as caught:
        assert caught is error and caught.hint == "create it; --create-missing helps"
    else:  # pragma: no cover
        raise AssertionError("the error was swallowed")


def test_the_topic_reaches_response_records_and_to_dict() -> None:
    error = MessageError("outside the allowed directories", field="attachments[0].path", topic="path-not-allowed")
    info = ErrorInfo.from_exception(error)
    assert (info.topic, info.field) == ("path-not-allowed", "attachments[0].path")
    assert error.to_dict()["topic"] == "path-not-allowed" and error.reason == "outside the allowed directories"
    assert "topic" not in ConfigError("x").to_dict()
