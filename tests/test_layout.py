"""The codebase's shape: imports point one way without circles, files stay small, packages
export what they say, the README starts with instructions, and no history in code or configs."""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

from helpers import REPO

PACKAGES = ("datamodules", "lightning_modules", "callbacks", "difix3d")


def _tracked(*patterns: str) -> list[str]:
    return subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True).stdout.split()


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in _tracked(*(f"{p}/*.py" for p in PACKAGES)):
        name = path[:-3].replace("/", ".").removesuffix(".__init__")
        out[name] = ast.parse((REPO / path).read_text())
    return out


def _imports(name: str, tree: ast.Module, modules: dict) -> set[str]:
    """Project modules `name` imports, at module level or inside functions (TYPE_CHECKING blocks aside)."""
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    is_package = name in {m for m in modules if any(k.startswith(m + ".") for k in modules)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # package __init__ files export lazily: importing one imports none of its modules
            if target and target != name and not any(k.startswith(target + ".") for k in modules):
                found.add(target)
    return found


def test_no_import_circles() -> None:
    modules = _modules()
    graph = {m: _imports(m, t, modules) for m, t in modules.items()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_datamodules_import_nothing_else_of_the_project() -> None:
    modules = _modules()
    outward = {m: sorted(i for i in _imports(m, t, modules) if not i.startswith("datamodules"))
               for m, t in modules.items() if m.startswith("datamodules")}
    assert not {m: i for m, i in outward.items() if i}, outward


def test_no_python_file_over_400_lines() -> None:
    long = {p: n for p in _tracked("*.py") if (n := len((REPO / p).read_text().splitlines())) > 400}
    assert not long, long


@pytest.mark.parametrize("package", sorted({m for m in _modules() if any(k.startswith(m + ".") for k in _modules())}))
def test_every_package_export_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in getattr(module, "__all__", []):
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_readme_starts_with_set_up_then_the_published_fixer_on_a_users_scene() -> None:
    readme = (REPO / "README.md").read_text()
    sections = re.findall(r"^## (.+)$", readme, flags=re.M)
    assert sections[:3] == ["Set up", "Use the published fixer on your scene", "The offline demo"], sections
    section = readme.split("## Use the published fixer on your scene", 1)[1]
    commands = [ln.strip() for ln in section.splitlines() if ln.startswith("    ") and not ln.strip().startswith("#")]
    assert commands[0].startswith("difix3d fit  --config configs/scene.yaml") and "/path/to/" in commands[0], commands[0]
    assert "--trainer.callbacks.fixer=nvidia/difix_ref" in readme.split("## The offline demo")[0]
    assert "name: nvidia/difix_ref" in (REPO / "configs" / "scene.yaml").read_text()


# A git hash (7-12 hex digits with a letter and a digit, not part of a file name such as
# vgg16-397923af.pth), a "Measured 2026-..." header, or "commit(s) <hash>".
HISTORY = re.compile(r"(?<![-\w./])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,12}(?!\w|\.[a-z])|[Mm]easured (?:on )?20\d\d")


def _docstrings(path: str) -> list[str]:
    tree = ast.parse((REPO / path).read_text())
    return [ast.get_docstring(n) or "" for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_commit_hashes_or_measurement_diaries_in_readme_configs_or_docstrings() -> None:
    texts = {"README.md": (REPO / "README.md").read_text()}
    texts.update({p: (REPO / p).read_text() for p in _tracked("configs/*.yaml")})
    texts.update({f"{p} (docstrings)": "\n".join(_docstrings(p)) for p in _tracked(*(f"{p}/*.py" for p in PACKAGES))})
    found = {name: [m.group(0) for m in HISTORY.finditer(text)] for name, text in texts.items()}
    assert not {k: v for k, v in found.items() if v}, {k: v for k, v in found.items() if v}


# A file or folder of this repository, as docstrings, comments, configs, scripts and docs name one.
PROJECT_PATH = re.compile(r"(?<![\w/.$}{-])((?:datamodules|lightning_modules|callbacks|configs|tests|scripts|benchmarks|"
                          r"difix3d|docs)/[\w./-]*\w)")


def test_named_project_files_exist() -> None:
    """A moved or deleted file takes its mentions along: every path into the repository named in
    its text files exists (placeholders such as ``curate_STRATEGY.yaml``, ``stage{1,2}`` aside)."""
    tracked = set(_tracked())
    folders = {str(parent) for p in tracked for parent in Path(p).parents}
    missing = []
    for path in _tracked("*.py", "*.yaml", "*.sh", "*.md", "*.toml", "Makefile"):
        for number, line in enumerate((REPO / path).read_text().splitlines(), 1):
            for match in PROJECT_PATH.finditer(line):
                name, after = match.group(1), line[match.end():match.end() + 1]
                if re.search(r"[A-Z]{3,}|\*", name) or after in ("{", "$"):
                    continue
                if name not in tracked and name not in folders:
                    missing.append(f"{path}:{number}: {name}")
    assert not missing, missing
