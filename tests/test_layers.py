"""The architecture as a table: which layer may import which. Every import of every product
module (top-level, inside functions, under TYPE_CHECKING) is read from its source and checked
against the table; a violation names the file, the line and the rule."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.helpers import REPOSITORY

# The layers, bottom to top, in the order of the folders: a module may import its own layer
# and any layer below it, nothing above, with no exceptions. The client is its own
# distribution and imports nothing of this repository; launchers are development tooling the
# CLI starts servers with; bench and chaos sit on top (the CLI runs them as programs of their
# own, `python -m bench.run`, without importing them).
DOMAIN = "core.domain"
RUNTIME = "core.runtime"
PROTOCOLS = "coordinator.protocols"
CLUSTER = "coordinator.cluster"
SERVICE = "coordinator.service"
API = "coordinator.api"
CLI = "coordinator.cli"
CLIENT = "wallet_client"
LAYERS = [
    "core",
    DOMAIN,
    RUNTIME,
    "shard_router",
    "shards",
    "ledger",
    "migrations",
    "launchers",
    "coordinator",
    PROTOCOLS,
    CLUSTER,
    SERVICE,
    API,
    CLI,
    "bench",
    "chaos",
]
MAY_IMPORT: dict[str, set[str]] = {layer: set(LAYERS[:index]) for index, layer in enumerate(LAYERS)}
MAY_IMPORT["core"] = set()  # the package's face: no imports
MAY_IMPORT["coordinator"] = set()
MAY_IMPORT[CLIENT] = set()
for layer in ("bench", "chaos"):
    MAY_IMPORT[layer].add(CLIENT)
# The domain imports no driver and does no I/O: only the standard library.
STDLIB_ONLY = {DOMAIN}
PACKAGES = sorted({layer.split(".")[0] for layer in MAY_IMPORT})
# Where a package's folder is, when it is not the package's name (the client is its own distribution).
FOLDERS = {"wallet_client": Path("client") / "wallet_client"}


def layer_of(module: str) -> str | None:
    """The longest row of the table that `module` is in, or None (not this repository's)."""
    candidates = [layer for layer in MAY_IMPORT if module == layer or module.startswith(layer + ".")]
    return max(candidates, key=len) if candidates else None


def product_modules() -> list[tuple[str, Path]]:
    found = []
    for package in PACKAGES:
        folder = REPOSITORY / FOLDERS.get(package, Path(package))
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found.append((".".join(parts), path))
    return found


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, resolving `from x import name`
    to x.name where that is a module of this repository."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                top, *rest = candidate.split(".")
                where = REPOSITORY / FOLDERS.get(top, Path(top)) / Path(*rest) if rest else REPOSITORY / top
                is_module = where.with_suffix(".py").exists() or where.is_dir()
                found.append((node.lineno, candidate if is_module else base))
    return found


def violations() -> list[str]:
    wrong = []
    for module, path in product_modules():
        layer = layer_of(module)
        assert layer is not None, f"{path}: not in the layer table; give its package a row"
        for line, imported in imports_of(module, path):
            where = f"{path.relative_to(REPOSITORY)}:{line}"
            target = layer_of(imported)
            top = imported.split(".")[0]
            if target is None:
                if top == "tests":
                    wrong.append(f"{where}: imports {imported}: product code never imports the tests")
                elif layer in STDLIB_ONLY and top not in sys.stdlib_module_names and top != "__future__":
                    wrong.append(f"{where}: imports {imported}: {layer} imports only the standard library")
                continue
            if target != layer and target not in MAY_IMPORT[layer]:
                wrong.append(
                    f"{where}: imports {imported} ({target}): {layer} may import only "
                    f"{', '.join(sorted(MAY_IMPORT[layer])) or 'itself'}"
                )
    return wrong


def test_every_import_runs_down_the_layers() -> None:
    """Protects the architecture: no import from a lower layer into a higher one, the domain
    free of drivers, and no product module importing the tests."""
    wrong = violations()
    assert not wrong, "imports against the layer table (tests/test_layers.py):\n  " + "\n  ".join(wrong)


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The checker itself: an upward import is reported with its file and line."""
    module = tmp_path / "upward.py"
    module.write_text("import os\n\n\ndef late():\n    from coordinator.service.wallet import WalletService\n")
    found = imports_of("core.domain.upward", module)
    assert (5, "coordinator.service.wallet") in found
    assert layer_of("coordinator.service.wallet") == SERVICE and SERVICE not in MAY_IMPORT[DOMAIN]


def test_settings_are_read_in_one_place() -> None:
    """Every WALLET_* variable is read by the settings object, not here and there at import
    time: a product module that reads os.environ is named."""
    readers = []
    for module, path in product_modules():
        if module in (
            "core.runtime.settings",
            "launchers.postgres",
            "launchers.patroni",
            "bench.run",
            "bench.rest",
            "chaos.processes",
        ):
            # the settings; the launchers' WALLET_PG_BIN and WALLET_PATRONI_*; environments
            # built for child processes
            continue
        text = path.read_text()
        if "os.environ" in text or "getenv(" in text:
            readers.append(str(path.relative_to(REPOSITORY)))
    assert readers == [], readers


def test_serving_never_imports_the_development_tools() -> None:
    """Protects the product from its tooling: what `wallet serve` runs (the CLI, the engine,
    its HTTP and relay processes) imports no module of launchers/, bench/ or chaos/; only
    `--local` (and `wallet dev`) start servers, importing launchers when they do."""
    import subprocess

    modules = [
        "coordinator.cli.main",
        "coordinator.cli.serve",
        "coordinator.cli.children",
        "coordinator.api.app",
        "coordinator.api.front",
        "coordinator.api.engine_link",
        "coordinator.cli.ledger",
    ]
    probe = (
        f"import sys\nfor name in {modules!r}:\n    __import__(name)\n"
        "import coordinator.cli.main as main\nmain.build_parser()\n"
        "print(' '.join(sorted(n for n in sys.modules if n.split('.')[0] in ('launchers', 'bench', 'chaos'))))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPOSITORY, capture_output=True, text=True, check=True
    ).stdout.split()
    assert imported == [], imported


FUNCTION_LINES_MAX = 70


def test_no_function_is_longer_than_a_screen() -> None:
    """Protects readability: no product function over FUNCTION_LINES_MAX lines (split it by job)."""
    long = []
    for _, path in product_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES_MAX:
                    long.append(f"{path.relative_to(REPOSITORY)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
