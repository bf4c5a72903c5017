"""deploy/ files checked by the real tools (systemd-analyze verify, haproxy -c) where they are installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.unit.test_deploy import DEPLOY

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path):
    text = (
        (DEPLOY / "wsserver.service").read_text().replace("/opt/wsserver/bin/wsserver", shutil.which("true"))
    )
    path = tmp_path / "wsserver.service"
    path.write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60
    )
    ours = [line for line in (out.stdout + out.stderr).splitlines() if str(path) in line]
    assert out.returncode == 0 and ours == [], "\n".join(ours)


def test_haproxy_example():
    text = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    assert "option httpchk GET /healthz" in text and "http-check expect status 200" in text
    if shutil.which("haproxy"):
        out = subprocess.run(
            ["haproxy", "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stdout + out.stderr
