"""The package layout: one wing per verb, each importing only the wings below it.

Every ``import`` of a bnfreeze module anywhere in the package (lazy imports
inside functions included) is read with :mod:`ast`; an import from a wing to
a wing at its own level or above fails, and so does any import cycle between
modules.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bnfreeze"

#: Bottom to top. A module may import its own wing and the wings listed before it.
WINGS = [
    "bnfreeze.errors",
    "bnfreeze.io",
    "bnfreeze.compare",
    "bnfreeze.parity",
    "bnfreeze.fold",
    "bnfreeze.verify",
    "bnfreeze.export",
    "bnfreeze.recalibration",
    "bnfreeze.quantize",
    "bnfreeze.html",
    "bnfreeze.cli",
    "bnfreeze",
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _wing(module: str) -> str:
    for wing in sorted(WINGS, key=len, reverse=True):
        if module == wing or module.startswith(wing + "."):
            return wing
    raise AssertionError(f"{module} belongs to no wing; add it to WINGS")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bnfreeze"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bnfreeze"):
            if node.level:
                raise AssertionError(f"{path}: relative import; use absolute bnfreeze imports")
            found.add(node.module)
            # ``from bnfreeze.x import y`` may import the module bnfreeze.x.y
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if _exists(candidate):
                    found.add(candidate)
    return found


def _exists(module: str) -> bool:
    relative = Path(*module.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").exists() or (PACKAGE.parent / relative / "__init__.py").exists()


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_wing():
    for module in MODULES:
        _wing(module)


def test_modules_import_only_wings_below_their_own():
    wrong = []
    for module, path in MODULES.items():
        rank = WINGS.index(_wing(module))
        for imported in sorted(_imports(path)):
            if _wing(imported) != _wing(module) and WINGS.index(_wing(imported)) >= rank:
                wrong.append(f"{module} ({_wing(module)}) imports {imported} ({_wing(imported)})")
    assert not wrong, "imports of a wing at or above the importer's own:\n" + "\n".join(wrong)


def test_no_import_cycle_between_modules():
    graph = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    # a package's __init__ re-exporting its submodules is not a cycle with them
    for m in graph:
        graph[m] = {i for i in graph[m] if not (MODULES[i].name == "__init__.py" and m.startswith(i + "."))}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_two_modules_differ_only_by_a_suffix():
    stems = {}
    for module in MODULES:
        folder, _, name = module.rpartition(".")
        stems.setdefault(folder, []).append(name)
    for folder, names in stems.items():
        for a in names:
            for b in names:
                if a != b and b.startswith(a) and b[len(a):].strip("_") in ("config", "s", "ing", "ion", "er"):
                    raise AssertionError(f"{folder}: {a} and {b} differ only by a suffix")


def test_public_api_is_unchanged():
    import inspect

    import bnfreeze
    import bnfreeze.export
    import bnfreeze.verify

    for name in ("fold", "inspect", "recalibrate", "open_data", "input_specs", "load_model", "save_model"):
        assert callable(getattr(bnfreeze, name)), name
    assert "model" in inspect.signature(bnfreeze.fold).parameters
    assert callable(bnfreeze.export.export) and callable(bnfreeze.verify.verify)
    assert issubclass(bnfreeze.InputError, bnfreeze.BnfreezeError)
    assert issubclass(bnfreeze.ParityError, bnfreeze.BnfreezeError)
    import bnfreeze.fold.planner as planner  # the wing stays importable as a package

    assert callable(planner.plan)


def test_scripts_use_only_public_names():
    for script in sorted((PACKAGE.parent / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bnfreeze"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{script.name} imports private {private} from {node.module}"
                assert not any(part.startswith("_") for part in node.module.split(".")), (script.name, node.module)
