"""The web console: server-rendered HTML pages, one stylesheet and a little JavaScript.

No build step and nothing from a CDN: the pages are f-strings with every value escaped, the
CSS and JS are the two files in ``static/``. Every form that changes something posts the
session's CSRF token and the ETag of the config file the page was rendered from, so a change
made meanwhile by someone else is refused (412) instead of overwritten.

Why one long module: every page uses the same escaping, form and CSRF helpers; each page is a
short function of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import quote

from wsserver.admin.httpd import Response
from wsserver.config import Config, PortConfig
from wsserver.config.settings import Key, describe, keys

STATIC = {
    "/static/console.css": "text/css; charset=utf-8",
    "/static/console.js": "text/javascript; charset=utf-8",
}
NAV = (("Ports", "/ports"), ("Packages", "/packages"), ("Sessions", "/sessions"), ("Workers", "/workers"))


@dataclass
class FormContext:
    csrf: str
    etag: str

    def hidden(self) -> str:
        return (
            f'<input type="hidden" name="csrf" value="{escape(self.csrf)}">'
            f'<input type="hidden" name="etag" value="{escape(self.etag)}">'
        )


def static(path: str) -> Response:
    if path not in STATIC:
        return Response(404, b"not found\n")
    data = resources.files("wsserver.admin").joinpath("static", path.rsplit("/", 1)[1]).read_bytes()
    return Response(200, data, STATIC[path])


def html(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), "text/html; charset=utf-8")


def _e(value: Any) -> str:
    return escape(str(value))


def _page(title: str, body: str, nav: str = "") -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)} · wsserver admin</title><link rel="stylesheet" href="/static/console.css">'
        f'<script src="/static/console.js" defer></script></head>'
        f'<body><header><span class="brand">wsserver admin</span>{nav}</header>'
        f"<main><h1>{_e(title)}</h1>{body}</main></body></html>\n"
    )


def layout(title: str, body: str, user: str, csrf: str) -> str:
    links = "".join(
        f'<a href="{href}"{" class=current" if name == title else ""}>{name}</a>' for name, href in NAV
    )
    logout = (
        f'<form method="post" action="/logout" class="inline">'
        f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
        f'<button class="link" type="submit">Log out {_e(user)}</button></form>'
    )
    return _page(title, body, f'<nav>{links}</nav><span class="user">{logout}</span>')


def error_page(status: int, message: str, errors: list[str]) -> bytes:
    body = (
        f'<p class="error">{_e(message)}</p>{_errors(errors)}<p><a href="/ports">Back to the console</a></p>'
    )
    return _page(f"Error {status}", body).encode()


def login_page(target: str, message: str = "") -> str:
    error = f'<p class="error" id="login-error">{_e(message)}</p>' if message else ""
    body = (
        f'{error}<form method="post" action="/login?next={quote(target)}" class="login">'
        f'<label>User <input name="user" id="user" autocomplete="username" required autofocus></label>'
        f'<label>Password <input name="password" id="password" type="password" '
        f'autocomplete="current-password" required></label>'
        f'<button type="submit" id="login">Log in</button></form>'
    )
    return _page("Log in", body)


NOTICES = {
    "saved": "Port {} saved and applied.",
    "unchanged": "Port {}: nothing changed.",
    "enabled": "{} enabled.",
    "disabled": "{} disabled.",
    "deleted": "Port {} deleted.",
    "access-reset": "Port {}: endpoint access reset to the default (allow every endpoint).",
    "closed": "Session {} closed.",
    "reloaded": "Reload complete: generation {}.",
}


def notice_text(query: dict[str, str]) -> str:
    template = NOTICES.get(query.get("done", ""))
    return template.format(query.get("name", "")) if template else ""


def _notice(notice: str) -> str:
    return f'<p class="notice" id="notice">{_e(notice)}</p>' if notice else ""


def _errors(errors: list[str]) -> str:
    if not errors:
        return ""
    items = "".join(f"<li>{_e(line)}</li>" for line in errors)
    return f'<div class="error" id="errors"><ul>{items}</ul></div>'


def _button_form(
    action: str,
    ctx: FormContext,
    label: str,
    fields: dict[str, str] | None = None,
    css: str = "",
    confirm: str = "",
    element_id: str = "",
    title: str = "",
) -> str:
    extra = "".join(
        f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in (fields or {}).items()
    )
    attrs = (f' data-confirm="{_e(confirm)}"' if confirm else "") + (
        f' id="{_e(element_id)}"' if element_id else ""
    )
    attrs += f' title="{_e(title)}"' if title else ""
    return (
        f'<form method="post" action="{_e(action)}" class="inline">{ctx.hidden()}{extra}'
        f'<button type="submit" class="{css}"{attrs}>{_e(label)}</button></form>'
    )


def _url(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


# ---- Ports -----------------------------------------------------------------------------------


def ports_page(ports: list[dict[str, Any]], ctx: FormContext, notice: str, errors: list[str]) -> str:
    rows = []
    for p in ports:
        alias = p["alias"]
        enabled = p["enabled"]
        toggle = _button_form(
            _url("ports", alias, "toggle"),
            ctx,
            "Yes" if enabled else "No",
            {"enabled": "false" if enabled else "true"},
            "toggle " + ("yes" if enabled else "no"),
            element_id=f"toggle-{alias}",
            title=("Enabled: click to disable" if enabled else "Disabled: click to enable"),
        )
        if p["package"] and not p["package_enabled"]:
            toggle += f'<div class="muted">package {_e(p["package"])} is disabled</div>'
        access = _e(p["access_mode"])
        if p["access_mode"] != "allow" or p["settings"]["access"]["deny_endpoints"]:
            access += " " + _button_form(
                _url("ports", alias, "reset-access"),
                ctx,
                "Reset",
                css="small",
                confirm=f"Allow every endpoint on {alias}?",
            )
        endpoints = "<br>".join(f"<code>{_e(e['url'])}</code>" for e in p["endpoints"])
        endpoints = endpoints or '<span class="muted">none</span>'
        listening = "<br>".join(_e(a) for a in p["listening"]) or '<span class="muted">not listening</span>'
        delete = _button_form(
            _url("ports", alias, "delete"),
            ctx,
            "Delete",
            css="small danger",
            confirm=f"Delete port {alias}? Its sessions are closed with 1001.",
        )
        rows.append(
            f'<tr data-alias="{_e(alias)}" class="{"" if p["active"] else "inactive"}">'
            f'<td><a href="{_url("ports", alias)}">{_e(alias)}</a><div class="muted">{_e(p["description"])}</div></td>'
            f"<td>{p['port']}</td><td>{_e(p['protocol'])}</td><td>{_e(p['package']) or '—'}</td>"
            f'<td class="enabled">{toggle}</td><td>{access}</td><td>{endpoints}</td><td>{listening}</td>'
            f'<td class="connections">{p["connections"]}</td><td>{delete}</td></tr>'
        )
    table = (
        '<table id="ports"><thead><tr><th>Alias</th><th>Port</th><th>Protocol</th><th>Package</th>'
        "<th>Enabled</th><th>Access mode</th><th>Endpoints</th><th>Listening</th><th>Connections</th>"
        f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return (
        f'{_notice(notice)}{_errors(errors)}<p><a class="button" href="/ports/new">Add a port</a></p>{table}'
    )


# ---- the port form ---------------------------------------------------------------------------

# (key, label, widget); widget: text, number, check, select:<a|b>, package, list
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("alias", "Alias", "text"),
    ("port", "Port", "number"),
    ("enabled", "Enabled", "check"),
    ("protocol", "Protocol", "select:ws|wss"),
    ("bind", "Bind address", "text"),
    ("description", "Description", "text"),
    ("package", "Package", "package"),
    ("backlog", "Backlog", "number"),
    ("max_connections", "Max connections", "number"),
    ("idle_timeout_ms", "Idle timeout (ms)", "number"),
    ("handshake_timeout_ms", "Handshake timeout (ms)", "number"),
    ("max_message_size", "Max message size (bytes)", "number"),
    ("compression", "Compression (permessage-deflate)", "check"),
    ("compression_window_bits", "Compression window bits (9-15)", "number"),
    ("compression_client_window_bits", "Client window bits asked (9-15)", "number"),
    ("compression_mem_level", "Compression memLevel (1-9)", "number"),
    ("client_auth", "Client authentication", "text"),
    ("no_auth_user", "No-auth user", "text"),
    ("pool.min", "Pool min", "number"),
    ("pool.max", "Pool max", "number"),
    ("pool.priority", "Pool priority (1-10)", "number"),
    ("pool.mode", "Pool mode", "select:greenlet|thread"),
    ("access.mode", "Endpoint access mode", "select:allow|deny"),
    ("access.deny_endpoints", "Denied endpoints (mode allow)", "list"),
    ("access.allow_endpoints", "Allowed endpoints (mode deny)", "list"),
    ("access.ip_mode", "IP access mode", "select:allow|deny"),
    ("access.ip_allow", "Allowed addresses (IP mode deny)", "list"),
    ("access.ip_deny", "Denied addresses (IP mode allow)", "list"),
    ("origin.same_origin", "Same origin only", "check"),
    ("origin.allowed", "Allowed origins", "list"),
    ("origin.hosts", "The server's own names (host or host:port)", "list"),
    ("tls.keystore", "TLS keystore (wss)", "text"),
    ("tls.key_alias", "TLS key alias (wss)", "text"),
)
GROUPS = (
    ("Port", 0),
    ("Limits and timeouts", 7),
    ("Authentication", 16),
    ("Pool", 18),
    ("Access", 22),
    ("Origins", 28),
    ("TLS", 31),
)


def new_port_defaults() -> PortConfig:
    return PortConfig(alias="", port=0)


def _get(settings: dict[str, Any], key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _key(key: str) -> Key:
    """The settings engine's entry of a [[ports]] key ("pool.max")."""
    cls: Any = PortConfig
    parts = key.split(".")
    for part in parts[:-1]:
        cls = keys(cls)[part].table
    return keys(cls)[parts[-1]]


