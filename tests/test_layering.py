"""The import graph of ``visionzip`` and ``llava`` points one way: down the layer table below.

A module may import modules of its own layer and of lower layers, never of a higher one, not even
lazily inside a function. Two checks:

* dynamic: every module under ``visionzip/`` and ``llava/`` (found by walking the folders, so a new
  module is covered without touching this file) is imported on its own, with no other project module
  loaded, and every project module that the import pulled in is compared with the importer's layer;
* static: every ``import`` statement of those files (inside functions too, which a plain import does
  not run) and every ``importlib.import_module("...")`` with a literal name is compared the same way.

A project module missing from the table fails the test: add it to the table, in the layer it belongs to.

The dynamic check runs one helper interpreter (``sys.executable``): it first imports the third-party
modules the project imports at module level (torch, transformers, ...), checks that no project module
came with them, then forks one child per project module, so that each child imports its module into
a fresh set of project modules without paying torch's import again.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("visionzip", "llava", "benchmarks")

#: module -> layer. A key ``"a.b.*"`` covers ``a.b`` and everything under it; a key without ``*`` covers
#: that module alone; the most specific key wins. Lower layers never import higher ones.
LAYERS: dict[str, int] = {
    # 0: the compression library: torch only, no llava
    "visionzip.*": 0,
    # 1: the LLaVA model and the core modules everything above shares
    "llava": 1,  # the package's __init__ (not a catch-all: a new llava module must be placed here)
    "llava.constants": 1,
    "llava.conversation": 1,
    "llava.mm_utils": 1,
    "llava.video": 1,
    "llava.resources": 1,
    "llava.model.*": 1,
    "llava.fixtures.*": 1,  # tiny random-weight checkpoints for the tests and the demo
    # 2: evaluation (lmms-eval adapters, accounting, tables) and training, side by side
    "llava.eval.*": 2,  # llava.eval.adapters.* included
    "llava.families.*": 2,  # the family registry: read by the plugin registration, the tables and the apps
    "llava.train.*": 2,
    "llava.serving.*": 2,  # the vLLM plugin: vLLM's model classes with the seam's reductions (in .venv-vllm)
    # 3: the apps (each also a `python -m` entry point)
    "llava.eval.sweep": 3,
    "llava.viz": 3,
    "llava.demo_app": 3,
    "benchmarks.*": 3,  # the repository's benchmarks (not shipped): they use the library, it never imports them
    "llava.subcommand": 3,  # what the apps share with the aot command: the parser frame, the error handling
    # 4: the aot command, which dispatches to the apps; nothing imports it
    "llava.cli": 4,
}


def layer_of(module: str) -> int | None:
    if module in LAYERS:
        return LAYERS[module]
    best = None
    for key, layer in LAYERS.items():
        if key.endswith(".*"):
            base = key[:-2]
            if (module == base or module.startswith(base + ".")) and (best is None or len(base) > len(best[0])):
                best = (base, layer)
    return None if best is None else best[1]


def is_project(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_files() -> dict[str, Path]:
    """Every project module (name -> source file), found by walking the package folders."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[_module_name(path)] = path
    return found


def _unknown(module: str) -> str:
    return f"{module} is not in the layer table of tests/test_layering.py: add it to the layer table (LAYERS)"


def test_layer_table_covers_every_module():
    missing = [_unknown(m) for m in project_files() if layer_of(m) is None]
    assert not missing, "\n".join(missing)


def test_layer_table_reads_as_documented():
    assert layer_of("visionzip.aot") == 0 and layer_of("benchmarks.compression") == 3
    assert layer_of("llava") == 1 and layer_of("llava.model.builder") == 1
    assert layer_of("llava.eval.adapters.onevision") == 2 and layer_of("llava.eval.sweep") == 3
    assert layer_of("llava.cli") == 4 and layer_of("llava.unheard_of") is None


# ------------------------------------------------------------------------------------------- dynamic

