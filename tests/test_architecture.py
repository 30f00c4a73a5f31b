"""The shape of the package: imports run one way, the engine knows no family, one copy of each helper."""

import ast
from collections import Counter
from pathlib import Path

import pyro_vi_zoo

PACKAGE = Path(pyro_vi_zoo.__file__).resolve().parent  # the package under test, in a checkout or installed


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = set()


def imports_of(path: Path, top_level_only: bool):
    """The package modules ``path`` imports (relative imports resolved), at module level or anywhere."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            submodules = {f"{target}.{alias.name}" for alias in node.names} & MODULES
            found.update(submodules or {target})  # ``from . import metrics`` imports the submodule only
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("pyro_vi_zoo")}


def graph(top_level_only=True):
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    MODULES.update(modules)
    return {name: {target for target in imports_of(path, top_level_only) if target in modules and target != name}
            for name, path in modules.items()}


def test_no_import_circles():
    edges = graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import circles: {cycles}"


def test_the_engine_and_scoring_never_import_the_runner_registry_or_families():
    edges = graph(top_level_only=False)
    upward = ("pyro_vi_zoo.runner", "pyro_vi_zoo.registry", "pyro_vi_zoo.families", "pyro_vi_zoo.family",
              "pyro_vi_zoo.cli", "pyro_vi_zoo.user_model")
    for module, targets in edges.items():
        if module.startswith(("pyro_vi_zoo.engine", "pyro_vi_zoo.scoring", "pyro_vi_zoo.models", "pyro_vi_zoo.data")):
            assert not [t for t in targets if t.startswith(upward)], (module, targets)


def test_the_package_root_holds_the_runner_and_its_interfaces_only():
    root = {path.stem for path in PACKAGE.glob("*.py")}
    assert root == {"__init__", "__main__", "cache", "cli", "devices", "errors", "family", "fit", "plots",
                    "registry", "runner", "runs", "user_model"}


def test_one_copy_of_each_helper():
    definitions = Counter(node.name for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
                          if isinstance(node, ast.FunctionDef) and not node.name.startswith("__"))
    assert definitions["save_figure"] == 1 and len(definitions) > 100, f"read {len(definitions)} functions in {PACKAGE}"
    for name in ("save_figure", "inverse_softplus", "_inverse_softplus", "random_split", "atomic_write",
                 "atomic_torch_save", "predictive_band_figure", "heldout_scores"):
        assert definitions[name] <= 1, f"{name} is defined {definitions[name]} times"
