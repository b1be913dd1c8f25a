"""The structural rules of the house, in one place, read from the code itself (ast), without running it:

- common/ (and every module outside the backends) imports neither torch nor paddle;
- the two backends are mirror images, and both implement backends/interface.py part for part, with the
  interface's signatures;
- engines reach a backend's parts only through backends.load(name, part);
- code and tests import only the installed namespace `dualbench`, in import statements and in strings
  (subprocess code, `python -m`), never the folder names common/, backends/, benchmarks/;
- no import circle anywhere in the package; no function over 100 lines;
- every package folder is installed, and the wheel claims only `dualbench`.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = {"benchmarks": "dualbench", "common": "dualbench.common", "backends": "dualbench.backends"}
FOLDERS = tuple(INSTALLED)
MAX_FUNCTION_LINES = 100


def package_modules():
    """{installed module name: path} of every module of the package."""
    modules = {}
    for top, name in INSTALLED.items():
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT / top).with_suffix("").parts
            modules[".".join((name, *parts[:-1])) if parts[-1] == "__init__" else ".".join((name, *parts))] = path
    return modules


def source_files(tops=FOLDERS + ("tests",)):
    return [path for top in tops for path in sorted((ROOT / top).rglob("*.py"))]


# ---------------------------------------------------------------------------------------------
# Frameworks stay in the backends


def test_nothing_outside_the_backends_imports_a_framework():
    """Import every module of common/ and benchmarks/ (and build the CLI) in a fresh process: neither torch
    nor paddle may be loaded, so the CLI starts fast and works with one framework missing."""
    modules = sorted(m for m in package_modules()
                     if not re.match(r"dualbench\.backends\.(torch|paddle)\b", m) and not m.endswith("__main__"))
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "import dualbench.cli; dualbench.cli.build_parser()\n"
            "bad = [m for m in ('torch', 'paddle') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(modules) > 60


def test_common_names_no_framework_even_lazily():
    """common/ holds no `import torch` / `import paddle` at all, not even inside a function."""
    bad = []
    for path in (ROOT / "common").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("torch", "paddle")]
    assert bad == []


# ---------------------------------------------------------------------------------------------
# The backend interface


def signature(function):
    """(positional parameters with defaults as source text, keyword-only ones, *args, **kwargs) of an ast def,
    without `self`."""
    args = function.args
    positional = [a.arg for a in args.posonlyargs + args.args if a.arg != "self"]
    defaults = [ast.unparse(d) for d in args.defaults]
    positional = positional[:len(positional) - len(defaults)] + [
        f"{name}={default}" for name, default in zip(positional[len(positional) - len(defaults):], defaults)]
    keyword = [f"{a.arg}={ast.unparse(d)}" if d is not None else a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    return (tuple(positional), tuple(keyword), args.vararg and args.vararg.arg, args.kwarg and args.kwarg.arg)


def public_functions(path):
    tree = ast.parse(Path(path).read_text())
    return {n.name: signature(n) for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}


def public_assignments(path):
    names = set()
    for node in ast.parse(Path(path).read_text()).body:
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name) and not t.id.startswith("_")}
    return names


def public_classes(path):
    return {n.name for n in ast.parse(Path(path).read_text()).body
            if isinstance(n, ast.ClassDef) and not n.name.startswith("_")}


def interface():
    """{part: ({method: signature}, {attribute})} from backends/interface.py's Protocols."""
    tree = ast.parse((ROOT / "backends" / "interface.py").read_text())
    parts = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "PARTS" for t in n.targets))
    classes = {n.name.lower(): n for n in tree.body if isinstance(n, ast.ClassDef)}
    out = {}
    for part in parts:
        body = classes[part].body
        out[part] = ({n.name: signature(n) for n in body if isinstance(n, ast.FunctionDef)},
                     {n.target.id for n in body if isinstance(n, ast.AnnAssign)})
    return out


def test_the_interface_names_every_part_of_both_backends():
    torch_dir, paddle_dir = ROOT / "backends" / "torch", ROOT / "backends" / "paddle"
    modules = sorted(p.stem for p in torch_dir.glob("*.py") if p.stem != "__init__")
    assert modules == sorted(p.stem for p in paddle_dir.glob("*.py") if p.stem != "__init__")
    assert modules == sorted(interface())


@pytest.mark.parametrize("part", sorted(interface()))
def test_both_backends_implement_the_interface_with_its_signatures(part):
    methods, attributes = interface()[part]
    assert methods, f"interface.{part.capitalize()} lists no function"
    for name in ("torch", "paddle"):
        path = ROOT / "backends" / name / f"{part}.py"
        assert public_functions(path) == methods, f"backends/{name}/{part}.py differs from the interface"
        assert attributes <= public_assignments(path), f"backends/{name}/{part}.py lacks {attributes}"


def test_backends_are_mirror_images_in_their_public_classes_and_constants():
    for path in (ROOT / "backends" / "torch").glob("*.py"):
        twin = ROOT / "backends" / "paddle" / path.name
        assert public_classes(path) == public_classes(twin), path.name
        assert public_assignments(path) == public_assignments(twin), path.name


