"""Architecture rules: common is framework-free, the two backends are mirror images."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_common_imports_no_framework():
    modules = sorted("common." + ".".join(p.relative_to(ROOT / "common").with_suffix("").parts)
                     for p in (ROOT / "common").rglob("*.py") if p.name != "__init__.py")
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "import dualbench.cli; dualbench.cli.build_parser()\n"
            "bad = [m for m in ('torch', 'paddle') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def public_names(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_")}


def test_backends_are_mirror_images():
    torch_dir, paddle_dir = ROOT / "backends" / "torch", ROOT / "backends" / "paddle"
    torch_files = sorted(p.name for p in torch_dir.glob("*.py"))
    assert torch_files == sorted(p.name for p in paddle_dir.glob("*.py"))
    for name in torch_files:
        if name == "__init__.py":
            continue
        assert public_names(torch_dir / name) == public_names(paddle_dir / name), name


def package_folders():
    """Every folder of common/, backends/ and benchmarks/ that is a package, as its installed name."""
    installed = {"benchmarks": "dualbench", "common": "dualbench.common", "backends": "dualbench.backends"}
    names = set()
    for top, name in installed.items():
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / top).parts
            names.add(".".join((name, *parts)))
    return names


def test_every_package_folder_is_installed():
    import tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == package_folders()


def test_code_imports_only_the_dualbench_namespace():
    """An import of the bare folder names works in the checkout but not once installed."""
    bad = []
    for top in ("common", "backends", "benchmarks", "tests"):
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                bad += [f"{path.relative_to(ROOT)}: {n}" for n in names
                        if n.split(".")[0] in ("common", "backends", "benchmarks")]
    assert bad == []


def test_installed_wheel_claims_only_dualbench(tmp_path):
    """Build the wheel a `pip install` would install: one top-level package, `dualbench`."""
    import shutil
    import zipfile
    source = tmp_path / "src"   # setuptools writes build/ beside the sources: keep it out of the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("common", "backends", "benchmarks"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel offline here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("dualbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"dualbench"}
    for module in ("dualbench/cli.py", "dualbench/common/tasks.py", "dualbench/backends/torch/models.py",
                   "dualbench/backends/paddle/models.py", "dualbench/common/data/idx.py"):
        assert module in names


def test_outside_the_checkout_only_dualbench_imports(tmp_path):
    code = ("import importlib.util as u, dualbench.cli, dualbench.common.tasks\n"
            "print([n for n in ('common', 'backends', 'benchmarks') if u.find_spec(n)])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def dualbench_imports():
    """{module: dualbench modules it imports (anywhere in it)} for every module of the package."""
    modules = {}
    for top, name in (("benchmarks", "dualbench"), ("common", "dualbench.common"), ("backends", "dualbench.backends")):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT / top).with_suffix("").parts
            modules[".".join((name, *parts[:-1])) if parts[-1] == "__init__" else ".".join((name, *parts))] = path
    graph = {}
    for module, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dualbench"):
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("dualbench")}
        # a package's __init__ re-exporting its own modules is not a dependency on them
        graph[module] = {m for m in found if m in modules and m != module and not m.startswith(module + ".")}
    return graph


def test_engine_modules_import_no_circle():
    """bench and report, parity's modules: no module needs one that needs it (common.data excepted, for now)."""
    graph = dualbench_imports()
    circles = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            module, path = stack.pop()
            for dep in graph[module]:
                if dep == start:
                    circles.append(" -> ".join(path + [dep]))
                elif dep not in path and len(path) < 8:
                    stack.append((dep, path + [dep]))
    assert [c for c in circles if not c.startswith("dualbench.common.data")] == []
