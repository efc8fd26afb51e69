"""The Grafana dashboard's panels, drawn from a real Prometheus with matplotlib.

Grafana is not packaged for Debian, so the README's picture of the dashboard is made
this way: every panel of ``grafana/dashboards/june.json`` is queried over the Prometheus
HTTP API (``query_range``, the same PromQL) and plotted. ``june dashboard`` runs it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx

DASHBOARD = Path(__file__).parent / "grafana" / "dashboards" / "june.json"


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list:
    r = httpx.get(
        f"{prometheus.rstrip('/')}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": step},
        timeout=30,
    )
    r.raise_for_status()
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {expr!r}: {body.get('error')}")
    return body["data"]["result"]


def render(
    prometheus: str, out: Path, *, minutes: float = 15, title: str = "", window: str = "5m"
) -> int:
    """Draw every panel over the last ``minutes``; returns how many series were drawn.

    ``window`` replaces the panels' ``[5m]`` rate windows (a short run reads better with
    ``1m``: a 5-minute window smooths a 3-minute run into a ramp)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = json.loads(DASHBOARD.read_text())["panels"]
    end = time.time()
    start = end - minutes * 60
    step = max(1.0, minutes * 60 / 240)
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.2 * rows), squeeze=False)
    drawn = 0
    for ax, panel in zip(axes.flat, panels, strict=False):
        for target in panel["targets"]:
            expr = target["expr"].replace("[5m]", f"[{window}]")
            for series in query_range(prometheus, expr, start, end, step):
                points = [(float(t) - end, float(v)) for t, v in series["values"]]
                points = [(t / 60, v) for t, v in points if v == v]  # minutes ago; no NaN
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=legend(target.get("legendFormat", ""), series["metric"]))
                drawn += 1
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))
        ax.set_xlabel("minutes ago")
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()[0]
        if handles:
            ax.legend(fontsize=6, loc="upper left", ncol=3 if len(handles) > 8 else 1)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return drawn
