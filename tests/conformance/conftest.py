"""Fixtures of the conformance suite (docs/conformance.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import convert, runner


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "conformance: the Autobahn|Testsuite run against wsserver (minutes; deselect with -m 'not conformance')",
    )


@pytest.fixture(scope="session")
def autobahn_caseset(request: pytest.FixtureRequest):
    """Autobahn's CaseSet over the converted case classes (pip-installs the package once if needed)."""
    cache_provider = getattr(request.config, "cache", None)
    cache = Path(cache_provider.mkdir("autobahn-conformance")) if cache_provider else runner.DEFAULT_CACHE
    try:
        caseset, _version = runner.load_cases(cache)
    except convert.ConversionError as exc:
        pytest.fail(f"cannot load the Autobahn|Testsuite cases: {exc}")
    return caseset
