#!/usr/bin/env python3
"""flashgate's Grafana dashboard (charts/flashgate/files/dashboard.json) without Grafana: its
queries, and a picture of it drawn from a real run.

- `queries(dashboard)`: every panel's PromQL, with Grafana's variables replaced the way Grafana
  would for "all fleets" (`$namespace` -> `.*`, `$__rate_interval` -> a window), so the e2e test
  can run each one against a real Prometheus (tests/e2e/test_prometheus.py).
- `python hack/dashboard.py picture [--out docs/dashboard.png]`: the docs step. It starts the test
  control plane, the gate (sidecar and operator, hack/localgate.py) and a real Prometheus
  (hack/promserver.py), runs a few fleets' worth of keys and releases for some minutes (published,
  tampered, rolled back, a key revoked), runs every panel's query over that time, draws the panels
  where the dashboard places them as SVG in one HTML page, and screenshots it with headless
  Chromium (Debian's `chromium`, installed with apt-get when missing). Not part of `make test`.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "charts" / "flashgate" / "files" / "dashboard.json"


@dataclass(frozen=True)
class Query:
    panel: str
    kind: str  # the panel type: timeseries, stat, table
    ref: str
    expr: str  # as Grafana sends it, variables replaced
    legend: str
    unit: str
    grid: tuple[int, int, int, int]  # x, y, w, h in Grafana's 24-column grid

    @property
    def instant(self) -> bool:
        return self.kind != "timeseries"


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def substitute(expr: str, namespace: str = ".*", rate_interval: str = "1m") -> str:
    return expr.replace("$namespace", namespace).replace("$__rate_interval", rate_interval)


def queries(dashboard: dict[str, Any], *, namespace: str = ".*",
            rate_interval: str = "1m") -> list[Query]:
    found = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        unit = (panel.get("fieldConfig") or {}).get("defaults", {}).get("unit", "")
        for target in panel.get("targets") or ():
            found.append(Query(panel["title"], panel["type"], target["refId"],
                               substitute(target["expr"], namespace, rate_interval),
                               target.get("legendFormat", ""), unit,
                               (grid["x"], grid["y"], grid["w"], grid["h"])))
    return found


# ---- drawing ------------------------------------------------------------------------------

CELL_W, CELL_H = 64, 34  # pixels of one grid column and one grid row
COLOURS = ("#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9",
           "#705da0", "#508642", "#cca300")


def legend(template: str, metric: dict[str, str]) -> str:
    text = template
    for key, value in metric.items():
        text = text.replace("{{" + key + "}}", value)
    return text if template else ", ".join(f"{k}={v}" for k, v in sorted(metric.items()))


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "s":
        for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
            if abs(value) >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.2f} s" if abs(value) < 10 else f"{value:.0f} s"
    if unit == "Bps":
        for size, name in ((2**30, "GiB/s"), (2**20, "MiB/s"), (2**10, "KiB/s")):
            if abs(value) >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.0f} B/s"
    return f"{value:.3g}" if value != int(value) else f"{int(value)}"


def _timeseries(series: list[tuple[str, list[tuple[float, float]]]], unit: str, w: int,
                h: int, start: float, end: float) -> str:
    left, top, right, bottom = 70, 8, 28, 22 + 16 * ((len(series) + 1) // 2)
    plot_w, plot_h = w - left - right, max(h - top - bottom, 20)
    values = [v for _, points in series for _, v in points if not math.isnan(v)]
    high = max(values, default=1.0)
    high = high * 1.1 if high > 0 else 1.0
    out = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
           'stroke="#444"/>']
    for i in range(5):
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                   'stroke="#2a2d33"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
                   f'{html.escape(fmt(high * i / 4, unit))}</text>')
    for i in range(5):
        t = start + (end - start) * i / 4
        x = left + plot_w * i / 4
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                   f'class="tick">{time.strftime("%H:%M:%S", time.gmtime(t))}</text>')
    for n, (name, points) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        path = " ".join(f"{left + plot_w * (t - start) / max(end - start, 1):.1f},"
                        f"{top + plot_h - plot_h * v / high:.1f}"
                        for t, v in points if not math.isnan(v))
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                   f'points="{path}"/>')
        lx, ly = left + (n % 2) * plot_w / 2, top + plot_h + 30 + 16 * (n // 2)
        out.append(f'<rect x="{lx:.0f}" y="{ly - 8}" width="10" height="4" fill="{colour}"/>'
                   f'<text x="{lx + 14:.0f}" y="{ly - 3}" class="legend">'
                   f'{html.escape(name[:48])}</text>')
    if not series:
        out.append(f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" class="none">'
                   'No data</text>')
    return f'<svg width="{w}" height="{h}">{"".join(out)}</svg>'


def _panel(title: str, body: str, grid: tuple[int, int, int, int]) -> str:
    x, y, w, h = grid
    return (f'<div class="panel" style="left:{x * CELL_W}px;top:{y * CELL_H}px;'
            f'width:{w * CELL_W - 8}px;height:{h * CELL_H - 8}px">'
            f'<div class="title">{html.escape(title)}</div>{body}</div>')


def render_html(dashboard: dict[str, Any], results: dict[tuple[str, str], list[dict[str, Any]]],
                start: float, end: float, subtitle: str) -> str:
    """The dashboard's panels drawn from query results keyed by (panel title, refId)."""
    panels = []
    by_panel: dict[str, list[Query]] = {}
    for q in queries(dashboard):
        by_panel.setdefault(q.panel, []).append(q)
    for title, qs in by_panel.items():
        first = qs[0]
        w, h = first.grid[2] * CELL_W - 8, first.grid[3] * CELL_H - 8 - 24
        if first.kind == "timeseries":
            series = [(legend(q.legend, r["metric"]),
                       [(float(t), float(v)) for t, v in r["values"]])
                      for q in qs for r in results[(title, q.ref)]]
            body = _timeseries(series, first.unit, w, h, start, end)
        elif first.kind == "stat":
            rows = results[(title, first.ref)]
            value = float(rows[0]["value"][1]) if rows else math.nan
            text = "No data" if math.isnan(value) else fmt(value, first.unit)
            body = f'<div class="stat">{html.escape(text)}</div>'
        else:
            rows = results[(title, first.ref)]
            labels = sorted({k for r in rows for k in r["metric"]})
            head = "".join(f"<th>{html.escape(k)}</th>" for k in [*labels, "value"])
            lines = "".join(
                "<tr>" + "".join(f"<td>{html.escape(r['metric'].get(k, ''))}</td>"
                                 for k in labels)
                + f"<td>{html.escape(fmt(float(r['value'][1]), first.unit))}</td></tr>"
                for r in sorted(rows, key=lambda r: sorted(r["metric"].items()))[:12])
            body = f"<table><tr>{head}</tr>{lines}</table>"
        panels.append(_panel(title, body, first.grid))
    height = max(q.grid[1] + q.grid[3] for q in queries(dashboard)) * CELL_H
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; background: #111217; color: #ccccdc; font: 12px sans-serif; }}
header {{ padding: 10px 16px; font-size: 16px; }} header small {{ color: #8e8e9e; }}
.grid {{ position: relative; margin: 0 8px; height: {height}px; }}
.panel {{ position: absolute; background: #181b1f; border: 1px solid #2a2d33; overflow: hidden; }}
.title {{ padding: 4px 8px; font-weight: bold; height: 16px; }}
.stat {{ font-size: 34px; text-align: center; margin-top: 22px; color: #73bf69; }}
.tick {{ fill: #8e8e9e; font-size: 10px; }} .legend {{ fill: #ccccdc; font-size: 10px; }}
.none {{ fill: #8e8e9e; font-size: 14px; }}
table {{ border-collapse: collapse; margin: 4px 8px; font-size: 11px; }}
th, td {{ text-align: left; padding: 2px 8px; border-bottom: 1px solid #2a2d33; }}
</style></head><body><header>{html.escape(dashboard["title"])} <small>{html.escape(subtitle)}
</small></header><div class="grid">{"".join(panels)}</div></body></html>"""


def chromium() -> str:
    """Debian's chromium, installed with apt-get (as root) when missing."""
    found = shutil.which("chromium")
    if found:
        return found
    print("[dashboard] installing chromium with apt-get", file=sys.stderr, flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True,
                   stdout=subprocess.DEVNULL)
    found = shutil.which("chromium")
    if not found:
        raise SystemExit("chromium is not installed and could not be installed")
    return found


def screenshot(page: Path, png: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory(prefix="flashgate-chromium-") as profile:
        subprocess.run([
            chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", f"--screenshot={png}", page.as_uri()],
            check=True, capture_output=True, timeout=120)


# ---- the real run -------------------------------------------------------------------------


def picture(out: Path, minutes: float) -> None:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "hack"))
    import controlplane
    from promserver import PrometheusServer

    from tests.conftest import Cluster
    from tests.e2e.conftest import Fleet, GateSystem

    with tempfile.TemporaryDirectory(prefix="flashgate-dashboard-") as scratch, \
            controlplane.ControlPlane() as plane:
        work = Path(scratch)
        kube = Cluster(plane.kubeconfig, plane.binaries / "kubectl")
        kube.apply_crds()
        gate = GateSystem(kube, work / "gate")
        (work / "gate").mkdir()
        gate.start_sidecar()
        gate.start_operator()
        targets = {"flashgate-operator": [f"127.0.0.1:{gate.metrics_port}"],
                   "flashgate-verifier": [f"127.0.0.1:{gate.sidecar_port}"]}
        try:
            with PrometheusServer(work / "prometheus", targets, interval="2s") as prom:
                start = time.time()
                _scenario([Fleet(gate, kube.namespace(name)) for name in
                           ("gw-fleet", "cam-fleet")], minutes)
                end = time.time()
                board = load()
                step = max((end - start) / 200, 2)
                window = "30s"
                results = {}
                for q in queries(board, rate_interval=window):
                    results[(q.panel, q.ref)] = (prom.query(q.expr) if q.instant
                                                 else prom.query_range(q.expr, start, end, step))
        finally:
            gate.stop()
        page = work / "dashboard.html"
        width = 24 * CELL_W + 16
        height = 40 + max(q.grid[1] + q.grid[3] for q in queries(board)) * CELL_H + 8
        page.write_text(render_html(board, results, start, end,
                                    f"all fleets, {int((end - start) / 60)} minutes of a real "
                                    "run (hack/dashboard.py picture)"))
        screenshot(page, out, width, height)
    print(out)


def _scenario(fleets: Sequence[Any], minutes: float) -> None:
    """Keys and releases over `minutes`: mostly published, some tampered (HashMismatch), cut
    short (SizeMismatch) or missing (ArtifactUnavailable), one key revoked half way."""
    keys = {}
    for fleet in fleets:
        keys[fleet.namespace] = {
            "application": fleet.signing_key("app", "application"),
            "config": fleet.signing_key("cfg", "config"),
            "os": fleet.signing_key("os-old", "os", not_after=fleet.now + 10 * 86400)}
        fleet.signing_key("boot", "bootloader", wait="Pending", not_before=fleet.now + 3600)
    deadline = time.monotonic() + minutes * 60
    round_, revoked = 0, False
    while time.monotonic() < deadline:
        round_ += 1
        for n, fleet in enumerate(fleets):
            ring = keys[fleet.namespace]
            tier = ("application", "config", "os")[round_ % 3]
            name = f"r{round_}-{tier}"
            version = round_ + 1
            data = b"firmware image %d " % round_ * (4000 * (n + 1))
            doc = fleet.release_doc(name, [ring[tier]], tier=tier, security_version=version,
                                    data=data,
                                    # The bytes at the URL are not those that were signed.
                                    served=(data.upper() if round_ % 4 == 0 else
                                            data[:-10] if round_ % 5 == 0 else None))
            if round_ % 7 == n:  # nothing at the URL
                (fleet.system.artifacts / fleet.namespace / f"{name}.bin").unlink()
            fleet.apply(doc, check=False)
        if not revoked and time.monotonic() > deadline - minutes * 30:
            fleets[0].kubectl("patch", "signingkey", "cfg", "--type=merge",
                              "-p", '{"spec": {"revoked": true}}')
            revoked = True
        time.sleep(6)
    time.sleep(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pic = sub.add_parser("picture", help="docs/dashboard.png from a real run")
    pic.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    pic.add_argument("--minutes", type=float, default=4.0)
    sub.add_parser("queries", help="print every panel's query")
    args = parser.parse_args()
    if args.command == "queries":
        for q in queries(load()):
            print(f"{q.panel} [{q.ref}]: {q.expr}")
        return
    picture(args.out.resolve(), args.minutes)


if __name__ == "__main__":
    main()