PROBE = textwrap.dedent(r'''
    import ast, importlib, json, os, sys, traceback
    root, out_path, modules = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sys.path.insert(0, root)
    packages = ("visionzip", "llava", "benchmarks")

    def project(name):
        return name.split(".")[0] in packages

    # warm-up: the third-party imports the project makes at module level, run once in this parent
    statements = set()
    for dirpath, _, files in os.walk(root):
        rel = os.path.relpath(dirpath, root).split(os.sep)
        if rel[0] not in packages or "__pycache__" in rel:
            continue
        for f in files:
            if f.endswith(".py"):
                todo = [ast.parse(open(os.path.join(dirpath, f), encoding="utf-8").read())]
                while todo:  # module level only: not inside functions
                    node = todo.pop()
                    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                        todo.extend(ast.iter_child_nodes(node))
                    if isinstance(node, ast.Import):
                        statements |= {f"import {a.name}" for a in node.names if not project(a.name)}
                    elif isinstance(node, ast.ImportFrom) and not node.level and node.module != "__future__" \
                            and not project(node.module or ""):
                        statements |= {f"from {node.module} import {a.name}" for a in node.names}
    # one that pulls in a project module (lmms_eval.models loads the plugin entry point) stays out:
    # this process starts again without it, so that every child imports it afresh
    skip = json.loads(os.environ.get("AOT_LAYERING_SKIP", "[]"))
    for statement in sorted(statements - set(skip)):
        try:
            exec(statement, {})
        except BaseException:  # noqa: BLE001 - an optional dependency: the child reports it
            pass
        if any(project(m) for m in sys.modules):
            if len(skip) >= 20:
                raise SystemExit(f"third-party imports keep pulling in project modules: {skip + [statement]}")
            os.environ["AOT_LAYERING_SKIP"] = json.dumps(skip + [statement])
            sys.stdout.flush()
            os.execv(sys.executable, [sys.executable, *sys.argv])

    class Recorder:
        """Records, for each project module imported for the first time, the project module importing it."""
        edges = {}

        def find_spec(self, name, path=None, target=None):
            if project(name) and name not in self.edges:
                frame = sys._getframe(1)
                while frame is not None:
                    importer = frame.f_globals.get("__name__", "")
                    if project(importer):
                        break
                    frame = frame.f_back
                self.edges[name] = importer if frame is not None else None
            return None

    def probe(module, path):
        sys.meta_path.insert(0, Recorder())
        result = {"error": None, "missing_dependency": None}
        try:
            importlib.import_module(module)
        except BaseException as exc:  # noqa: BLE001
            result["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            name = getattr(exc, "name", None)
            if isinstance(exc, ModuleNotFoundError) and name and not project(name):
                result["missing_dependency"] = name
        result["imported"] = sorted(m for m in sys.modules if project(m))
        result["importers"] = Recorder.edges
        with open(path, "w") as fh:
            json.dump(result, fh)

    results, running, jobs = {}, {}, list(enumerate(modules))
    workers = max(1, min(4, os.cpu_count() or 1))
    while jobs or running:
        while jobs and len(running) < workers:
            index, module = jobs.pop(0)
            path = f"{out_path}.{index}.json"
            pid = os.fork()
            if pid == 0:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                try:
                    probe(module, path)
                finally:
                    os._exit(0)
            running[pid] = (module, path)
        pid, status = os.wait()
        module, path = running.pop(pid)
        try:
            with open(path) as fh:
                results[module] = json.load(fh)
            os.remove(path)
        except OSError:
            results[module] = {"error": f"the child importing {module} died (wait status {status})",
                               "missing_dependency": None, "imported": [], "importers": {}}
    with open(out_path, "w") as fh:
        json.dump(results, fh)
''')


