"""Run the examples of a Markdown page (the README, a docs page) as a user would.

A page is read top to bottom in one folder, as a user following it would work (there is
no way to start a fresh folder in the middle of a page: a reader does not see one, so a
page whose examples only pass apart is a page that misleads):

- A fenced block whose first line is ``# NAME`` (``# conftest.py``, ``# test_crm.py``,
  ``# toolgroups.yaml``, ``# pytest.ini``) is written to the file NAME; a later block with
  the same NAME replaces it. A Python block without a name is written to
  ``test_example_<line>.py``.
- Each Python test file (``test_*.py``, or a block without a name) is then run the way the
  user would, ``pytest FILE`` in that folder with the plugin installed, and must pass: at
  least one test, none failed, no error, nothing skipped (``outcome=`` says otherwise).
- YAML, TOML, JSON and ini blocks must parse, named or not.
- A ``console`` block is a shell session: each ``$ llamastate ...`` or ``$ pytest ...`` line
  is run in the folder, and the lines under it must appear in its output, in order
  (volatile parts masked: paths of the temp folder, times, sizes, ports, hashes, the
  installed stack's version; ``...`` in a line matches anything).
- A ``text`` block marked ``output`` must appear, the same way, in the output of the last
  run.
- ``bash`` and other blocks are not run.

An HTML comment just before a block steers it: ``<!-- example: KEY=VALUE ... -->`` with

- ``skip="reason"``: not run (the reason is required);
- ``args="--llama-leaks=error"``: more arguments for the pytest run of this file;
- ``outcome="passed=1 errors=1"``: the exact counts this run must end with;
- ``output``: the next ``text`` block is output of the last run;
- ``flavor=llama-stack`` (or ``ogx``): only where that stack is installed, the one place
  the flavors differ by design.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import tomllib
import yaml
from pytest_zygote import Zygote

from pytest_llamastate.releases import detect

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<lang>[\w+-]*)[^\n]*$")
_DIRECTIVE = re.compile(r"^ *<!-- example:(?P<body>.*?)-->\s*$")
_NAME = re.compile(r"^# (?P<name>[\w.][\w./-]*\.(?:py|ya?ml|toml|json|ini|cfg))\s*$")
_KEYS = {"skip", "args", "outcome", "output", "flavor"}
_COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|warnings?|deselected)")


class ExampleError(AssertionError):
    """An example of a page did not do what the page says; names the page and line."""


@dataclass
class Block:
    """One fenced block and the directive before it."""

    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    directive: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def name(self) -> str | None:
        first = self.text.split("\n", 1)[0]
        match = _NAME.match(first)
        return match.group("name") if match else None


def blocks(path: Path) -> Iterator[Block]:
    """The fenced blocks of a Markdown file, each with the directive right before it."""
    lines = path.read_text().splitlines()
    directive: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if match := _DIRECTIVE.match(line):
            directive = _parse_directive(match.group("body"), f"{path}:{i + 1}")
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip():
                directive = {}  # a directive belongs to the block right after it
            i += 1
            continue
        indent, mark = len(fence.group("indent")), fence.group("fence")
        body = []
        start = i + 1
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(mark):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1
        yield Block(path, start, fence.group("lang").lower(), "\n".join(body) + "\n", directive)
        directive = {}


def _parse_directive(body: str, where: str) -> dict[str, str]:
    found = {}
    for word in shlex.split(body):
        key, _, value = word.partition("=")
        if key not in _KEYS:
            raise ExampleError(f"{where}: unknown example directive {key!r}; known: {_KEYS}")
        if key == "skip" and not value.strip():
            raise ExampleError(f'{where}: skip needs a reason: skip="why"')
        found[key] = value
    return found


@dataclass
class Run:
    """What one command printed (stdout and stderr, in order) and how it ended."""

    args: list[str]
    output: str
    code: int


class Page:
    """Runs one page's examples in ``folder``, one after the other."""

    def __init__(self, path: Path, folder: Path) -> None:
        self.path = path
        self.folder = folder / "page"
        self.folder.mkdir(parents=True)
        self.last: Run | None = None
        self.ran = 0
        self.skipped: list[str] = []
        self._zygote: Zygote | None = None

    # --- the environment a user's shell would have ----------------------------------

    def env(self) -> dict[str, str]:
        """The suite's environment without pytest's and the plugin's own variables; a home
        and a temp folder of the page's own (so the leak guard and basetemps are its own)."""
        home, tmp = self.folder / ".home", self.folder / ".tmp"
        home.mkdir(exist_ok=True)
        tmp.mkdir(exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTEST_", "LLAMASTATE_", "COV_"))
            and k not in ("SQLITE_STORE_DIR", "FILES_STORAGE_DIR", "MILVUS_DB_PATH")
        }
        bin_dir = str(Path(sys.executable).parent)
        env.update(
            HOME=str(home),
            TMPDIR=str(tmp),
            COLUMNS="80",
            PATH=bin_dir + os.pathsep + env.get("PATH", ""),
            PYTHONDONTWRITEBYTECODE="1",
        )
        return env

    def run(self, args: list[str], stdin: str = "") -> Run:
        if args[0] == "pytest":
            return self._pytest(args)
        if args[0] == "llamastate":
            argv = [str(Path(sys.executable).with_name("llamastate")), *args[1:]]
        else:
            raise ExampleError(f"{self.path}: only pytest and llamastate commands run: {args}")
        done = subprocess.run(
            argv,
            cwd=self.folder,
            env=self.env(),
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
            check=False,
        )
        self.last = Run(args, done.stdout, done.returncode)
        return self.last

    def _pytest(self, args: list[str]) -> Run:
        """``pytest ...`` in the folder, forked from the page's zygote (``pytest_zygote``)."""
        if self._zygote is None:
            self._zygote = Zygote(self.folder, self.env())
        output = self.folder.parent / "pytest-output.txt"
        code = self._zygote.run(args[1:], output, timeout=600)
        self.last = Run(args, output.read_text(errors="replace"), code)
        return self.last

    def close(self) -> None:
        if self._zygote is not None:
            self._zygote.close()

    # --- the blocks ------------------------------------------------------------------

    def do(self, block: Block) -> None:
        d = block.directive
        if "skip" in d:
            self.skipped.append(f"{block.where}: {d['skip']}")
            return
        if "flavor" in d and d["flavor"] != detect().name:
            self.skipped.append(f"{block.where}: only on {d['flavor']}")
            return
        if block.lang == "python":
            self._python(block)
        elif block.lang in ("yaml", "yml", "toml", "json", "ini"):
            self._data(block)
        elif block.lang == "console":
            self._console(block)
        elif block.lang == "text" and "output" in d:
            if self.last is None:
                raise ExampleError(f"{block.where}: an output block before any run")
            self._expect(block, block.text, self.last)

    def _write(self, block: Block, name: str) -> Path:
        target = self.folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text)
        return target

    def _python(self, block: Block) -> None:
        name = block.name or f"test_example_{block.line}.py"
        self._write(block, name)
        if not (block.name is None or Path(name).name.startswith("test_")):
            return  # a conftest or a module the tests import
        run = self.run(["pytest", name, *shlex.split(block.directive.get("args", ""))])
        self.ran += 1
        counts = {
            word.rstrip("s") if word != "xpassed" else word: int(n)
            for n, word in _COUNTS.findall(_summary_line(run.output))
        }
        counts.pop("warning", None)
        counts.pop("deselected", None)
        if "outcome" in block.directive:
            want = {
                k.rstrip("s"): int(v)
                for k, _, v in (w.partition("=") for w in block.directive["outcome"].split())
            }
            ok = counts == want
        else:
            want = {"passed": counts.get("passed", 0)}
            ok = counts.get("passed", 0) > 0 and set(counts) == {"passed"}
        if not ok:
            raise ExampleError(
                f"{block.where}: `pytest {name}` ended with {counts or 'no tests'}, the page "
                f"expects {want if 'outcome' in block.directive else 'every test to pass'}\n"
                + _tail(run.output)
            )

    def _data(self, block: Block) -> None:
        text = block.text
        try:
            if block.lang in ("yaml", "yml"):
                yaml.safe_load(text)
            elif block.lang == "toml":
                tomllib.loads(text)
            elif block.lang == "json":
                json.loads(text)
            else:
                configparser.ConfigParser(interpolation=None).read_string(text)
        except Exception as exc:
            raise ExampleError(
                f"{block.where}: the {block.lang} block does not parse: {exc}"
            ) from None
        if block.name:
            self._write(block, block.name)

    def _console(self, block: Block) -> None:
        """``$ command`` lines, each followed by the output it must print."""
        session: list[tuple[str, list[str]]] = []
        for line in block.text.splitlines():
            if line.startswith("$ "):
                session.append((line[2:], []))
            elif session:
                session[-1][1].append(line)
        if not session:
            raise ExampleError(f"{block.where}: a console block without a `$ ` command")
        for command, expected in session:
            words = shlex.split(command, comments=True)
            run = self.run(words, stdin=self._stdin(words))
            self.ran += 1
            self._expect(block, "\n".join(expected), run)

    @staticmethod
    def _stdin(words: list[str]) -> str:
        """``llamastate reset`` asks; a session on a page answers yes, as the page shows."""
        return "y\n" if words[:2] == ["llamastate", "reset"] else ""

    def _expect(self, block: Block, expected: str, run: Run) -> None:
        """Each expected line matches an output line, in order (after masking both)."""
        actual = [self._mask(line) for line in run.output.splitlines()]
        at = 0
        for want in (self._mask(line) for line in expected.splitlines()):
            if not want or want == "...":
                continue
            pattern = re.compile(".*".join(map(re.escape, want.split("..."))))
            while at < len(actual) and not pattern.fullmatch(actual[at]):
                at += 1
            if at == len(actual):
                raise ExampleError(
                    f"{block.where}: `{shlex.join(run.args)}` did not print, in this order:\n"
                    f"  {want}\n(masked output:)\n" + "\n".join(actual[-60:])
                )
            at += 1

    def _mask(self, line: str) -> str:
        for folder in {self.folder, self.folder.resolve()}:
            line = line.replace(str(folder), "/home/me/project")
        return mask(line)


