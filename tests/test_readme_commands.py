"""The shell commands README.md and the guides in docs/ show (their ``sh`` / ``bash`` blocks) run as
pasted in a fresh shell from the repository root: every ``actionrunner`` / ``celery`` / ``mkdocs``
command is a path that exists (``.venv/bin/...``, or after the block sourced dev's env file, which
puts ``.venv/bin`` on PATH) and parses (its options, with ``--help`` appended; a benchmark's options
are those its script declares), scripts and sourced files exist, ``python -c`` code compiles, and a
curl that posts JSON says so. The README's links to files of the repository resolve (the site's own
links are checked by ``mkdocs build --strict``), and docs/reference.md names every setting."""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actionrunner.cli import cli
from actionrunner.devsession import ENV_FILE
from tests.conftest import ROOT

BLOCK = re.compile(r"^```(?:sh|bash)\n(.*?)^```", re.M | re.S)
#: Programs a README command may run besides ours (present on a fresh machine, or the user's).
OTHER_PROGRAMS = {"curl", "git", "docker", "npm", "pip", "apt-get", "set", "export", "cd"}
#: Our programs in .venv/bin: each command is parsed with ``--help`` appended.
OURS = ("actionrunner", "celery", "mkdocs")
#: The pages whose blocks are checked: the README, then every guide.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(block: str) -> list[list[str]]:
    """The simple commands of a block: lines joined while they end in ``\\`` or until their quotes
    balance, comments cut, split at ``;`` / ``&&`` / ``||``."""
    commands: list[list[str]] = []
    pending = ""
    for line in block.splitlines():
        if line.endswith("\\"):  # a continued line: the command goes on
            pending += line[:-1] + " "
            continue
        pending += line + "\n"
        try:
            lexer = shlex.shlex(pending, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words = list(lexer)
        except ValueError:  # an open quote: the command goes on
            continue
        pending = ""
        current: list[str] = []
        for word in words:
            if word in (";", "&&", "||", "|", "&"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
        if current:
            commands.append(current)
    assert not pending.strip(), f"unbalanced quotes in a README block: {pending!r}"
    return commands


def _page_commands(page: Path) -> list[tuple[str, list[str], bool]]:
    """(page and block number, command, dev's env file sourced earlier in the block)."""
    found = []
    for number, match in enumerate(BLOCK.finditer(page.read_text())):
        sourced = False
        for words in _commands(match.group(1)):
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value cmd
                words = words[1:]
            if not words:
                continue
            if words[0] == "." and words[1:] == [str(ENV_FILE)]:
                sourced = True
            found.append((f"{page.relative_to(ROOT)}#{number}", words, sourced))
    return found


COMMANDS = [command for page in PAGES for command in _page_commands(page)]


def test_readme_has_commands_to_check() -> None:
    programs = {Path(words[0]).name for block, words, _ in COMMANDS if block.startswith("README.md#")}
    assert {"actionrunner", "curl", "python", "dev", "test"} <= programs, programs


def test_the_guides_have_commands_to_check() -> None:
    pages = {block.split("#")[0] for block, _, _ in COMMANDS}
    assert len(pages) > 1, pages
    programs = {Path(words[0]).name for _, words, _ in COMMANDS}
    assert {"actionrunner", "celery", "curl", "python", "mkdocs"} <= programs, programs


def test_the_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"^[a-z]+:|^#", t)]
    assert targets, "the README links to no guide"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


@functools.cache
def _help(program: str, args: tuple[str, ...]) -> tuple[int, str]:
    """``program args --help`` run as pasted (once per distinct command)."""
    parsed = subprocess.run([str(ROOT / program), *args, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    return parsed.returncode, parsed.stdout + parsed.stderr


def _check_bench(args: list[str]) -> None:
    """``actionrunner bench NAME [options]``: bench/NAME.py exists and declares every option given
    (``--help`` would only show the wrapper's own help)."""
    assert args, "actionrunner bench needs a benchmark name"
    script = ROOT / "bench" / f"{args[0]}.py"
    assert script.is_file(), f"no benchmark {args[0]!r} ({script.relative_to(ROOT)})"
    if args[0] == "incident" and "--stream" in args:  # bench/incident.py hands these on
        script = ROOT / "bench" / "incident_stream.py"
    source = script.read_text()
    for word in args[1:]:
        if word == "--stream" and script.name == "incident_stream.py":
            continue
        if word.startswith("-"):
            option = word.split("=")[0]
            assert f'"{option}"' in source, f"bench/{args[0]}.py has no option {option}"


@pytest.mark.parametrize(("block", "words", "sourced"), COMMANDS,
                         ids=[f"{b.split('#')[0]}: {' '.join(w)[:60]}" for b, w, _ in COMMANDS])
def test_a_readme_command_runs_as_pasted(block: str, words: list[str], sourced: bool) -> None:
    program, args = words[0], words[1:]
    name = Path(program).name
    if program == ".":
        target = args[0]
        assert (ROOT / target).exists() or target == str(ENV_FILE), f"{target} does not exist"
        return
    if program.startswith("./"):
        path = ROOT / program
        assert path.is_file() and os.access(path, os.X_OK), f"{program} is not an executable file"
        return
    if name in (*OURS, "python"):
        if "/" not in program:
            assert sourced, (f"`{program}` is not on PATH in a fresh shell: write .venv/bin/{program}"
                             f" or source {ENV_FILE} first")
            program = f".venv/bin/{program}"
        assert (ROOT / program).exists(), f"{program} does not exist"
        if name == "python":
            if args[0] != "-c":  # a script of the repository
                assert (ROOT / args[0]).is_file(), f"{args[0]} does not exist"
                return
            compile(args[1], block, "exec")
            return
        if name == "actionrunner" and args[:1] == ["bench"]:
            _check_bench(args[1:])
            return
        if name == "actionrunner":  # parsed in process (typer): the same parser as the entry point's
            parsed = CliRunner().invoke(cli, [*args, "--help"])
            assert parsed.exit_code == 0, f"{' '.join(words)} --help: {parsed.output}"
            return
        code, output = _help(program, tuple(args))
        assert code == 0, f"{' '.join(words)} --help: {output}"
        return
    if name == "curl":
        if "-d" in args or "--data" in args:
            headers = [args[i + 1] for i, a in enumerate(args) if a == "-H"]
            assert any(h.lower().replace(" ", "") == "content-type:application/json" for h in headers), \
                "a curl that posts JSON needs -H 'Content-Type: application/json' (else 422)"
        return
    assert name in OTHER_PROGRAMS, f"{block} runs {program!r}: add a check for it here"


def test_every_setting_is_in_the_reference() -> None:
    """docs/reference.md names every setting by the variable that sets it."""
    from pydantic import AliasChoices

    from actionrunner.settings import Settings

    text = (ROOT / "docs" / "reference.md").read_text()
    missing = []
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        names = ([str(c) for c in alias.choices] if isinstance(alias, AliasChoices)
                 else [f"ACTIONRUNNER_{field.upper()}"])
        if not any(f"`{name}`" in text for name in names):
            missing.append(names[0])
    assert not missing, f"docs/reference.md does not document {missing}"