@pytest.fixture(scope="module")
def fresh_imports(tmp_path_factory) -> dict[str, dict]:
    """module -> {"imported": project modules loaded by importing it alone, "importers": who imported
    each, "error": the import's exception or None, "missing_dependency": a third-party module it lacks}."""
    folder = tmp_path_factory.mktemp("layering")
    script, out = folder / "probe.py", folder / "imports.json"
    script.write_text(PROBE)
    proc = subprocess.run([sys.executable, str(script), str(ROOT), str(out), json.dumps(sorted(project_files()))],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_fresh_import_pulls_in_no_higher_layer(fresh_imports):
    problems = []
    for module, found in sorted(fresh_imports.items()):
        own = layer_of(module)
        if own is None:
            continue  # test_layer_table_covers_every_module names it
        for imported in found["imported"]:
            layer = layer_of(imported)
            by = found["importers"].get(imported)
            via = f" (imported by {by})" if by and by != module else ""
            if layer is None:
                problems.append(f"importing {module} pulls in {imported}{via}: " + _unknown(imported))
            elif layer > own:
                problems.append(f"{module} (layer {own}) must not import {imported} (layer {layer}), "
                                f"but importing it pulls that in{via}")
    assert not problems, "\n".join(problems)


#: modules that run only in another environment, and the dependency that environment brings: vLLM pins its
#: own torch and transformers, so llava.serving imports in .venv-vllm (tests/test_vllm_plugin.py runs it there)
ELSEWHERE = {"llava.serving": "vllm"}


def _lives_elsewhere(module: str, dependency: str) -> bool:
    return any((module == base or module.startswith(base + ".")) and dependency.split(".")[0] == dep
               for base, dep in ELSEWHERE.items())


def test_every_module_imports(fresh_imports):
    errors = [f"{m}: {r['error']}" for m, r in sorted(fresh_imports.items())
              if r["error"] and not r["missing_dependency"]]
    assert not errors, "\n".join(errors)
    missing = {m: r["missing_dependency"] for m, r in fresh_imports.items()
               if r["missing_dependency"] and not _lives_elsewhere(m, r["missing_dependency"])}
    if missing:
        pytest.skip("optional dependencies not installed here, those modules checked only up to the failure: "
                    f"{missing}")


# ------------------------------------------------------------------------------------------- static


def _imports(tree: ast.AST, module: str, is_package: bool):
    """(line, imported module, inside a function) for every import in ``tree``."""
    names = set(project_files())
    package = module if is_package else module.rpartition(".")[0]

    def visit(node, in_function):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function = True
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, in_function
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if sub in names else base, in_function
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
                   or isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))):
            yield node.lineno, node.args[0].value, in_function
        for child in ast.iter_child_nodes(node):
            yield from visit(child, in_function)

    yield from visit(tree, False)


def test_no_import_statement_reaches_up():
    names = set(project_files())
    problems = []
    for module, path in sorted(project_files().items()):
        own = layer_of(module)
        if own is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target, lazy in _imports(tree, module, path.name == "__init__.py"):
            if not is_project(target):
                continue
            where = f"{path.relative_to(ROOT)}:{line}" + (" (inside a function)" if lazy else "")
            if target not in names:
                problems.append(f"{where}: {module} imports {target}, which is no module of this repository "
                                "(moved? the new path is in the layer table)")
                continue
            layer = layer_of(target)
            if layer is None:
                problems.append(f"{where}: {module} imports {target}: " + _unknown(target))
            elif layer > own:
                problems.append(f"{where}: {module} (layer {own}) must not import {target} (layer {layer})")
    assert not problems, "\n".join(problems)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` (node -> successors), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def import_graph() -> dict[str, dict[str, list[str]]]:
    """module -> {imported project module: ["file:line", ...]}, over every import statement of the
    module (inside functions too), each resolved to the project module it names."""
    names = set(project_files())
    graph: dict[str, dict[str, list[str]]] = {}
    for module, path in sorted(project_files().items()):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = graph.setdefault(module, {})
        for line, target, _ in _imports(tree, module, path.name == "__init__.py"):
            if target in names and target != module:
                edges.setdefault(target, []).append(f"{path.relative_to(ROOT)}:{line}")
    return graph


def test_strongly_connected_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(c for c in _strongly_connected(graph) if len(c) > 1) == [["a", "b", "c"]]


def test_no_import_cycle():
    """No two project modules reach each other through imports, counting those inside functions."""
    graph = import_graph()
    cycles = [c for c in _strongly_connected({m: set(e) for m, e in graph.items()}) if len(c) > 1]
    report = []
    for cycle in cycles:
        members = set(cycle)
        where = [f"  {m} -> {t} ({', '.join(lines)})" for m in cycle for t, lines in sorted(graph[m].items())
                 if t in members]
        report.append(f"import cycle among {cycle}:\n" + "\n".join(where))
    assert not report, "\n".join(report)
