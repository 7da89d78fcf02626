"""Every example of README.md and docs/*.md runs as written (the conventions: docs/testing.md, "Examples in the
docs"). Each fenced block is its own test, named by its page and line:

- ``sh`` / ``bash`` / ``console`` blocks: each ``mailconnector ...`` line is run through the program's entry
  point and must exit 0. A page's blocks run in order in one directory, like a reader following the page: a
  page that starts a sandbox (``mailconnector sandbox --background``) uses that one; any other page gets the
  project file ``mailconnector sandbox`` would write, pointing at the test session's sandbox.
- ``python`` blocks: run by a fresh interpreter in that directory; must exit 0.
- ``yaml`` blocks: a project file, loaded and checked with ``Project.validate_all()``; a block marked
  ``add to mailconnector.yaml`` is checked merged into the page's project.
- ``${env:NAME}`` and ``${file:PATH}`` references get placeholder values: the reader has real ones.

Blocks marked ``<!-- not-run: REASON -->`` are only parsed, then skipped with their reason. Any other example
that fails fails its test. Every error message the docs quote must be the one the program gives.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness.commands import commands, option_names
from cli_harness.runner import cli
from doc_examples import PYTHON, ROOT, SHELL, YAML, Block, DocError, blocks_of, doc_files, shell_commands
from markdown_it import MarkdownIt

from mailconnector import ConfigError, Project
from mailconnector.cli._exit_codes import exit_code_for
from mailconnector.sandbox import Sandbox

SECTIONS = frozenset({"connections", "activities", "operations", "settings"})
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
FILE_REF = re.compile(r"\$\{file:([^}]+)\}")
SANDBOX_POINTER = Path(".mailconnector") / "sandbox-rundir"


def _collect() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    errors: list[str] = []
    for path in doc_files():
        try:
            blocks += blocks_of(path)
        except DocError as exc:
            errors.append(str(exc))
    return blocks, errors


ALL_BLOCKS, MARKER_ERRORS = _collect()
EXAMPLES = [b for b in ALL_BLOCKS if b.marked or b.lang in SHELL | PYTHON | YAML]


def _runs_in_page(block: Block) -> bool:
    return block.not_run is None and block.file is None and block.lang in SHELL | PYTHON


def _starts_a_sandbox(block: Block) -> bool:
    return _runs_in_page(block) and block.lang in SHELL and any(
        words[:2] == ["mailconnector", "sandbox"] and (len(words) == 2 or words[2].startswith("-"))
        for _, words in shell_commands(block))


# ------------------------------------------------------------------------------------------ placeholders
def _placeholders(text: str, directory: Path) -> dict[str, str]:
    """Values for the text's ``${env:NAME}`` references; files for its ``${file:PATH}`` ones (made in
    ``directory``, unless there already)."""
    for ref in FILE_REF.findall(text):
        target = Path(ref)
        if target.is_absolute() or ".." in target.parts:
            pytest.fail(f"an example refers to a secret file outside its directory: {ref}")
        path = directory / target
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"placeholder-{target.name}\n")
            path.chmod(0o600)
    return {name: f"placeholder-{name.lower()}" for name in ENV_REF.findall(text)}


# ------------------------------------------------------------------------------------------ projects
def _sandbox_project(sandbox: Sandbox, directory: Path) -> dict[str, Any]:
    """What ``mailconnector sandbox`` writes (connection ``sandbox`` = alice, ``sandbox-NAME`` = the others),
    for the session's sandbox, with the passwords in files beside it."""
    secrets = directory / ".secrets"
    secrets.mkdir(exist_ok=True)
    connections: dict[str, Any] = {}
    for user in sandbox.info.users:
        local = user["address"].split("@")[0]
        pw = secrets / f"{local}.password"
        pw.write_text(user["password"])
        pw.chmod(0o600)
        name = "sandbox" if local == "alice" else f"sandbox-{local}"
        connections[name] = sandbox.connection_dict(local, password=f"${{file:.secrets/{local}.password}}")
    return {"connections": connections}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` added to ``base`` the way a reader adds a snippet to a project file: mappings merged, the
    rest replaced."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _project_data(block: Block) -> dict[str, Any]:
    data = yaml.safe_load(block.text)
    if not isinstance(data, dict) or not data or not set(data) <= SECTIONS:
        pytest.fail(f"{block.id}: a YAML block that is not a project file (top level: {', '.join(SECTIONS)}): "
                    "mark it <!-- example: add to mailconnector.yaml --> or <!-- not-run: why -->")
    return data


def _page_project(sandbox: Sandbox, directory: Path, doc: str, upto: Block | None = None) -> dict[str, Any]:
    """The sandbox's project with the page's ``add to mailconnector.yaml`` blocks merged, in page order
    (up to and including ``upto``)."""
    data = _sandbox_project(sandbox, directory)
    for block in BLOCKS_BY_DOC[doc]:
        if block.add_to_project:
            data = _merge(data, _project_data(block))
        if block is upto:
            break
    return data


def _write_page_files(doc: str, directory: Path) -> None:
    for block in BLOCKS_BY_DOC[doc]:
        if block.file is None:
            continue
        target = Path(block.file)
        if target.is_absolute() or ".." in target.parts:
            pytest.fail(f"{block.id}: <!-- example: file --> must name a path inside the page's directory")
        (directory / target).parent.mkdir(parents=True, exist_ok=True)
        (directory / target).write_text(block.text, encoding="utf-8")


def _validate(text: str, directory: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.delenv("MAILCONNECTOR_STATE", raising=False)
    for name, value in _placeholders(text, directory).items():
        monkeypatch.setenv(name, value)
    path = directory / "mailconnector.yaml"
    path.write_text(text, encoding="utf-8")
    project = Project.load(path)
    project.validate_all()
    return project


BLOCKS_BY_DOC: dict[str, list[Block]] = {}
for _b in ALL_BLOCKS:
    BLOCKS_BY_DOC.setdefault(_b.doc, []).append(_b)


# ------------------------------------------------------------------------------------------ pages
@dataclass
class Page:
    """One page's working directory and which of its examples ran, and how."""

    doc: str
    directory: Path
    outcome: dict[str, bool] = field(default_factory=dict)


class Pages:
    """The pages whose examples run, each prepared once per session; sandboxes they start are removed at the end."""

    def __init__(self, factory: pytest.TempPathFactory, sandbox: Callable[[], Sandbox]) -> None:
        self._factory = factory
        self._sandbox = sandbox
        self._pages: dict[str, Page] = {}

    def get(self, doc: str) -> Page:
        if doc not in self._pages:
            directory = self._factory.mktemp(re.sub(r"[^A-Za-z0-9]+", "-", doc))
            _write_page_files(doc, directory)
            blocks = BLOCKS_BY_DOC[doc]
            if any(_starts_a_sandbox(b) for b in blocks):
                if any(b.add_to_project for b in blocks):
                    pytest.fail(f"{doc}: a page that starts its own sandbox cannot also add to the project file")
            else:
                data = _page_project(self._sandbox(), directory, doc)
                (directory / "mailconnector.yaml").write_text(yaml.safe_dump(data, sort_keys=False,
                                                                             allow_unicode=True))
            self._pages[doc] = Page(doc, directory)
        return self._pages[doc]

    def close(self) -> None:
        for page in self._pages.values():
            pointer = page.directory / SANDBOX_POINTER
            if pointer.exists():
                rundir = Path(pointer.read_text().strip())
                if rundir.exists():
                    Sandbox.attach(rundir).remove()


@pytest.fixture(scope="session")
def pages(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pages]:
    # The session's sandbox is started only when a page needs it (a run of the not-run blocks alone does not).
    all_pages = Pages(tmp_path_factory, lambda: request.getfixturevalue("sandbox"))
    try:
        yield all_pages
    finally:
        all_pages.close()


def _run_shell(block: Block, page: Page) -> None:
    for line, words in shell_commands(block):
        shown = shlex.join(words)
        if words[0] != "mailconnector":
            pytest.fail(f"{block.doc}:{line}: `{shown}`: only mailconnector commands are run; "
                        "mark the block <!-- not-run: why --> if it must show others")
        result = cli(words[1:], page.directory)
        assert result.returncode == 0, (
            f"{block.doc}:{line}: `{shown}` exited with {result.returncode}\n"
            f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}")


def _run_python(block: Block, page: Page) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MAILCONNECTOR_PROJECT", "MAILCONNECTOR_STATE")}
    env.update({"NO_COLOR": "1", "COLUMNS": "200"})
    env.update(_placeholders(block.text, page.directory))
    proc = subprocess.run([sys.executable, "-c", block.text], cwd=page.directory, env=env, capture_output=True,
                          text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (
        f"{block.id}: the example exited with {proc.returncode} (its line 1 is {block.doc}:{block.line + 1})\n"
        f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}")


def _run_in_page(block: Block, page: Page) -> None:
    """Run the page's earlier examples first (when this one is run alone), then this one."""
    for earlier in BLOCKS_BY_DOC[block.doc]:
        if earlier is block:
            break
        if not _runs_in_page(earlier):
            continue
        if earlier.id not in page.outcome:
            try:
                _run_block(earlier, page)
            except BaseException:
                page.outcome[earlier.id] = False
                raise
            page.outcome[earlier.id] = True
        if not page.outcome[earlier.id]:
            pytest.fail(f"{block.id} comes after {earlier.id} on its page, which failed")
    page.outcome[block.id] = False
    _run_block(block, page)
    page.outcome[block.id] = True


def _run_block(block: Block, page: Page) -> None:
    if block.lang in SHELL:
        _run_shell(block, page)
    else:
        _run_python(block, page)


def _check_syntax(block: Block) -> None:
    """What a block that is not run must still be: well-formed in its language."""
    if block.lang in PYTHON:
        compile(block.text, block.id, "exec")
    elif block.lang in YAML:
        yaml.safe_load(block.text)
    elif block.lang in SHELL:
        shell_commands(block)
    elif block.file is not None and block.file.endswith((".jsonl", ".ndjson")):
        for n, line in enumerate(block.text.splitlines(), start=1):
            if line.strip():
                assert isinstance(json.loads(line), dict), f"{block.id}: line {n} is not a JSON object"
    elif block.file is not None and block.file.endswith(".json"):
        json.loads(block.text)


# ------------------------------------------------------------------------------------------ the examples
def test_markers_are_understood() -> None:
    assert not MARKER_ERRORS, "\n".join(MARKER_ERRORS)


def test_the_docs_have_examples_of_every_kind() -> None:
    """A guard against an extractor that silently finds nothing."""
    kinds = {("shell" if b.lang in SHELL else b.lang) for b in EXAMPLES if not b.marked}
    assert {"shell", "python", "yaml"} <= kinds
    assert any(b.not_run for b in EXAMPLES) and any(b.file for b in EXAMPLES)
    assert any(b.add_to_project for b in EXAMPLES)


@pytest.mark.parametrize("block", EXAMPLES, ids=[b.id for b in EXAMPLES])
def test_example(block: Block, pages: Pages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 request: pytest.FixtureRequest) -> None:
    _check_syntax(block)
    if block.not_run is not None:
        pytest.skip(f"{block.id}: not run: {block.not_run}")
    if block.file is not None:
        return  # the file is written into its page's directory; the examples that use it test it
    if block.lang in YAML:
        if block.add_to_project:
            data = _page_project(request.getfixturevalue("sandbox"), tmp_path, block.doc, upto=block)
            _write_page_files(block.doc, tmp_path)
            text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        else:
            _project_data(block)
            text = block.text
        _validate(text, tmp_path, monkeypatch)
        return
    _run_in_page(block, pages.get(block.doc))


def test_commands_are_only_in_blocks_that_run() -> None:
    """A `mailconnector` command in a block of another language (or none) would escape this test."""
    found = [f"{b.id}: {line.strip()}" for b in ALL_BLOCKS if b.lang not in SHELL and not b.marked
             for line in b.text.splitlines() if re.match(r"\s*(\$ )?mailconnector\s", line)]
    assert not found, "label these blocks sh (or mark them not-run):\n" + "\n".join(found)


# ------------------------------------------------------------------------------------------ quoted errors
_BROKEN_BASE = """\
connections:
  mail:
    auth: {type: basic, username: alice@example.test, password: secret}
    smtp: {host: mail.example.test, security: starttls}
    imap: {host: mail.example.test, security: ssl}
activities:
  in: {type: read-email, connection: mail}
  send: {type: send-email, connection: mail}
  file: {type: file, path: out.jsonl}
operations:
  op:
    source: in
    target: file
"""
# Project files with one mistake each: the docs quote what the program says about them.
BROKEN_PROJECTS = {
    "a chained operation that does not exist": _BROKEN_BASE + "    on_success: nope\n"
                                                               "  other: {source: in, target: file}\n",
    "an unknown activity type": _BROKEN_BASE.replace("in: {type: read-email,", "in: {type: ftp,"),
    "a target as a source": _BROKEN_BASE.replace("    source: in\n", "    source: send\n"),
    "a Jinja syntax error": _BROKEN_BASE + '    transformation:\n      mapping:\n        a: "record.x"\n'
                                           '        b: "{{ record.y"\n',
}
# README: its project example with the IMAP port in the smtp line.
README_MISTAKE = ("smtp: {host: mail.example.test, security: starttls}",
                  "smtp: {host: mail.example.test, port: 993, security: starttls}")


@dataclass(frozen=True)
class Quote:
    doc: str
    line: int
    text: str


def _quoted_errors() -> list[Quote]:
    """Every quoted `mailconnector.yaml: line N: ...` message: inline code and lines of code blocks."""
    start = re.compile(r"mailconnector\.yaml: line \d+: ")
    quotes: list[Quote] = []
    for path in doc_files():
        doc = path.relative_to(ROOT).as_posix()
        for tok in MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8")):
            if tok.map is None:
                continue
            if tok.type == "inline":
                quotes += [Quote(doc, tok.map[0] + 1, " ".join(child.content.split()))
                           for child in tok.children or [] if child.type == "code_inline"
                           and start.match(child.content)]
            elif tok.type == "fence":
                quotes += [Quote(doc, tok.map[0] + 2 + i, line.strip())
                           for i, line in enumerate(tok.content.splitlines()) if start.match(line.strip())]
    return quotes


QUOTES = _quoted_errors()


@pytest.fixture(scope="module")
def real_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    readme = next(b for b in BLOCKS_BY_DOC["README.md"] if b.lang in YAML and "support:" in b.text)
    assert README_MISTAKE[0] in readme.text, "README's project example changed: update README_MISTAKE"
    projects = {**BROKEN_PROJECTS, "README's project with port 993 for SMTP": readme.text.replace(*README_MISTAKE)}
    out: dict[str, str] = {}
    with pytest.MonkeyPatch.context() as mp:
        for what, text in projects.items():
            directory = tmp_path_factory.mktemp("broken")
            mp.chdir(directory)
            for name, value in _placeholders(text, directory).items():
                mp.setenv(name, value)
            (directory / "mailconnector.yaml").write_text(text)
            try:
                Project.load("mailconnector.yaml").validate_all()
            except ConfigError as exc:
                out[what] = exc.message
            else:
                raise AssertionError(f"{what}: the project was accepted")
    return out


def test_the_docs_quote_error_messages() -> None:
    assert len(QUOTES) >= 5, QUOTES


@pytest.mark.parametrize("quote", QUOTES, ids=[f"{q.doc}:{q.line}" for q in QUOTES])
def test_a_quoted_error_is_the_real_one(quote: Quote, real_errors: dict[str, str]) -> None:
    assert quote.text in real_errors.values(), (
        f"{quote.doc}:{quote.line} quotes\n  {quote.text}\nwhich the program does not say; it says:\n  "
        + "\n  ".join(real_errors.values()))


def test_every_broken_project_is_quoted(real_errors: dict[str, str]) -> None:
    quoted = {q.text for q in QUOTES}
    assert not [what for what, message in real_errors.items() if message not in quoted]


# ------------------------------------------------------------------------------------------ claims
MAIL_SERVER_COMMANDS = [("test",), ("send",), ("read",), ("folders",), ("run",), ("ledger", "reconcile")]


def test_the_readme_claims_about_commands_hold() -> None:
    """README, "Commands": every command's help has examples; those that use the project file take --project
    and --debug; those that connect to a mail server also --verbose-protocol and --log-format."""
    found = commands()
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "Every command has `--help`, with examples." in readme
    for path, cmd in found.items():
        runnable = not getattr(cmd, "commands", None) or getattr(cmd, "invoke_without_command", False)
        if not path or not runnable:
            continue
        assert "Example" in (cmd.help or ""), f"`mailconnector {' '.join(path)} --help` shows no example"
        if "--project" in option_names(cmd):
            assert "--debug" in option_names(cmd), path
    for path in MAIL_SERVER_COMMANDS:
        assert f"`{' '.join(path)}`" in readme, path
        assert {"--project", "--debug", "--verbose-protocol", "--log-format"} <= option_names(found[path]), path


# ------------------------------------------------------------------------------------------ examples/
def test_the_demo_project_is_valid(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/operations.yaml, with the sandbox's connections as `./dev demo` adds them, and the transformation
    functions it names, which examples/transform.py must have."""
    demo = yaml.safe_load((ROOT / "examples" / "operations.yaml").read_text(encoding="utf-8"))
    data = _merge(_sandbox_project(sandbox, tmp_path), demo)
    project = _validate(yaml.safe_dump(data, sort_keys=False), tmp_path, monkeypatch)
    spec = importlib.util.spec_from_file_location("demo_transform", ROOT / "examples" / "transform.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    named = [op.transformation.callable for op in map(project.operation, demo["operations"])
             if op.transformation is not None and op.transformation.callable]
    assert named, "the demo uses no transformation function any more: drop this check"
    for target in named:
        assert target is not None
        module_name, _, function = target.partition(":")
        assert module_name == "transform" and callable(getattr(module, function, None)), target


# ------------------------------------------------------------------------------------------ the library
class _PathLike:
    """An os.PathLike that is neither a str nor a Path."""

    def __init__(self, path: str) -> None:
        self._path = path

    def __fspath__(self) -> str:
        return self._path


@pytest.mark.parametrize("as_given", [str, Path, _PathLike], ids=["str", "Path", "PathLike"])
def test_project_load_takes_a_str_or_a_path(as_given: Callable[[str], Any], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`Project.load("mailconnector.yaml")`, as the docs write it, failed with AttributeError on a str."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mailconnector.yaml").write_text("operations: {}\n")
    project = Project.load(as_given("mailconnector.yaml"))
    assert project.path == Path("mailconnector.yaml")
    assert project.directory == tmp_path.resolve()


@pytest.mark.parametrize("bad", ["", "no-such-dir/mailconnector.yaml", "\x00.yaml"])
def test_project_load_refuses_a_bad_str_path_with_words(bad: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        Project.load(bad)
    assert exit_code_for(caught.value) == 3


def test_validate_all_checks_the_settings(tmp_path: Path) -> None:
    (tmp_path / "mailconnector.yaml").write_text("settings:\n  lease_seconds: soon\n")
    with pytest.raises(ConfigError, match="lease_seconds"):
        Project.load(tmp_path / "mailconnector.yaml").validate_all()