#: Parts of real output that differ from run to run (or between the two flavors),
#: replaced the same way in the page's text and in the output.
_MASKS = [
    (re.compile(r"\S*/pytest-of-[^/\s]+/pytest-\d+"), "<basetemp>"),
    (re.compile(r"/home/me/project/\.tmp/pytest-llamastate-templates-\w+"), "<templates>"),
    (re.compile(r"/tmp/pytest-llamastate-templates-[^/\s]+"), "<templates>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "<date>"),
    (re.compile(r"\b(?:llama-stack|ogx) \d+\.\d+\.\d+\b(?: \([^)]*\))?"), "<flavor>"),
    (re.compile(r"(?<=-)[0-9a-f]{8}\b"), "<hash>"),  # before times: 1234567d is a hash
    # pytest adds "(0:01:33)" to a run over a minute (a loaded machine); `llamastate ls`
    # shows ages as 5s, 4m, 2h, 3d.
    (re.compile(r"\b\d+(?:\.\d+)?(?:s|ms|m|h|d)\b(?: \(\d+:\d\d:\d\d\))?"), "<time>"),
    (re.compile(r"\b\d+(?:\.\d+)?[BKMG]\b"), "<size>"),
    (re.compile(r"(?<=:)\d{4,5}\b|(?<=--port )\d+"), "<port>"),
    (re.compile(r"\s+"), " "),
    (re.compile(r"^ ?([=_-])\1{2,} (.*) \1{3,} ?$"), r"\2"),  # pytest's section banners
]


def mask(line: str) -> str:
    for pattern, replacement in _MASKS:
        line = pattern.sub(replacement, line)
    return line.strip()


def _summary_line(output: str) -> str:
    """pytest's last line, ``==== 1 failed, 2 passed in 0.12s ====``."""
    for line in reversed(output.splitlines()):
        if line.startswith("=") and " in " in line:
            return line
    return ""


def _tail(output: str, lines: int = 60) -> str:
    return "\n".join(output.splitlines()[-lines:])


def run_page(path: Path, folder: Path) -> Page:
    """Run every example of ``path`` in ``folder``; raises ``ExampleError`` on the first
    that does not do what the page says."""
    page = Page(path, folder)
    try:
        for block in blocks(path):
            page.do(block)
    finally:
        page.close()
    return page
