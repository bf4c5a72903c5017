"""Turn the Python 2 case modules of the installed Autobahn|Testsuite into importable Python 3.

The cases themselves (``autobahntestsuite/case/*.py``: what to send, what to expect, how to judge) and
Autobahn's case list and ordering (``case/__init__.py``, ``caseset.py``) are used as shipped; only
their Python 2 idioms are translated, into a cache directory that is never committed:

1. The sources are read as latin-1, so every Python 2 byte-string literal keeps its octets (see
   :mod:`tests.conformance.abshim.compat`).
2. lib2to3 with its standard fixers (``print``, ``xrange``, ``unichr``, ``u""``, relative imports,
   ``has_key``, ...).
3. An AST pass for what lib2to3 leaves as is: ``a / b`` is Python 2 integer division (``//``);
   ``type(name, (object, Case), ...)`` gets a consistent MRO; ``x.encode()`` / ``x.decode()`` keep
   byte-string semantics; ``autobahn.websocket.*`` / Twisted / zope imports go to
   :mod:`tests.conformance.abshim`; ``binascii`` and ``hashlib`` accept byte strings;
   ``pkg_resources`` finds the shipped test data (copied next to the converted modules).

The package itself comes from an installed ``autobahntestsuite`` distribution if there is one, else
``pip install --no-deps`` puts it into the cache directory (its Python 2 dependencies are not needed).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

DIST = "autobahntestsuite"
VERSION = "25.10.1"
OUT_PACKAGE = "abts_py3"
SHIM = "tests.conformance.abshim"

# import from these modules -> import from the shim (module-level names only)
MODULE_MAP = {
    "autobahn.websocket.protocol": f"{SHIM}.protocol",
    "autobahn.websocket.compress": f"{SHIM}.compress",
    "autobahn.websocket.utf8validator": f"{SHIM}.utf8validator",
    "zope.interface": f"{SHIM}.stubs",
    "twisted.internet": f"{SHIM}.stubs",
}
# ``import X`` -> ``from Y import X``
IMPORT_MAP = {
    "binascii": f"{SHIM}.compat",
    "hashlib": f"{SHIM}.compat",
    "pkg_resources": OUT_PACKAGE,  # OUT_PACKAGE/__init__ defines a tiny pkg_resources
}

PKG_INIT = '''"""Autobahn|Testsuite {version} case modules converted to Python 3 (generated, do not edit)."""

import os as _os
from types import SimpleNamespace as _NS

_ROOT = _os.path.dirname(_os.path.abspath(__file__))
SOURCE = {source!r}
VERSION = {version!r}


def _resource_filename(package, name):
    return _os.path.join(_ROOT, name)


pkg_resources = _NS(resource_filename=_resource_filename)
'''


class ConversionError(RuntimeError):
    pass


def locate_package(cache_dir: Path, install: bool = True) -> Path:
    """The ``autobahntestsuite`` package directory (installed here, or pip-installed into the cache)."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        path = Path(str(dist.locate_file(DIST)))
        if (path / "case" / "case.py").is_file():
            return path
    target = cache_dir / f"pip-{DIST}-{VERSION}"
    path = target / DIST
    if (path / "case" / "case.py").is_file():
        return path
    if not install:
        raise ConversionError(f"{DIST} is not installed and installing was not allowed")
    tmp = cache_dir / f"pip-{DIST}-{VERSION}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-compile",
        "--target",
        str(tmp),
        f"{DIST}=={VERSION}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0 or not (tmp / DIST / "case" / "case.py").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConversionError(f"pip could not install {DIST}=={VERSION}:\n{proc.stdout}\n{proc.stderr}")
    _publish(tmp, target, path / "case" / "case.py")
    return path


def _publish(tmp: Path, final: Path, marker: Path) -> None:
    """Move a finished build into place; another process that got there first wins (no deleting under it)."""
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not marker.is_file():
            raise


def _sources(pkg: Path) -> list[Path]:
    return [pkg / "caseset.py", *sorted((pkg / "case").glob("*.py"))]


def _cache_key(pkg: Path) -> str:
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    for path in _sources(pkg):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


_TOOL = None


def _lib2to3(text: str, filename: str) -> str:
    global _TOOL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if _TOOL is None:
            from lib2to3 import refactor

            fixers = refactor.get_fixers_from_package("lib2to3.fixes")
            _TOOL = refactor.RefactoringTool(fixers, options={"print_function": False})
        tree = _TOOL.refactor_string(text, filename)
    return str(tree)


