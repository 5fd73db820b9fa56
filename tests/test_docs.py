"""The README and the docs site held to the code: the README stays a door (at most 200
lines, every link landing on a page of the site), every `wallet` command they show exists
with the options they give it, the settings table names exactly the settings the code
reads, and the README's figures are the committed bench run's. (The README's walk and its
Python client snippet are run against `wallet serve --local` by tests/test_serve.py; the
API tables are held to the OpenAPI document by tests/test_contract.py.)"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coordinator.cli.main import PROGRAMS, build_parser
from tests.helpers import REPOSITORY, code_blocks

README = REPOSITORY / "README.md"
DOCS = REPOSITORY / "docs"
README_LINES_MAX = 200
# The folders whose code reads WALLET_* settings (tests and docker/ only pass them).
READERS = ("core", "coordinator", "shards", "shard_router", "ledger", "launchers", "migrations")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_the_readme_is_a_door() -> None:
    """At most 200 lines, and every page of the site it links to exists and is in the site's
    navigation (the site itself is built with --strict by `make docs`)."""
    text = README.read_text()
    assert len(text.splitlines()) <= README_LINES_MAX, len(text.splitlines())
    linked = set(re.findall(r"\]\((docs/[a-z_]+\.md)(?:#[a-z-]+)?\)", text))
    navigation = yaml.safe_load((REPOSITORY / "mkdocs.yml").read_text())["nav"]
    in_navigation = {f"docs/{page}" for entry in navigation for page in entry.values()}
    assert linked and linked <= in_navigation, sorted(linked - in_navigation)
    assert {f"docs/{path.name}" for path in DOCS.glob("*.md")} == in_navigation, "every page is in the navigation"


def wallet_commands() -> list[tuple[str, list[str]]]:
    """(page, words) of every `wallet ...` command shown in a code block, its comment dropped."""
    found = []
    for path in pages():
        for language, block in code_blocks(path):
            if language != "sh":
                continue  # text blocks show output
            for line in block.splitlines():
                for command in re.findall(r"(?:^|\$\(|\.venv/bin/)wallet ([^#)\n]*)", line.strip()):
                    found.append((path.name, command.split()))
    return found


def sub_parser(parser: argparse.ArgumentParser, word: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and word in action.choices:
            chosen: argparse.ArgumentParser = action.choices[word]
            return chosen
    return None


def help_of(words: list[str]) -> tuple[str, list[str]]:
    """The help text of the deepest command `words` name, and the words that named it."""
    for program_words, module in PROGRAMS.items():
        if tuple(words[: len(program_words)]) == program_words:
            shown = subprocess.run(
                [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60, cwd=REPOSITORY
            )
            assert shown.returncode == 0, shown.stderr
            return shown.stdout, list(program_words)
    parsers, path = [build_parser()], list[str]()
    for word in words:
        # `show|init` or `[--unfreeze]`: each alternative must be a command, and the options
        # that follow may belong to any of them
        alternatives = [w for w in word.strip("[]").split("|") if w and not w.startswith("-")]
        children = [sub_parser(parsers[0], alternative) for alternative in alternatives]
        if not alternatives or children[0] is None:
            break
        assert all(children), f"wallet {' '.join(path)} has no {alternatives}"
        parsers, path = [child for child in children if child is not None], [*path, alternatives[0]]
    return "\n".join(parser.format_help() for parser in parsers), path


@pytest.mark.parametrize(("page", "words"), wallet_commands(), ids=lambda value: str(value)[:60])
def test_every_wallet_command_shown_exists_with_its_options(page: str, words: list[str]) -> None:
    """Protects the docs from commands and options that do not exist (or no longer do)."""
    text, path = help_of(words)
    assert path, f"{page}: `wallet {' '.join(words)}` is no command"
    options = {option for word in words for option in re.findall(r"--[a-z][a-z-]*", word)}
    missing = sorted(option for option in options if not re.search(rf"{option}\b", text))
    assert not missing, f"{page}: `wallet {' '.join(path)}` has no {missing}"


def settings_in_code() -> dict[str, set[str]]:
    """WALLET_* name -> the files that read it (a string literal in the code)."""
    found: dict[str, set[str]] = {}
    for folder in READERS:
        for path in (REPOSITORY / folder).rglob("*.py"):
            for name in re.findall(r"[\"'](WALLET_[A-Z_]+)[\"']", path.read_text()):
                found.setdefault(name, set()).add(str(path.relative_to(REPOSITORY)))
    return found


def test_the_settings_table_names_every_setting_the_code_reads() -> None:
    """docs/cli.md's table: each setting the code reads, once, with the file that reads it."""
    rows = re.findall(r"^\| (`WALLET_[^|]*) \|[^|]*\|[^|]*\| `([^`]+)` \|$", (DOCS / "cli.md").read_text(), flags=re.M)
    documented = {name: reader for names, reader in rows for name in re.findall(r"`(WALLET_[A-Z_]+)`", names)}
    read = settings_in_code()
    assert set(documented) == set(read), (sorted(set(read) - set(documented)), sorted(set(documented) - set(read)))
    for name, reader in documented.items():
        assert reader in read[name], f"{name} is read by {sorted(read[name])}, not {reader}"


def test_the_readme_figures_are_the_committed_runs() -> None:
    """Each figure in the README's table is the one in bench/latest-results.json (the table
    names the summary key of each)."""
    summary = json.loads((REPOSITORY / "bench" / "latest-results.json").read_text())["summary"]
    section = README.read_text().split("## Measured figures", 1)[1]
    rows = re.findall(r"^\|[^|]*\| ([0-9,.]+)[^|]*\|[^|]*\| `(\w+)` \|$", section, flags=re.M)
    assert len(rows) >= 5, "the README's figures name their summary keys"
    for shown, key in rows:
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        # the summary keeps one decimal: the README's rounding of it may differ by half a unit
        assert abs(float(shown.replace(",", "")) - summary[key]) <= 0.5 * 10**-decimals + 1e-9, (key, shown)
