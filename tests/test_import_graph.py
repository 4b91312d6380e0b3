"""The package's import graph, read from the source with ``ast``: no cycle among module-level
imports, and no module reaching into another module's private (``_name``) names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "trafficrnn"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: (importer, imported module) -> private names allowed, each with its reason.
ALLOWED_PRIVATE: dict[tuple[str, str], frozenset[str]] = {
    # cli_options holds the helpers of cli.py, split out of it for size: its ``_`` names are the
    # CLI's internals, not an API of their own. Make them public (or fold the modules) in one go.
    ("trafficrnn.cli", "trafficrnn.cli_options"): frozenset(
        {
            "_FILE",
            "_align_images",
            "_check_outputs",
            "_covariates",
            "_data_kwargs",
            "_ensemble_options",
            "_load_model",
            "_model_folder",
            "_model_list",
            "_model_run_options",
            "_prepare_training",
            "_read_vector",
            "_scored_stack",
            "_static",
            "_table_json",
            "_target",
            "_training_options",
            "_write_text",
        }
    ),
    # the `calibrate` command lives beside cli.py (a lazy command) and shares its helpers
    ("trafficrnn.cli_quantiles", "trafficrnn.cli_options"): frozenset(
        {
            "_check_outputs",
            "_data_kwargs",
            "_load_model",
            "_model_folder",
            "_model_run_options",
            "_scored_stack",
        }
    ),
    # the input checks reuse the reprojection helpers of the private trafficrnn.io._warp (to be made
    # public like trafficrnn.io.atomic)
    ("trafficrnn.estimation.checks", "trafficrnn.io._warp"): frozenset({"<module>"}),
}


def _modules() -> dict[str, tuple[ast.Module, bool]]:
    """Dotted name -> (parsed source, is a package ``__init__``) for every module of the package."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (
            ast.parse(path.read_text(encoding="utf-8"), filename=str(path)),
            is_package,
        )
    return found


MODULES = _modules()


def _module_level(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: top level, and inside top-level ``if`` / ``try`` /
    ``with`` blocks; not in functions or classes, nor under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body + node.orelse + node.finalbody)
                for handler in node.handlers:
                    walk(handler.body)
            elif isinstance(node, ast.With):
                walk(node.body)

    walk(tree.body)
    return found


def _all_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def _lazy_exports(tree: ast.Module) -> dict[str, str]:
    """A package's ``_LAZY = {name: module}`` table (names its ``__getattr__`` imports on first use)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets
        ):
            return eval(
                compile(ast.Expression(node.value), "_LAZY", "eval"),
                {"__builtins__": {"dict": dict}},
            )
    return {}


def _source_module(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, node: ast.Import | ast.ImportFrom) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for each trafficrnn target of ``node``."""
    is_package = MODULES[module][1]
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == PACKAGE]
    source = _source_module(module, is_package, node)
    if source.split(".")[0] != PACKAGE:
        return []
    return [
        (f"{source}.{alias.name}", None)
        if f"{source}.{alias.name}" in MODULES
        else (source, alias.name)
        for alias in node.names
    ]


def _defined_in(package: str, name: str) -> str | None:
    """The submodule a package's ``__init__`` takes ``name`` from (eager import or ``_LAZY``), if any."""
    tree, _ = MODULES[package]
    origin = next(
        (
            target
            for node in _module_level(tree)
            for target, imported in _imports(package, node)
            if imported == name
        ),
        None,
    ) or _lazy_exports(tree).get(name)
    if origin not in MODULES:
        return None
    return (_defined_in(origin, name) or origin) if MODULES[origin][1] else origin


def _edges(module: str) -> set[str]:
    """Modules ``module`` imports at module level; a name taken from a package counts as an import of
    the package and of the submodule its ``__init__`` takes it from."""
    targets = set()
    for node in _module_level(MODULES[module][0]):
        for target, name in _imports(module, node):
            if target not in MODULES:
                continue
            targets.add(target)
            if name is not None and MODULES[target][1] and (origin := _defined_in(target, name)):
                targets.add(origin)
    targets.discard(module)
    return targets


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def _is_private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def test_the_graph_sees_the_package():
    graph = {module: _edges(module) for module in MODULES}
    assert {
        "trafficrnn.cli",
        "trafficrnn.estimator",
        "trafficrnn.io.atomic",
        "trafficrnn.models.forecaster",
    } <= set(graph)
    assert "trafficrnn.timeaxis" in graph["trafficrnn.estimation.evaluation"]
    assert "trafficrnn.io.atomic" in graph["trafficrnn.estimation.persist"]
    assert (
        "trafficrnn.estimation.fitting" in graph["trafficrnn.estimator"]
    )  # from trafficrnn.estimation import fitting
    assert "trafficrnn.estimation.checkpoints" in graph["trafficrnn.estimation.fitting"]


def test_names_taken_from_a_package_resolve_to_their_module():
    assert (
        _defined_in("trafficrnn.io", "check_outputs") == "trafficrnn.io.atomic"
    )  # eager import in __init__
    assert _defined_in("trafficrnn.io", "write_stack") == "trafficrnn.io.export"  # _LAZY
    assert _defined_in("trafficrnn", "read_stack") == "trafficrnn.io.stack"  # through trafficrnn.io
    assert _defined_in("trafficrnn", "__version__") == "trafficrnn._version"
    assert _defined_in("trafficrnn.models", "EncoderForecaster") == "trafficrnn.models.forecaster"
    assert _defined_in("trafficrnn.models", "get_model") is None  # defined in the __init__ itself


def test_no_import_cycle():
    graph = {module: _edges(module) for module in MODULES}
    cycle = _find_cycle(graph)
    assert cycle is None, (
        "import cycle among module-level imports: " + " -> ".join(cycle) + "; move what "
        "the modules share to the module that owns it, or import one way only"
    )


def test_find_cycle_reports_the_path():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_private_names_taken_from_another_module():
    """Module-level and function-level imports alike. A private module (``_x``) may be imported from
    inside the package that holds it only."""
    found = []
    for module in MODULES:
        for node in _all_imports(MODULES[module][0]):
            for target, name in _imports(module, node):
                if target == module:
                    continue
                private_module = [
                    i for i, part in enumerate(target.split(".")) if _is_private(part)
                ]
                holder = ".".join(target.split(".")[: private_module[0]]) if private_module else ""
                outside = private_module and not (
                    module == holder or module.startswith(holder + ".")
                )
                taken = (
                    name
                    if name is not None and _is_private(name)
                    else "<module>"
                    if outside
                    else None
                )
                if taken and taken not in ALLOWED_PRIVATE.get((module, target), ()):
                    found.append(f"{module} (line {node.lineno}) imports {taken} from {target}")
    assert not found, (
        "private names imported from another module (make the helper public in the module that "
        "owns it):\n" + "\n".join(found)
    )


@pytest.mark.parametrize(("importer", "source"), sorted(ALLOWED_PRIVATE))
def test_allow_list_is_still_needed(importer, source):
    """Each allowed name is still imported: drop entries once fixed."""
    taken = set()
    for node in _all_imports(MODULES[importer][0]):
        for target, name in _imports(importer, node):
            if target == source:
                taken |= {"<module>", name}
    stale = ALLOWED_PRIVATE[(importer, source)] - taken
    assert not stale, (
        f"ALLOWED_PRIVATE[{(importer, source)}] lists {sorted(stale)}, no longer imported: remove them"
    )
