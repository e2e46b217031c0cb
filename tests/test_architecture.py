"""The package layout: every module imports, and no two modules import each other (directly or
through others), counting imports inside functions too."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"training": ROOT / "training", "benchmarks": ROOT / "benchmarks", "milcnn": ROOT / "sdk" / "milcnn"}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its code. ``from pkg import sub`` counts as
    importing ``pkg.sub`` (not the package), as Python resolves it."""
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or node.level):
                module = node.module or ""
                if node.level:  # relative: from the package the module is in (a package's __init__ is its own)
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = package[: len(package) - node.level + 1]
                    module = ".".join([*base, *([module] if module else [])])
                subs = [f"{module}.{a.name}" for a in node.names]
                targets = subs if all(s in modules for s in subs) else [module, *(s for s in subs if s in modules)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_relative_imports_are_resolved(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for f in ("pkg/__init__.py", "pkg/a.py", "pkg/sub/__init__.py"):
        (tmp_path / f).write_text("")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("from ..a import x\nfrom . import c\n")
    (tmp_path / "pkg" / "sub" / "c.py").write_text("")
    modules = {"pkg": tmp_path / "pkg/__init__.py", "pkg.a": tmp_path / "pkg/a.py",
               "pkg.sub": tmp_path / "pkg/sub/__init__.py", "pkg.sub.b": tmp_path / "pkg/sub/b.py",
               "pkg.sub.c": tmp_path / "pkg/sub/c.py"}
    assert import_graph(modules)["pkg.sub.b"] == {"pkg.a", "pkg.sub.c"}


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert len(MODULES) > 40
    assert cycles(import_graph(MODULES)) == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.endswith("__main__")))
def test_every_module_imports(name):
    importlib.import_module(name)


# ---------------------------------------------------------------------------------------- layers

#: the SDK's layers, lowest first: a module imports only from its own layer or lower ones
#: (``milcnn/__init__.py`` documents them; ``docs/architecture.md`` draws them)
#: the package root holds the version and re-exports the errors, its other names are imported lazily (by name,
#: for users): it is in the lowest layer, as itself only
LAYERS = [("milcnn", "milcnn.constants", "milcnn.errors", "milcnn.logs"), ("milcnn.process",), ("milcnn.io",),
          ("milcnn.runtime",), ("milcnn.model",), ("milcnn.predict",), ("milcnn.outputs",), ("milcnn.batch",),
          ("milcnn.cli",)]


def layer_of(module: str) -> int:
    """The index in ``LAYERS`` of the longest prefix that ``module`` falls under."""
    best, rank = "", None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or (prefix != "milcnn" and module.startswith(prefix + "."))
            if inside and len(prefix) > len(best):
                best, rank = prefix, i
    if rank is None:
        raise AssertionError(f"{module} is in no layer of LAYERS")
    return rank


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})" for m, deps in sorted(graph.items())
            for d in sorted(deps) if layer_of(d) > layer_of(m)]


def test_the_layer_check_finds_an_upward_import():
    assert layer_violations({"milcnn.process.quality": {"milcnn.predict.classifier"}}) == [
        "milcnn.process.quality (layer 1) imports milcnn.predict.classifier (layer 5)"]
    assert layer_violations({"milcnn.predict.classifier": {"milcnn.process.quality"}}) == []


def test_sdk_modules_import_only_from_their_layer_or_below():
    sdk = {k: v for k, v in MODULES.items() if k == "milcnn" or k.startswith("milcnn.")}
    graph = import_graph(sdk)
    assert layer_violations(graph) == []
    subpackages = {name for name in sdk if name.count(".") == 1 and (ROOT / "sdk" / name.replace(".", "/")).is_dir()}
    assert len(subpackages) >= 4, subpackages


def _functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_sdk_units_stay_small():
    """No SDK module over 400 lines, no function over 80, and ``Classifier`` a facade of at most 200."""
    big, long = [], []
    for name, path in MODULES.items():
        if not name.startswith("milcnn"):
            continue
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400:
            big.append(f"{name}: {text.count(chr(10))} lines")
        long += [f"{name}.{f.name}: {f.end_lineno - f.lineno + 1} lines" for f in _functions(ast.parse(text))
                 if f.end_lineno - f.lineno + 1 > 80]
    assert big == [] and long == []
    tree = ast.parse(MODULES["milcnn.predict.classifier"].read_text(encoding="utf-8"))
    (classifier,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Classifier"]
    assert classifier.end_lineno - classifier.lineno + 1 <= 200


def test_checkpoints_are_read_only_through_training_checkpoint():
    """``torch.load`` in one place (training/checkpoint.py), so every checkpoint is read with the same
    safety settings and migrations."""
    calls = []
    for folder in (ROOT / "training", ROOT / "benchmarks", ROOT / "sdk", ROOT / "tests"):
        for path in folder.rglob("*.py"):
            if path == ROOT / "training" / "checkpoint.py" or path == Path(__file__).resolve():
                continue
            calls += [f"{path.relative_to(ROOT)}:{n.lineno}" for n in ast.walk(ast.parse(path.read_text("utf-8")))
                      if isinstance(n, ast.Attribute) and n.attr == "load" and isinstance(n.value, ast.Name)
                      and n.value.id == "torch"]
    assert calls == []