def _text(value: Any, widget: str) -> str:
    if value is None:
        return ""
    if widget == "list":
        return "\n".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def form_values(settings: dict[str, Any]) -> dict[str, str]:
    """The form's field texts for a port's settings."""
    return {key: _text(_get(settings, key), widget) for key, _, widget in FIELDS}


def _convert(key: str, widget: str, raw: str) -> Any:
    """A form text as the TOML value it stands for; text that does not parse stays text, so the
    validator reports it in its own words ("must be an integer 1..65535")."""
    if widget == "list":
        return [item.strip() for item in re.split(r"[\n,]", raw) if item.strip()]
    types = _key(key).types
    text = raw.strip()
    if types == (int,) and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if float in types:
        try:
            return float(text)
        except ValueError:
            return raw
    return raw if types == (str,) else text


def _put(patch: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        patch = patch.setdefault(part, {})
    patch[parts[-1]] = value


def form_patch(form: dict[str, list[str]], current: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(merge patch of what the form changed, the submitted texts for showing the form again)."""
    patch: dict[str, Any] = {}
    values: dict[str, str] = {}
    for key, _, widget in FIELDS:
        if widget == "check":
            value: Any = bool(form.get(key))
            values[key] = "true" if value else ""
        else:
            if key not in form:
                continue
            raw = form[key][-1]
            values[key] = raw
            value = _convert(key, widget, raw)
        old = _get(current, key)
        if key.startswith("tls.") and old is None and not value:
            continue  # no [ports.tls] table to create
        if value != old:
            _put(patch, key, value)
    return patch, values


def new_port_table(patch: dict[str, Any]) -> dict[str, Any]:
    """A new port's table: alias and port first, then what differs from the defaults."""
    table = {"alias": patch.pop("alias", ""), "port": patch.pop("port", 0)}
    table.update(patch)
    return table


def _field_errors(errors: list[str], index: int | None) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if index is None:
        return found
    keys = {key for key, _, _ in FIELDS}
    for line in errors:
        match = re.search(rf"ports\[{index}\]\.([A-Za-z_.]+)[^:]*: (.*)$", line)
        if match and match.group(1) in keys:
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def _input(key: str, widget: str, value: str, config: Config) -> str:
    name = f'name="{_e(key)}" id="f-{_e(key)}"'
    if widget == "check":
        return f'<input type="checkbox" {name} value="true"{" checked" if value else ""}>'
    if widget.startswith("select:"):
        options = widget.split(":", 1)[1].split("|")
        return (
            f"<select {name}>"
            + "".join(f"<option{' selected' if o == value else ''}>{_e(o)}</option>" for o in options)
            + "</select>"
        )
    if widget == "package":
        names = [""] + [p.name for p in config.packages]
        if value not in names:
            names.append(value)
        return (
            f"<select {name}>"
            + "".join(
                f'<option value="{_e(n)}"{" selected" if n == value else ""}>{_e(n) or "(none)"}</option>'
                for n in names
            )
            + "</select>"
        )
    if widget == "list":
        return f'<textarea {name} rows="2">{_e(value)}</textarea>'
    kind = ' inputmode="numeric"' if widget == "number" else ""
    return f'<input type="text" {name} value="{_e(value)}"{kind}>'


def port_form(
    alias: str | None,
    values: dict[str, str],
    config: Config,
    ctx: FormContext,
    errors: list[str],
    index: int | None = None,
    messages: list[str] | None = None,
    notice: str = "",
) -> str:
    if index is None:
        index = next((i for i, p in enumerate(config.ports) if p.alias == alias), len(config.ports))
    by_field = _field_errors(errors, index)
    parts = [
        _notice(notice),
        "".join(f'<p class="error">{_e(m)}</p>' for m in messages or []),
        _errors(errors),
    ]
    action = _url("ports", alias) if alias is not None else "/ports/new"
    parts.append(f'<form method="post" action="{_e(action)}" class="port-form" id="port-form">{ctx.hidden()}')
    starts = {start: title for title, start in GROUPS}
    for i, (key, label, widget) in enumerate(FIELDS):
        if i in starts:
            parts.append(("</fieldset>" if i else "") + f"<fieldset><legend>{_e(starts[i])}</legend>")
        bad = by_field.get(key, [])
        setting = _key(key)
        help_text = "; ".join(
            t for t in (setting.help, "" if widget == "check" else f"allowed: {describe(setting)}") if t
        )
        messages_html = "".join(f'<span class="field-error">{_e(m)}</span>' for m in bad)
        parts.append(
            f'<div class="field{" invalid" if bad else ""}"><label for="f-{_e(key)}">{_e(label)}</label>'
            f"{_input(key, widget, values.get(key, ''), config)}"
            f'<span class="help">{_e(help_text)}</span>{messages_html}</div>'
        )
    parts.append(
        '</fieldset><p><button type="submit" id="save">Save and apply</button> '
        '<a href="/ports">Cancel</a></p></form>'
    )
    return "".join(parts)


# ---- Packages, sessions, workers ---------------------------------------------------------------


def packages_page(
    packages: list[dict[str, Any]], ctx: FormContext, notice: str, errors: list[str], report: Any = None
) -> str:
    rows = []
    for p in packages:
        name = p["name"]
        toggle = _button_form(
            _url("packages", name, "toggle"),
            ctx,
            "Yes" if p["enabled"] else "No",
            {"enabled": "false" if p["enabled"] else "true"},
            "toggle " + ("yes" if p["enabled"] else "no"),
            element_id=f"package-toggle-{name}",
            confirm=(
                f"Disable package {name}? Its ports stop and their sessions are closed with 1001."
                if p["enabled"]
                else ""
            ),
        )
        rows.append(
            f'<tr><td>{_e(name)}<div class="muted">{_e(p["description"])}</div></td><td>{toggle}</td>'
            f"<td>{', '.join(_e(a) for a in p['ports']) or '—'}</td>"
            f"<td>{', '.join(_e(a) for a in p['endpoints']) or '—'}</td><td>{p['connections']}</td>"
            f'<td><a href="{_url("api", "packages", name, "export")}">Export</a></td></tr>'
        )
    table = (
        '<table id="packages"><thead><tr><th>Package</th><th>Enabled</th><th>Ports</th><th>Endpoints</th>'
        f"<th>Connections</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    report_html = ""
    if report is not None:
        items = "".join(f"<li>{_e(line)}</li>" for line in report.lines())
        report_html = f'<div class="report" id="import-report"><ul>{items}</ul></div>'
    importer = (
        f'<h2>Import a package</h2><form method="post" action="/packages/import" class="import">'
        f'{ctx.hidden()}<textarea name="toml" rows="10" placeholder="a package export (TOML)"></textarea>'
        '<p class="help">Ports whose number exists here already keep their settings; packages, '
        "endpoints and keystores that exist are kept too.</p>"
        '<label><input type="checkbox" name="dry_run" value="1"> Dry run (only report)</label> '
        '<button type="submit">Import</button></form>'
    )
    return f"{_notice(notice)}{_errors(errors)}{report_html}{table}{importer}"


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def sessions_page(data: dict[str, Any], ctx: FormContext, notice: str) -> str:
    sessions = sorted(data.get("sessions", []), key=lambda s: (s.get("port", ""), s.get("age_s", 0)))
    rows = []
    for s in sessions:
        sid = s["id"]
        close = (
            f'<form method="post" action="{_url("sessions", sid, "close")}" class="inline">{ctx.hidden()}'
            '<select name="code"><option>1000</option><option>1001</option><option>1008</option></select>'
            f'<button type="submit" class="small" data-confirm="Close session {_e(sid)}?">Close</button></form>'
        )
        rows.append(
            f"<tr><td>{_e(s.get('port'))}</td><td><code>{_e(sid)}</code></td><td>{_e(s.get('path'))}</td>"
            f"<td>{_e(s.get('user') or '—')}</td><td>{_e(s.get('remote_address'))}</td>"
            f"<td>{_age(s.get('age_s', 0))}</td><td>{s.get('messages_in', 0)} / {s.get('messages_out', 0)}</td>"
            f"<td>{s.get('pid')}</td><td>{close}</td></tr>"
        )
    missing = data.get("unanswered") or []
    warn = f'<p class="error">No answer from worker(s) {", ".join(map(str, missing))}.</p>' if missing else ""
    more = (
        f'<p class="muted">Showing {len(sessions)} of {data.get("total", len(sessions))}.</p>'
        if data.get("total", 0) > len(sessions)
        else ""
    )
    table = (
        '<table id="sessions"><thead><tr><th>Port</th><th>Session</th><th>Path</th><th>User</th><th>Remote address'
        "</th><th>Age</th><th>Messages in / out</th><th>Worker</th><th></th></tr></thead>"
        f"<tbody>{''.join(rows) or '<tr><td colspan=9 class=muted>No sessions.</td></tr>'}</tbody></table>"
    )
    return f"{_notice(notice)}{warn}{more}{table}"


def workers_page(data: dict[str, Any], ctx: FormContext, notice: str, errors: list[str]) -> str:
    master = data.get("master", {})
    rows = []
    for w in data.get("workers", []):
        per_port = ", ".join(f"{_e(k)}: {v}" for k, v in sorted(w.get("ports", {}).items()) if v)
        rows.append(
            f"<tr><td>{w.get('pid')}</td><td>{w.get('gen')}</td><td>{w.get('slot')}</td>"
            f"<td>{_e(w.get('state'))}{'' if w.get('ready') else ' (starting)'}</td>"
            f"<td>{w.get('connections', 0)}</td><td>{per_port or '—'}</td></tr>"
        )
    head = (
        f"<p>Master pid {master.get('pid', '?')}, generation {master.get('gen', '?')}"
        f"{', reloading' if master.get('reloading') else ''}; config {_e(master.get('config', '?'))}.</p>"
    )
    reload_form = _button_form("/reload", ctx, "Reload the configuration", element_id="reload")
    table = (
        '<table id="workers"><thead><tr><th>PID</th><th>Generation</th><th>Slot</th><th>State</th>'
        f"<th>Connections</th><th>Per port</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return f"{_notice(notice)}{_errors(errors)}{head}<p>{reload_form}</p>{table}"