class _Py2Semantics(ast.NodeTransformer):
    def __init__(self) -> None:
        self.uses_helpers = False

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Div):  # Python 2: int / int is floor division
            node.op = ast.FloorDiv()
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("encode", "decode"):
            self.uses_helpers = True
            return ast.Call(
                func=ast.Name(id=f"_py2_{func.attr}", ctx=ast.Load()),
                args=[func.value, *node.args],
                keywords=node.keywords,
            )
        if (
            isinstance(func, ast.Name)
            and func.id == "type"
            and len(node.args) == 3
            and isinstance(node.args[1], ast.Tuple)
        ):
            bases = node.args[1].elts
            kept = [b for b in bases if not (isinstance(b, ast.Name) and b.id == "object")]
            if kept and len(kept) != len(bases):
                node.args[1].elts = kept
        return node

    def visit_Import(self, node: ast.Import) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        plain = []
        for alias in node.names:
            if alias.name in IMPORT_MAP:
                out.append(
                    ast.ImportFrom(
                        module=IMPORT_MAP[alias.name],
                        names=[ast.alias(name=alias.name, asname=alias.asname)],
                        level=0,
                    )
                )
            elif alias.name.split(".")[0] in ("twisted", "zope", "autobahn"):
                raise ConversionError(f"unmapped import {alias.name!r}")
            else:
                plain.append(alias)
        if plain:
            out.insert(0, ast.Import(names=plain))
        return out

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.ImportFrom:
        if node.level == 0 and node.module in MODULE_MAP:
            node.module = MODULE_MAP[node.module]
        elif node.level == 0 and node.module and node.module.split(".")[0] in ("twisted", "zope", "autobahn"):
            raise ConversionError(f"unmapped import from {node.module!r}")
        return node


def convert_source(text: str, filename: str) -> str:
    """One Python 2 module (already decoded as latin-1) -> Python 3 source."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    py3 = _lib2to3(text, filename)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # e.g. invalid escapes like '\.' in caseset.py (unparse normalizes them)
        tree = ast.parse(py3, filename)
    sem = _Py2Semantics()
    tree = sem.visit(tree)
    if sem.uses_helpers:
        helper = ast.ImportFrom(
            module=f"{SHIM}.compat",
            names=[ast.alias(name="_py2_encode"), ast.alias(name="_py2_decode")],
            level=0,
        )
        index = 0
        body = tree.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
        ):
            index = 1
        while (
            index < len(body)
            and isinstance(body[index], ast.ImportFrom)
            and body[index].module == "__future__"
        ):
            index += 1
        body.insert(index, helper)
    ast.fix_missing_locations(tree)
    header = f"# Generated from {DIST} {VERSION} {Path(filename).name} by tests/conformance/convert.py.\n"
    return header + ast.unparse(tree) + "\n"


def convert(pkg: Path, cache_dir: Path) -> Path:
    """Convert once per (package, converter) version; returns the directory to put on ``sys.path``."""
    root = cache_dir / f"py3-{_cache_key(pkg)}"
    if (root / OUT_PACKAGE / ".complete").is_file():
        return root
    tmp = cache_dir / f"{root.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    out = tmp / OUT_PACKAGE
    (out / "case").mkdir(parents=True)
    (out / "__init__.py").write_text(PKG_INIT.format(version=VERSION, source=str(pkg)), encoding="utf-8")
    for src in _sources(pkg):
        dest = out / src.relative_to(pkg)
        text = src.read_bytes().decode("latin-1")
        dest.write_text(convert_source(text, str(src)), encoding="utf-8")
    shutil.copytree(pkg / "testdata", out / "testdata")
    (out / ".complete").write_text(VERSION)
    _publish(tmp, root, root / OUT_PACKAGE / ".complete")
    return root


def load(cache_dir: Path, install: bool = True):
    """Import the converted case package; returns ``(case_module, caseset_module)``."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    pkg = locate_package(cache_dir, install=install)
    root = convert(pkg, cache_dir)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    loaded = sys.modules.get(OUT_PACKAGE)
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(root)):
        raise ConversionError(f"{OUT_PACKAGE} already imported from {loaded.__file__}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        case = importlib.import_module(f"{OUT_PACKAGE}.case")
        caseset = importlib.import_module(f"{OUT_PACKAGE}.caseset")
    return case, caseset
