"""storage/compat/ as a whole: every module names the versions it was checked against and they are
the installed ones, and no code outside it reaches for a private name of another object."""

import ast
import importlib
import importlib.metadata
import pkgutil
import sys
from pathlib import Path

import pytest

import storage.compat

ROOT = Path(__file__).resolve().parents[4]
COMPAT = ROOT / "storage" / "compat"
SCANNED = ("app", "ingest", "storage", "bench")
FIRST_PARTY = {"app", "ingest", "storage", "tests"} | {p.stem for p in (ROOT / "bench").glob("*.py")}
# namedtuple's public API, and os._exit, are spelled with an underscore on purpose.
PUBLIC_UNDERSCORED = {"_replace", "_asdict", "_fields", "_make", "_exit"}
MODULES = [importlib.import_module(f"storage.compat.{m.name}") for m in pkgutil.iter_modules(storage.compat.__path__)]


def test_every_compat_module_names_what_it_was_checked_against():
    assert MODULES
    for module in MODULES:
        assert isinstance(getattr(module, "VERIFIED", None), dict) and module.VERIFIED, module.__name__


@pytest.mark.parametrize(
    "module, package, version",
    [(m.__name__, package, version) for m in MODULES for package, version in m.VERIFIED.items()],
)
def test_the_installed_version_is_the_one_the_internals_were_checked_against(module, package, version):
    installed = importlib.metadata.version(package)
    assert installed == version, (
        f"{package} {installed} is installed, {module} was checked against {version}: run its contract test "
        f"(tests/*/storage/compat/test_{module.rsplit('.', 1)[1]}.py), re-read what each function relies on, "
        "then update VERIFIED"
    )


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in PUBLIC_UNDERSCORED


def _third_party(module: str | None) -> bool:
    top = (module or "").split(".")[0]
    return top not in FIRST_PARTY and top not in sys.stdlib_module_names


def private_uses(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name)
                for a in node.names
                if _third_party(a.name) and any(map(_is_private, a.name.split(".")))
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _third_party(node.module):
            names = node.module.split(".") + [a.name for a in node.names]
            if any(map(_is_private, names)):
                found.append((node.lineno, f"from {node.module} import {', '.join(a.name for a in node.names)}"))
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, f"{ast.unparse(node.value)}.{node.attr}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
        ):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_private_names_are_reached_only_through_storage_compat():
    offences = []
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            if COMPAT in path.parents:
                continue
            offences += [
                f"{path.relative_to(ROOT)}:{line}: {what}"
                for line, what in private_uses(ast.parse(path.read_text(), str(path)))
            ]
    assert not offences, (
        "private names of other objects; a library's belong behind storage/compat/ "
        "(one function, one contract test), Sluice's own should be made public:\n" + "\n".join(offences)
    )


def test_the_scan_sees_each_kind_of_private_use():
    code = (
        "from mcp.shared._httpx_utils import f\nimport aiokafka.record._crecords\nfrom redis import _parsers\n"
        "p._partitioner(k)\nself._own\ngetattr(t, '_pool')\nparts._replace(path='/')\nfrom ._x import y\n"
    )
    assert sorted(line for line, _ in private_uses(ast.parse(code))) == [1, 2, 3, 4, 6]
