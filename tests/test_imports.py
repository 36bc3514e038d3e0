"""Import hygiene of the umm_ray package: no import cycles, no function-local import that only hides one, and one
name for one thing.

A function-local import of a light umm_ray module is how a cycle stays hidden (it imports fine until someone moves it
to the top), so every such import must be at module level unless the allow-list below says why not. Imports that pull
in a heavy third-party package the importing module does not already load (torch, transformers, ray, vllm, ...) may
stay local, and every local import (of anything) carries a one-line comment saying why.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "umm_ray"

# Third-party packages whose import costs seconds, or probes devices: a local import of them (direct or through an
# umm_ray module) keeps light modules light.
HEAVY = {"torch", "transformers", "ray", "vllm", "deepspeed", "datasets", "matplotlib", "scipy", "tensorboard"}

# Files another refactor is rewriting (stages, pipeline, reward sources, BoN and RM metrics): owned by the stages
# refactor, checked once it lands.
NOT_COVERED: set[str] = set()

# (importing file, imported umm_ray module) -> why the import is function-local although the module is light.
ALLOWED_LOCAL: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def package_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of umm_ray."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


FILES = package_files()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(node: ast.Import | ast.ImportFrom, current: str) -> list[str]:
    """Dotted modules an import statement loads (for `from pkg import sub`, `pkg.sub` too when it is a module).
    umm_ray uses absolute imports only (`test_no_relative_imports`), so `current` only names the importer."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    return [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in FILES]


def top_level_imports(tree: ast.Module, current: str) -> set[str]:
    """Modules imported when the module body runs: module level, inside if/try, not under TYPE_CHECKING."""
    out: set[str] = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(imported_names(node, current))
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            stack += node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        elif isinstance(node, (ast.With,)):
            stack += node.body
    return out


def local_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements inside function bodies (at any depth)."""
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return list({id(n): n for n in found}.values())


TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in FILES.items()}


def with_parents(module: str) -> list[str]:
    """`a.b.c` -> [a, a.b, a.b.c]: importing a submodule runs every parent package's __init__ first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def edges(name: str) -> set[str]:
    """The umm_ray modules `name` loads at import time: what it imports, and those modules' parent packages except
    its own ancestors (Python initialises those before `name`, so a package __init__ that imports its submodules is
    not a cycle; a submodule importing names back from its own package still is, through the explicit import)."""
    own = set(with_parents(name))
    out = set()
    for imp in top_level_imports(TREES[name], name):
        out |= {m for m in with_parents(imp) if m in FILES and (m not in own or m == imp)}
    out.discard(name)
    return out


GRAPH: dict[str, set[str]] = {name: edges(name) for name in TREES}


