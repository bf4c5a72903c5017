"""Rules of the house that a reader relies on (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "wsserver"
LONG = 500  # lines


def test_a_long_module_says_why_it_is_one_module() -> None:
    """A module over 500 lines states, in its docstring, why it is not split along a seam."""
    silent = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") <= LONG:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "Why one long module:" not in doc and "The file is long because" not in doc:
            silent.append(f"{path.relative_to(PACKAGE.parent)} ({text.count(chr(10))} lines)")
    assert not silent, f"split these, or say why they are one module: {silent}"
