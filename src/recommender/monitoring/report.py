"""The monitor's ``index.html``: one self-contained page, inline CSS, nothing loaded from anywhere.

Bars are ``<div>`` widths, not a chart library, so the page renders offline and from ``file://``;
the only link is the relative one to the feedback's Data Docs (``validation/index.html``).
"""

from __future__ import annotations

import html
import math
from typing import Any

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 60em; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { padding: .2em .7em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { padding: .8em 1em; border-radius: 6px; font-size: 1.1em; }
.retrain { background: #fde8e8; border: 1px solid #e0a0a0; }
.keep { background: #e8f6ea; border: 1px solid #9fd3a8; }
.bar { height: .8em; display: inline-block; vertical-align: middle; }
.ref { background: #9bb7d4; } .cur { background: #e39b5a; }
.muted { color: #777; } code { background: #f4f4f4; padding: 0 .25em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return _e(value)


def _pct(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value:.1%}"


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{_e(k)}</th><td class='n'>{_pct(v) if 'share' in k else _num(v)}</td></tr>"
        for k, v in rows
    )
    return f"<table>{cells}</table>"


def _bars(comparison: dict[str, Any]) -> str:
    rows = []
    for b in comparison["bins"]:
        ref, cur = b["train_share"], b["window_share"]
        rows.append(
            f"<tr><td>{_e(b['bin'])}</td><td class='n'>{ref:.1%}</td>"
            f"<td><span class='bar ref' style='width:{ref * 20:.2f}em'></span></td>"
            f"<td class='n'>{cur:.1%}</td>"
            f"<td><span class='bar cur' style='width:{cur * 20:.2f}em'></span></td></tr>"
        )
    head = "<tr><th>bin</th><th colspan='2'>train</th><th colspan='2'>window</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _traffic(t: dict[str, Any]) -> str:
    rows = [
        f"<tr><td>{_e(ep)}</td><td class='n'>{_num(n)}</td>"
        f"<td class='n'>{_num(t['latency_ms'][ep]['p50'])}</td>"
        f"<td class='n'>{_num(t['latency_ms'][ep]['p95'])}</td></tr>"
        for ep, n in t["requests"].items()
    ]
    head = "<tr><th>endpoint</th><th>requests</th><th>p50 ms</th><th>p95 ms</th></tr>"
    shares = _table(
        [
            ("cold-start share of recommend", t["cold_start_share"]),
            ("unknown-item share of similar_items", t["unknown_item_share"]),
            ("unknown-user share of predict pairs", t["predict_unknown_user_share"]),
            ("unknown-item share of predict pairs", t["predict_unknown_item_share"]),
            ("malformed log lines (skipped)", t["malformed_lines"]),
            ("of which truncated last lines", t["truncated_lines"]),
        ]
    )
    return f"<table>{head}{''.join(rows)}</table>{shares}"


def _drift(d: dict[str, Any], threshold: float, min_rows: int) -> str:
    judged = "" if d["judged"] else (
        f"<p class='muted'>Not judged: fewer than {min_rows} feedback ratings.</p>"
    )  # fmt: skip
    parts = [
        _table(
            [
                ("feedback ratings", d["feedback_ratings"]),
                ("share by new users", d["new_users_share"]),
                ("share on new items", d["new_items_share"]),
            ]
        ),
        judged,
    ]
    for name in ("ratings", "item_popularity", "user_activity"):
        c = d[name]
        # The warning sign only where the verdict looks at it (enough ratings to judge drift).
        past = c["psi"] is not None and c["psi"] > threshold
        flag = " &#9888;" if past and d.get("judged") else ""
        parts.append(
            f"<h3>{_e(name.replace('_', ' '))}: PSI {_num(c['psi'])}{flag}, "
            f"JS distance {_num(c['js'])}</h3>{_bars(c)}"
        )
    return "".join(parts)


def _online(o: dict[str, Any]) -> str:
    k = o["k"]
    return (
        _table(
            [
                ("served lists", o["served_lists"]),
                (
                    f"followed within {o['horizon_hours']:g} h by positive feedback",
                    o["followed_lists"],
                ),
                (f"hit rate@{k}", o[f"hit_rate@{k}"]),
                (f"NDCG@{k} online", o[f"ndcg@{k}"]),
                (f"NDCG@{k} offline (champion)", o.get(f"offline_ndcg@{k}")),
                ("coverage: catalog share served", o["coverage"]),
                ("mean training-popularity percentile of served items", o["popularity_percentile"]),
            ]
        )
        + f"<p class='muted'>Offline figure from: {_e(o.get('offline_source', ''))}</p>"
    )


def _validation(v: dict[str, Any]) -> str:
    if v.get("success") is None:
        return f"<p>{_e(v.get('note', 'not run'))}</p>"
    status = "passed" if v["success"] else "FAILED"
    text = f"<pre>{_e(v['failures_text'])}</pre>" if v.get("failures_text") else ""
    return (
        f"<p>{_num(v['rows'])} ratings ({_num(v.get('duplicates_dropped', 0))} repeated pairs "
        f"dropped): {status}, {v['successful_expectations']} of {v['evaluated_expectations']} "
        f"expectations. <a href='validation/index.html'>Data Docs</a>.</p>"
        f"<p class='muted'>Suites: {_e(v['suites'])}.</p>{text}"
    )


def _log(summary: dict[str, Any]) -> str:
    rows = []
    for ep, s in summary["log"].items():
        examples = "<br>".join(_e(x) for x in s["examples"])
        rows.append(
            f"<tr><td>{_e(ep)}</td><td class='n'>{_num(s['files'])}</td>"
            f"<td class='n'>{_num(s['lines'])}</td><td class='n'>{_num(s['records'])}</td>"
            f"<td class='n'>{_num(s['outside_window'])}</td>"
            f"<td class='n'>{_num(s['malformed'])}</td><td>{examples}</td></tr>"
        )
    head = (
        "<tr><th>endpoint</th><th>files</th><th>lines</th><th>in window</th>"
        "<th>outside</th><th>malformed</th><th>examples</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def render(summary: dict[str, Any]) -> str:
    """The report page for a monitor summary (``summary.json``'s content)."""
    cfg, w = summary["params"], summary["window"]
    css_class = "retrain" if summary["retrain"] else "keep"
    word = "Retrain" if summary["retrain"] else "No retrain needed"
    since = w["since"] or "the start of the log"
    run = summary["mlflow"].get("run_id") or f"none ({summary['mlflow'].get('error')})"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Monitor: {_e(word)}</title><style>{CSS}</style></head><body>
<h1>Recommender monitor</h1>
<p>Window {_e(since)} to {_e(w["until"])} &middot; log <code>{_e(summary["log_dir"])}</code>
&middot; training data <code>{_e(summary["processed"])}</code> &middot; MLflow run {_e(run)}
(experiment <code>{_e(summary["mlflow"]["experiment"])}</code>)</p>
<div class="verdict {css_class}"><b>{_e(word)}</b>: {_e(summary["reason"])}</div>
<h2>Traffic</h2>{_traffic(summary["traffic"])}
<h2>Drift against the training data</h2>
{_drift(summary["drift"], cfg["psi_threshold"], cfg["min_drift_rows"])}
<h2>Online quality</h2>{_online(summary["online"])}
<h2>Feedback ratings: data checks</h2>{_validation(summary["validation"])}
<h2>Log</h2>{_log(summary)}
<p class="muted">Generated {_e(summary["generated_at"])}.</p>
</body></html>
"""