def heavy_closure(module: str, _memo: dict[str, set[str]] = {}) -> set[str]:  # noqa: B006 (a deliberate cache)
    """Heavy third-party packages loaded by importing `module` (its parents included), following top-level imports."""
    if module in _memo:
        return _memo[module]
    _memo[module] = set()  # a cycle (reported by its own test) must not recurse forever
    heavy: set[str] = set()
    for m in with_parents(module):
        if m not in TREES:
            continue
        for imp in top_level_imports(TREES[m], m):
            if imp.split(".")[0] in HEAVY:
                heavy.add(imp.split(".")[0])
        for dep in GRAPH[m]:
            if dep != module:
                heavy |= heavy_closure(dep)
    _memo[module] = heavy
    return heavy


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components with more than one module (each one an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_known_edges():
    """Guards the static analysis itself: if it stopped seeing imports, the cycle test below could not fail."""
    assert "umm_ray.models.upcycle" in GRAPH["umm_ray.models.reward_model"]
    assert "umm_ray.report.elements" in GRAPH["umm_ray.report.html"]
    assert "umm_ray.data.jsonl" in GRAPH["umm_ray.data"]  # package __init__ re-exports
    assert "umm_ray.data" in GRAPH["umm_ray.train.bt_stage"]
    assert "torch" in heavy_closure("umm_ray.models.reward_model")
    assert "torch" not in heavy_closure("umm_ray.testbed.gold")
    # Tarjan on a toy graph: a <-> b is a cycle, c is not part of it.
    assert strongly_connected({"a": {"b"}, "b": {"a", "c"}, "c": set()}) == [["a", "b"]]


def test_no_relative_imports():
    """The import analysis here resolves absolute names only; umm_ray's house style is absolute imports."""
    rel = [f"{FILES[n].relative_to(ROOT)}:{node.lineno}" for n, tree in TREES.items() for node in ast.walk(tree)
           if isinstance(node, ast.ImportFrom) and node.level]
    assert not rel, rel


def test_no_import_cycles_among_top_level_imports():
    cycles = strongly_connected(GRAPH)
    assert not cycles, f"import cycles (module-level imports): {cycles}"


IMPORT_EACH_FIRST = """
import importlib, json, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    for m in [m for m in sys.modules if m == "umm_ray" or m.startswith("umm_ray.")]:
        del sys.modules[m]  # third-party modules stay cached: only the order of our own imports matters here
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
"""


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module is the first umm_ray module imported (a clean umm_ray in sys.modules), in one fresh interpreter:
    a cycle whose `from x import y` fails for some entry point shows up as an ImportError naming it."""
    names = sorted(FILES)
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH_FIRST, json.dumps(names)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{k}:\n{v}" for k, v in failed.items())


def _covered_files() -> dict[str, Path]:
    return {name: path for name, path in FILES.items()
            if str(path.relative_to(ROOT)) not in NOT_COVERED}


def test_the_allow_list_has_reasons_and_no_stale_entries():
    for (file, module), reason in ALLOWED_LOCAL.items():
        assert len(reason.split()) >= 3, f"{file}: say why {module} is imported locally"
        assert (ROOT / file).is_file() and module in FILES, f"stale allow-list entry {(file, module)}"


def test_light_umm_ray_modules_are_imported_at_module_level():
    """A function-local import of an umm_ray module is allowed only when importing that module at the top would load
    a heavy package the importing module does not already load, or when the allow-list says why."""
    bad = []
    for name, path in _covered_files().items():
        own_heavy = heavy_closure(name)
        for node in local_imports(TREES[name]):
            for target in imported_names(node, name):
                if target not in FILES or target == name:
                    continue
                added = heavy_closure(target) - own_heavy
                rel = str(path.relative_to(ROOT))
                if not added and (rel, target) not in ALLOWED_LOCAL:
                    bad.append(f"{rel}:{node.lineno}: `{target}` is light here; import it at module level")
    assert not bad, "\n".join(bad)


def test_every_local_import_says_why():
    """Each function-local import has a comment on its line, or follows a commented local import (one reason for a
    block of imports)."""
    bad = []
    for name, path in _covered_files().items():
        lines = path.read_text().splitlines()
        covered_lines: set[int] = set()
        for node in sorted(local_imports(TREES[name]), key=lambda n: n.lineno):
            line = lines[node.lineno - 1]
            prev = node.lineno - 1
            if "#" in line or prev in covered_lines:
                covered_lines.add(node.end_lineno)
            else:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {line.strip()}")
    assert not bad, "function-local imports without a one-line reason:\n" + "\n".join(bad)


def _public_vocabulary() -> dict[str, dict[str, object]]:
    """name -> {module: value} for module-level public classes (value: None) and ALL-CAPS tuple constants."""
    seen: dict[str, dict[str, object]] = defaultdict(dict)
    for name, tree in TREES.items():
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                seen[f"class {node.name}"][name] = None
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
            for t in targets:
                if isinstance(t, ast.Name) and t.id.isupper() and isinstance(node.value, ast.Tuple):
                    try:
                        seen[t.id][name] = ast.literal_eval(node.value)
                    except ValueError:
                        seen[t.id][name] = ast.dump(node.value)
    return seen


def test_one_name_means_one_thing():
    """No two modules define a public class of the same name, or a same-named tuple constant with other members
    (two `RMResult`s, three different `KINDS`, `FAMILIES` for architectures and for task families)."""
    clashes = []
    for name, where in _public_vocabulary().items():
        if len(where) < 2:
            continue
        if name.startswith("class ") or len({repr(v) for v in where.values()}) > 1:
            clashes.append(f"{name}: {sorted(where)}")
    assert not clashes, "\n".join(clashes)