def test_parts_are_reached_only_through_backends_load():
    """No `dualbench.backends.<name>.<part>` built from a string (f-strings, importlib) outside backends/."""
    bad = []
    for path in source_files(("benchmarks", "common", "tests")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr) and "dualbench.backends." in ast.unparse(node):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert bad == []


def test_load_gives_the_parts_the_interface_names():
    from dualbench import backends
    from dualbench.backends.interface import PARTS
    if not backends.is_installed("torch"):
        pytest.skip("torch not installed")
    for part in PARTS:
        module = backends.load("torch", part)
        assert module.__name__ == "dualbench.backends.torch." + part
    with pytest.raises(ValueError, match="unknown backend part"):
        backends.load("torch", "nothing")


# ---------------------------------------------------------------------------------------------
# Only the installed namespace


# import statements inside code strings (a line's or a ';'-separated statement's start), `python -m X`,
# import_module("X"), and a string that is nothing but a module path (an argument after "-m")
FOLDER_IMPORT_IN_TEXT = re.compile(
    r"(?m)(?:(?:^|;)\s*import\s+(?:[\w.]+\s*,\s*)*|(?:^|;)\s*from\s+|-m\s+|import_module\(\s*['\"])"
    r"(?:common|benchmarks|backends)\b[\w.]*")
FOLDER_MODULE = re.compile(r"^(?:common|benchmarks|backends)\.(?!(?:csv|md|py|json|txt)$)[a-z_][\w.]*$")


def test_code_and_tests_import_only_the_dualbench_namespace():
    """An import of the bare folder names works in the checkout but not once installed (and loads modules
    twice): refused in import statements and in strings (subprocess code, `python -m`, import_module)."""
    bad = []
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                bad += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in FOLDERS]
            elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in FOLDERS:
                bad.append(f"{where}: from {node.module}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if FOLDER_MODULE.match(text.strip()) or FOLDER_IMPORT_IN_TEXT.search(text):
                    bad.append(f"{where}: {text.strip()[:80]!r}")
    assert bad == []


# The examples name the folders through placeholders, so that this file passes its own rule.
REFUSED_EXAMPLES = ("import sys, {c}.parity_rules", "python -m {b}.cli", "from {k} import torch",
                    "{b}.data_cmd", "x = 1; import {c}", "importlib.import_module('{c}.tasks')")
ALLOWED_EXAMPLES = ("import dualbench.{c}.tasks", "statistics come from {c}.stats", "{k}.csv",
                    "from dualbench import {k}", "python -m dualbench.cli")


def test_the_folder_name_rule_catches_what_it_should():
    folders = {"c": "common", "b": "benchmarks", "k": "backends"}
    for text in (example.format(**folders) for example in REFUSED_EXAMPLES):
        assert FOLDER_MODULE.match(text) or FOLDER_IMPORT_IN_TEXT.search(text), text
    for text in (example.format(**folders) for example in ALLOWED_EXAMPLES):
        assert not FOLDER_MODULE.match(text) and not FOLDER_IMPORT_IN_TEXT.search(text), text


# ---------------------------------------------------------------------------------------------
# Import circles, function size


def dualbench_imports():
    """{module: dualbench modules it imports (anywhere in it)} for every module of the package."""
    modules = package_modules()
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


def circles(graph):
    found = []
    for start in graph:
        stack = [(start, [start])]
        while stack:
            module, path = stack.pop()
            for dep in graph[module]:
                if dep == start:
                    found.append(" -> ".join(path + [dep]))
                elif dep not in path and len(path) < 8:
                    stack.append((dep, path + [dep]))
    return found


def test_no_module_imports_one_that_imports_it():
    """Lazy imports inside functions count too: a circle is a circle, whenever it closes."""
    graph = dualbench_imports()
    assert len(graph) > 60
    assert circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()})
    assert not circles({"a": {"b"}, "b": set()})


def test_no_function_is_over_100_lines():
    long = []
    for path in source_files(FOLDERS):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.name} {length} lines")
    assert long == []


# ---------------------------------------------------------------------------------------------
# Installation


def package_folders():
    """Every folder of common/, backends/ and benchmarks/ that is a package, as its installed name."""
    names = set()
    for top, name in INSTALLED.items():
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / top).parts
            names.add(".".join((name, *parts)))
    return names


def test_every_package_folder_is_installed():
    import tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == package_folders()
    assert config["package-dir"] == {name: folder for folder, name in INSTALLED.items()}


def test_installed_wheel_claims_only_dualbench(tmp_path):
    """Build the wheel a `pip install` would install: one top-level package, `dualbench`."""
    import shutil
    import zipfile
    source = tmp_path / "src"   # setuptools writes build/ beside the sources: keep it out of the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in FOLDERS:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(tmp_path)], check=False, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel offline here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("dualbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"dualbench"}
    for module in ("dualbench/cli.py", "dualbench/common/tasks.py", "dualbench/backends/torch/models.py",
                   "dualbench/backends/interface.py", "dualbench/common/data/catalog.py",
                   "dualbench/report/sections.py", "dualbench/parity/conventions/rules.py"):
        assert module in names
    assert package_folders() == {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}


def test_outside_the_checkout_only_dualbench_imports(tmp_path):
    code = ("import importlib.util as u, dualbench.cli, dualbench.common.tasks\n"
            "print([n for n in ('common', 'backends', 'benchmarks') if u.find_spec(n)])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
