"""Architecture rules: common is framework-free, the two backends are mirror images."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_common_imports_no_framework():
    modules = sorted("common." + ".".join(p.relative_to(ROOT / "common").with_suffix("").parts)
                     for p in (ROOT / "common").rglob("*.py") if p.name != "__init__.py")
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "import benchmarks.cli; benchmarks.cli.build_parser()\n"
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
