"""Fixtures shared by every test directory."""

import pytest

pytest_plugins = ("tests.support.backends",)


@pytest.fixture
def groups():
    """A worker's groups of its own for one test (wsserver.runtime.groups.Groups)."""
    from wsserver.runtime.groups import Groups

    return Groups()
