"""deploy/: the files that cannot run here are linted (no container engine, no systemd as PID 1);
the metric names they use must be ones wsserver defines (a live check is in
tests/integration/test_metrics.py, with promtool)."""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path

from wsserver.config import load_config
from wsserver.metrics import exposed_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent


def known(name: str) -> bool:
    names = set(exposed_names()) | {"up"}
    return name in names or re.sub(r"_(bucket|sum|count)$", "", name) in names


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string((DEPLOY / "wsserver.service").read_text())
    return parser


def test_systemd_unit():
    svc = unit()["Service"]
    assert svc["Type"] in ("simple", "notify")
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert shlex.split(svc["ExecStart"])[1:3] == ["serve", "-c"]
    assert svc["KillSignal"] == "SIGTERM"
    assert int(svc["TimeoutStopSec"]) > 30  # longer than the default graceful_timeout
    assert svc["RestartPreventExitStatus"] == "2"  # EXIT_CONFIG
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
    }.items():
        assert svc[key] == value, key
    assert svc["User"] != "root"
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def containerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "Containerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # line continuations
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_containerfile():
    instructions = containerfile()
    words = [w for w, _ in instructions]
    assert words[0] == "FROM" and re.fullmatch(r"debian:\S+-slim", instructions[0][1])
    assert {"RUN", "COPY", "USER", "EXPOSE", "HEALTHCHECK", "STOPSIGNAL", "ENTRYPOINT", "CMD"} <= set(words)
    args = dict(instructions)
    assert any("pip install" in rest for w, rest in instructions if w == "RUN")
    assert args["USER"].split(":")[0] not in ("root", "0")
    assert "9108" in args["EXPOSE"].split() and "8080" in args["EXPOSE"].split()
    assert args["STOPSIGNAL"] == "SIGTERM"
    assert "/healthz" in args["HEALTHCHECK"]
    assert json.loads(args["CMD"])[0] == "serve" and "wsserver" in args["ENTRYPOINT"]
    for word, rest in instructions:  # what is copied exists
        if word == "COPY":
            source = rest.split()[0]
            assert (REPO / source).exists(), source
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")  # no root at run time


def test_container_config_listens_for_the_outside():
    cfg = load_config(DEPLOY / "wsserver.container.toml")
    assert cfg.metrics.enabled and cfg.metrics.bind == "0.0.0.0" and cfg.metrics.port == 9108
    assert all(p.bind in ("", "0.0.0.0") for p in cfg.active_ports())


def test_grafana_dashboard_uses_only_wsserver_metric_names():
    doc = json.loads((DEPLOY / "grafana" / "wsserver-dashboard.json").read_text())
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    used = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(?:wsserver|process)_[a-z_]+\b", target["expr"]))
    unknown = sorted(n for n in used if not known(n))
    assert unknown == []
    # Every wsserver metric is on the dashboard somewhere.
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert {n for n in exposed_names() if n.startswith("wsserver_")} - shown == {
        "wsserver_health_checks_total"
    }


def test_alert_rules_and_scrape_config_names():
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    used = set(re.findall(r"\b(?:wsserver|process)_[a-z_]+\b", alerts))
    assert sorted(n for n in used if not known(n)) == []
    for alert in (
        "WsserverWorkerRestartStorm",
        "WsserverAllAdapterServersPenalized",
        "WsserverCertificateExpiresSoon",
        "WsserverPoolSaturated",
        "WsserverWorkersBelowTarget",
    ):
        assert f"alert: {alert}" in alerts
    assert "14 * 86400" in alerts
    scrape = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert "127.0.0.1:9108" in scrape and "alerts.yml" in scrape
