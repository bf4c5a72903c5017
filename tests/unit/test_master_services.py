"""The master's services and the view they get of it (prefork/service.py): shapes only, no process."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from wsserver.admin.supervisor import AdminSupervisor
from wsserver.prefork import service
from wsserver.prefork.arbiter import MasterHandle, Worker
from wsserver.prefork.status import StatusServer

PACKAGE = Path(__file__).resolve().parents[2] / "wsserver"
# What prefork/ offers the processes and services above it; the rest of it is the master's own.
PREFORK_PUBLIC = {"wsserver.prefork.service", "wsserver.prefork.relay", "wsserver.prefork.child"}


def _members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")}


def test_the_handle_offers_every_member_of_the_view_and_the_control():
    for protocol in (service.MasterView, service.MasterControl):
        missing = {name for name in _members(protocol) if not hasattr(MasterHandle, name)}
        assert not missing, f"MasterHandle lacks {protocol.__name__} members: {missing}"


def test_a_worker_record_is_a_worker_view():
    fields = set(Worker.__dataclass_fields__)
    assert _members(service.WorkerView) <= fields


def test_services_override_only_methods_of_the_interface_with_its_signatures():
    interface = {
        name: inspect.signature(fn)
        for name, fn in vars(service.MasterService).items()
        if callable(fn) and not name.startswith("_")
    }
    for cls in (StatusServer, AdminSupervisor):
        assert issubclass(cls, service.MasterService)
        for name, signature in interface.items():
            own = vars(cls).get(name)
            if own is not None:
                assert list(inspect.signature(own).parameters) == list(signature.parameters), (cls, name)


def test_admin_uses_only_the_public_part_of_prefork():
    for path in sorted((PACKAGE / "admin").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = (
                    [node.module]
                    if node.module != "wsserver.prefork"
                    else [f"wsserver.prefork.{alias.name}" for alias in node.names]
                )
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("wsserver.prefork"):
                    assert name in PREFORK_PUBLIC, f"{path.name} imports {name}"
