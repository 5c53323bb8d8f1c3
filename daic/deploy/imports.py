"""What a piece of daic imports, read from the source (no import is executed).

An image must hold every distribution the code it runs imports, and the MNIST files when that code
reads a base split. Without a container engine the images cannot be built here, so their needs are
derived statically: every ``import`` / ``from ... import`` of the entry modules and, transitively, of
each daic module they reach -- including imports inside functions, which daic uses to keep heavy
libraries lazy (an over-approximation on purpose: a lazy import on a rarely taken path still fails
in the image when that path is taken). ``if TYPE_CHECKING:`` blocks are skipped.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: daic's packages and the folder each lives in (setup.py's package_dir).
PACKAGE_DIRS = {"daic.components": ROOT / "components", "daic.pipelines": ROOT / "pipelines",
                "daic.operators": ROOT / "operators", "daic": ROOT / "daic"}
#: The module whose use means "reads a base split" (the MNIST / Fashion-MNIST files).
DATA_MODULE = "daic.data.mnist"


def module_file(module: str) -> Path | None:
    """The source file of a daic module (package ``__init__`` or module file), or None."""
    for prefix, folder in PACKAGE_DIRS.items():
        if module == prefix or module.startswith(prefix + "."):
            rest = module[len(prefix):].lstrip(".").split(".") if module != prefix else []
            base = folder.joinpath(*rest) if rest else folder
            for candidate in (base / "__init__.py", base.with_suffix(".py")):
                if candidate.is_file():
                    return candidate
            return None
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, lazy: bool = True) -> set[str]:
    out: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if not lazy and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return  # runs only when called
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in out if name}


@cache
def _tree(module: str) -> ast.AST | None:
    path = module_file(module)
    return None if path is None else ast.parse(path.read_text(), filename=str(path))


@cache
def direct_imports(module: str, lazy: bool = True) -> frozenset[str]:
    """Module names a daic module imports: anywhere in its source (``lazy``), or only what runs
    when it is imported (module level and class bodies, not function bodies)."""
    tree = _tree(module)
    if tree is None:
        return frozenset()
    return frozenset(_imports(tree, module, module_file(module).name == "__init__.py", lazy))


def _is_daic(name: str) -> bool:
    return name == "daic" or name.startswith("daic.")


@dataclass(frozen=True)
class Needs:
    modules: frozenset[str]  # daic modules reached
    external: frozenset[str]  # top-level names of other packages imported (numpy, torch, ...)

    @property
    def reads_base_split(self) -> bool:
        return DATA_MODULE in self.modules


def needs(entries: list[str], lazy: bool = True) -> Needs:
    """The daic modules reachable from ``entries`` and the external top-level packages they import.

    ``lazy``: follow imports inside functions everywhere (everything any path may import); else
    follow them only in the entry modules themselves (what running the entries' functions imports
    before they call into other modules: a KFP component's body, a command) and module-level
    imports from there on. A name such as ``daic.training.loop.fit`` (an attribute, not a module)
    resolves to its module; importing ``a.b.c`` imports the packages ``a`` and ``a.b`` as well."""
    seen: set[str] = set()
    external: set[str] = set()
    roots = set(entries)
    todo = list(entries)
    while todo:
        name = todo.pop()
        if not _is_daic(name):
            external.add(name.split(".")[0])
            continue
        parts = name.split(".")
        # the longest prefix that is a module, plus every package above it
        for i in range(len(parts), 0, -1):
            candidate = ".".join(parts[:i])
            if module_file(candidate) is not None:
                break
        else:
            continue
        for j in range(1, i + 1):
            module = ".".join(parts[:j])
            if module in seen or module_file(module) is None:
                continue
            seen.add(module)
            todo.extend(direct_imports(module, lazy or module in roots))
    return Needs(frozenset(seen), frozenset(external))


def _dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(line: str) -> tuple[str, set[str], str]:
    """(name, extras, marker) of a ``Requires-Dist`` line."""
    spec, _, marker = line.partition(";")
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(\[([^\]]*)\])?", spec)
    if not m:
        return "", set(), marker
    extras = {e.strip() for e in (m.group(3) or "").split(",") if e.strip()}
    return m.group(1), extras, marker


def _marker_extra(marker: str) -> str | None:
    m = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
    return m.group(1) if m else None


def project_requirements(extras: set[str], setup_py: Path = ROOT / "setup.py") -> list[str]:
    """daic's own requirements with ``extras``, read from setup.py's source (``install_requires`` and
    ``EXTRAS``), not from an installed copy's metadata, which lags behind an edit until reinstalled."""
    tree = ast.parse(setup_py.read_text())
    names: dict[str, object] = {}

    def value(node: ast.AST):
        if isinstance(node, ast.Name):
            return names[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values)}
        raise ValueError(f"setup.py: cannot read {ast.dump(node)[:80]}")

    install: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                names[node.targets[0].id] = value(node.value)
            except (ValueError, KeyError):
                pass
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            for kw in node.value.keywords:
                if kw.arg == "install_requires":
                    install = value(kw.value)
    extra_map = names.get("EXTRAS", {})
    unknown = extras - set(extra_map)
    if unknown:
        raise ValueError(f"setup.py has no extra(s) {sorted(unknown)}")
    return list(install) + [req for extra in sorted(extras) for req in extra_map[extra]]


def provided_modules(requirements: list[str], alone: list[str] = ()) -> dict[str, str]:
    """Top-level import names the installed closure of ``requirements`` provides, each with the
    distribution providing it; read from this environment's installed metadata. A requirement is
    ``name`` or ``name[extra,...]``; extras of a distribution pull in its matching ``Requires-Dist``
    lines; environment markers other than ``extra`` are taken as true (Linux, CPython 3.11).
    ``alone``: installed without dependencies (``pip install --no-deps``): their own modules only."""
    from importlib import metadata

    by_dist: dict[str, list[str]] = {}
    for top, dists in metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(_dist_key(dist), []).append(top)
    seen: set[tuple[str, str]] = set()
    provided: dict[str, str] = {}
    for req in alone:
        name = _requirement(req)[0]
        for top in by_dist.get(_dist_key(name), []):
            provided.setdefault(top, name)
    todo = []
    for req in requirements:
        name, extras, _ = _requirement(req)
        if _dist_key(name) == "daic":  # the project itself: its requirements as setup.py states them
            provided["daic"] = "daic"
            todo += [_requirement(r)[:2] for r in project_requirements(extras)]
        else:
            todo.append((name, extras))
    while todo:
        name, extras = todo.pop()
        key = _dist_key(name)
        for extra in extras | {""}:
            if (key, extra) in seen:
                continue
            seen.add((key, extra))
            try:
                dist = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                continue
            if extra == "":
                for top in by_dist.get(key, []):
                    provided.setdefault(top, name)
            for line in dist.requires or []:
                req, req_extras, marker = _requirement(line)
                wanted = _marker_extra(marker)
                if (wanted or "") == extra and req:
                    todo.append((req, req_extras))
    return provided
