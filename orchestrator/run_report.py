"""The run report: ``RUN_DIR/report.html``, one self-contained page with the R1 paper's pictures of a run.

Sections: a header (pipeline, status, total time, final pass@1 against the first SFT stage's), reward and
pass rate over RL steps (one pass-rate curve per domain where a step mixes domains), response length over RL
steps, pass@1 and cons@k per stage, pass@1 per domain over the stages that report one, the time of each stage
split into phases, the rejection-sampling filter counts, the SFT loss curves and a table of stages. Plots are
PNGs drawn on matplotlib's Agg canvas and embedded as data URIs, the CSS is inline: the file opens anywhere,
offline, and can be mailed around.

It reads only the run directory (summary.json, pipeline.yaml, <stage>/status.json, metrics.jsonl, eval.json).
A run that is half-finished, failed or still being written is a normal input: a missing or torn file leaves
a gap in a section, never an exception.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import time
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from orchestrator.run_record import (BETWEEN_STEPS, DEV_EVAL, REST, RunRecord, StageRecord, as_dict, cons_keys,
                                     dev_points, filter_report, headline, load_run, number, pass_at_1, time_breakdown)

log = logging.getLogger(__name__)

PHASE_COLORS = {"generate": "#4c72b0", "reward": "#dd8452", "logprob": "#8172b3", "train": "#55a868",
                "sync": "#c44e52", "overhead": "#937860", BETWEEN_STEPS: "#da8bc3", DEV_EVAL: "#f0b6dd",
                REST: "#b0b0b0"}


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)  # Agg on this figure only: no pyplot, no process-wide backend switch
    fig.draw_without_rendering()  # constrained layout settles twin axes only on a second pass
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _grid(n: int, width: float = 5.4, height: float = 3.6, max_cols: int = 3) -> tuple[Figure, list]:
    cols = min(n, max_cols)
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def _xy(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    rows = [r for r in rows if number(r.get(key)) is not None]
    return [r["step"] for r in rows], [r[key] for r in rows]


def _marker(xs: list) -> str:
    return "o" if len(xs) < 30 else ""


def _finish(ax, handles: list | None = None, labels: list | None = None) -> None:
    """Grid, whole-number steps, and the legend under the axes, where it cannot hide a curve."""
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3,
              frameon=False)


def _plot_rl_reward(ax, stage: StageRecord) -> None:
    rows = stage.rows("reward_mean")
    x, y = _xy(rows, "reward_mean")
    ax.plot(x, y, color="C0", lw=2, marker=_marker(x), ms=3, label="reward mean")
    xs, std = _xy(rows, "reward_std")
    if len(xs) == len(x) and any(std):
        ax.fill_between(x, [a - b for a, b in zip(y, std)], [a + b for a, b in zip(y, std)], color="C0",
                        alpha=0.12, lw=0, label="reward ± std")
    px, py = _xy(rows, "pass_rate")
    ax.plot(px, py, color="C1", lw=2, marker=_marker(px), ms=3, label="pass rate")
    for i, key in enumerate(sorted({k for r in rows for k in r if k.startswith("pass_rate/")})):
        dx, dy = _xy(rows, key)
        ax.plot(dx, dy, color="C1", lw=1.2, ls=(0, (1, 1 + i)), marker=_DOMAIN_MARKERS[i % 4], ms=3,
                label=f"pass rate: {key[len('pass_rate/'):]}")
    components = sorted({k for r in rows for k in r if k.startswith("reward/") and k.endswith("_mean")})
    for i, key in enumerate(components):
        cx, cy = _xy(rows, key)
        ax.plot(cx, cy, color=f"C{i + 2}", lw=1.2, ls="--", label=key[len("reward/"):-len("_mean")] + " reward")
    dev = dev_points(stage)
    if dev:
        ax.plot(*zip(*dev), color="black", ls=":", marker="D", ms=5, label="dev pass@1")
    ax.set(title=f"{stage.name} (rl)", xlabel="RL step")
    _finish(ax)


def _plot_rl_length(ax, stage: StageRecord) -> None:
    rows = stage.rows("response_length_mean")
    x, y = _xy(rows, "response_length_mean")
    ax.plot(x, y, color="C0", lw=2, marker=_marker(x), ms=3, label="mean")
    mx, my = _xy(rows, "response_length_max")
    if mx:
        ax.plot(mx, my, color="C0", lw=1, alpha=0.45, ls="--", label="max")
    ax.set(title=f"{stage.name} (rl)", xlabel="RL step", ylabel="response tokens")
    ax.set_ylim(0, max(y + my + [1]) * 1.1)
    _finish(ax)


def _plot_sft(ax, stage: StageRecord) -> None:
    x, y = _xy(stage.rows("loss"), "loss")
    ax.plot(x, y, color="C0", lw=1.8, label="train loss")
    ax.set(title=f"{stage.name} (sft)", xlabel="SFT step", ylabel="loss")
    handles, labels = ax.get_legend_handles_labels()
    dev = dev_points(stage)
    if dev:
        right = ax.twinx()
        dx, dy = zip(*dev)
        right.plot(dx, dy, color="C3", ls=":", marker="D", ms=5, label="dev pass@1")
        best = number(stage.metrics.get("best_step"))
        if best is not None and best in dx:
            right.plot([best], [dy[dx.index(best)]], ls="", marker="*", ms=15, color="gold", mec="black",
                       label="kept checkpoint")
        right.set_ylim(0, max(0.05, max(dy) * 1.3))
        right.set_ylabel("dev pass@1")
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    _finish(ax, handles, labels)


def _panels(stages: list[StageRecord], plot) -> str:
    fig, axes = _grid(len(stages))
    for ax, stage in zip(axes, stages):
        plot(ax, stage)
    return _png(fig)


def _fig_eval(stages: list[StageRecord]) -> str:
    keys = ["pass@1"] + sorted({k for s in stages for k in cons_keys(s)}, key=lambda k: (len(k), k))
    fig = Figure(figsize=(max(6.0, 1.1 * len(stages) * len(keys) + 2), 4.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(keys)
    top = 0.0
    for j, key in enumerate(keys):
        idx = [i for i, s in enumerate(stages) if number(s.eval.get(key)) is not None]
        values = [stages[i].eval[key] for i in idx]
        bars = ax.bar([i + (j - (len(keys) - 1) / 2) * width for i in idx], values, width * 0.95, label=key,
                      color=f"C{j}")
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
        top = max([top, *values])
    ax.set_xticks(range(len(stages)), [f"{s.name}\n({s.kind})" for s in stages], fontsize=9)
    ax.set_ylim(0, min(1.15, max(0.1, top * 1.2)))
    ax.set_ylabel("fraction correct")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    return _png(fig)


_DOMAIN_MARKERS = ("s", "^", "v", "P")


def domain_curves(stages: list[StageRecord]) -> dict[str, list[tuple[int, float]]]:
    """pass@1 of each domain by stage index, from the stages' ``eval.per_domain``."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for i, s in enumerate(stages):
        for domain, scores in as_dict(s.eval.get("per_domain")).items():
            value = number(as_dict(scores).get("pass@1"))
            if value is not None:
                curves.setdefault(str(domain), []).append((i, value))
    return curves


def _fig_domains(stages: list[StageRecord], curves: dict[str, list[tuple[int, float]]]) -> str:
    fig = Figure(figsize=(max(6.0, 1.3 * len(stages) + 2), 4.0), layout="constrained")
    ax = fig.add_subplot()
    for j, (domain, points) in enumerate(sorted(curves.items())):
        xs, ys = zip(*points)
        ax.plot(xs, ys, color=f"C{j}", lw=2, marker=_DOMAIN_MARKERS[j % 4], ms=6, label=domain)
        for x, y in points:
            ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xticks(range(len(stages)), [f"{s.name}\n({s.kind})" for s in stages], fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pass@1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    return _png(fig)


def _fig_time(rows: list[tuple[StageRecord, dict[str, float]]]) -> str:
    phases: list[str] = []
    for _, parts in rows:
        phases += [p for p in parts if p not in phases]
    canonical = list(PHASE_COLORS)
    phases.sort(key=lambda p: (p == REST, canonical.index(p) if p in canonical else len(canonical)))
    fig = Figure(figsize=(10, 1.6 + 0.5 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    y = list(range(len(rows)))
    left = [0.0] * len(rows)
    extra = iter(["#64b5cd", "#ccb974", "#8c8c8c", "#a6bddb", "#fdae6b"])
    for phase in phases:
        widths = [parts.get(phase, 0.0) for _, parts in rows]
        ax.barh(y, widths, left=left, height=0.6, label=phase, color=PHASE_COLORS.get(phase) or next(extra, None))
        left = [a + b for a, b in zip(left, widths)]
    for yi, total in zip(y, left):
        ax.text(total, yi, f" {_duration(total)}", va="center", fontsize=9)
    ax.set_yticks(y, [f"{s.name} ({s.kind})" for s, _ in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left) * 1.15)
    ax.set_xlabel("seconds")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=min(4, len(phases)), fontsize=8, frameon=False)
    return _png(fig)


def _fig_filter(panels: list[tuple[StageRecord, dict]]) -> str:
    bars = [_filter_bars(report) for _, report in panels]
    fig, axes = _grid(len(panels), width=7.0, height=1.4 + 0.38 * max(len(b) for b in bars), max_cols=2)
    for ax, (stage, report), items in zip(axes, panels, bars):
        candidates = number(report.get("candidates"))
        y = list(range(len(items)))
        ax.barh(y, [n for _, n, _ in items], color=[c for _, _, c in items], height=0.65)
        for yi, (label, n, _) in zip(y, items):
            share = f" ({n / candidates:.0%})" if candidates and label != "mixed in" else ""
            ax.text(n, yi, f" {int(n):,}{share}", va="center", fontsize=8)
        ax.set_yticks(y, [label for label, _, _ in items], fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, max([n for _, n, _ in items] + [1]) * 1.25)
        kept = number(report.get("kept"))
        title = f"{stage.name}: {int(kept or 0):,} of {int(candidates):,} candidates kept" if candidates \
            else f"{stage.name}"
        ax.set(title=title, xlabel="samples")
        ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _filter_bars(report: dict) -> list[tuple[str, float, str]]:
    items = []
    if number(report.get("kept")) is not None:
        items.append(("kept", report["kept"], "#55a868"))
    dropped = sorted(((str(k), number(v)) for k, v in as_dict(report.get("dropped")).items() if number(v) is not None),
                     key=lambda kv: -kv[1])
    items += [(f"dropped: {reason}", n, "#c44e52") for reason, n in dropped]
    if number(report.get("mixed_in")) is not None:
        items.append(("mixed in", report["mixed_in"], "#4c72b0"))
    return items


# ---------------------------------------------------------------------------------------------- the page
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;max-width:1280px;
     margin:24px auto;padding:0 16px;line-height:1.45}
h1{margin-bottom:4px} h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px;font-size:1.25em}
.meta{color:#555;margin:4px 0} .headline{font-size:1.1em;margin:10px 0}
img{max-width:100%;height:auto;border:1px solid #eee}
.note{color:#777;font-style:italic}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top}
th{background:#f6f8fa;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.succeeded{color:#1a7f37;font-weight:600} .failed{color:#cf222e;font-weight:600}
.running,.unfinished{color:#9a6700;font-weight:600} .not-run{color:#777}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:12px;max-height:360px}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _img(png: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{png}">'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _missing(what: str, stages: list[StageRecord]) -> str:
    return _note(f"{what}: " + ", ".join(f"{s.name} ({s.status})" for s in stages) + ".") if stages else ""


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def _fmt(x, digits: int = 3) -> str:
    value = number(x)
    return "" if value is None else f"{value:.{digits}f}"


def _steps_section(stages: list[StageRecord], kind: str, key: str, plot, alt: str) -> str:
    """One panel per stage of ``kind`` that logged ``key``; a note names the stages that logged nothing."""
    of_kind = [s for s in stages if s.kind == kind]
    drawn = [s for s in of_kind if s.rows(key)]
    gap = _missing("No steps logged for", [s for s in of_kind if s not in drawn])
    return (_img(_panels(drawn, plot), alt) if drawn else "") + gap


def _eval_section(stages: list[StageRecord]) -> str:
    scored = [s for s in stages if pass_at_1(s) is not None]
    if not scored:
        return _note("No stage has an evaluation yet.")
    return _img(_fig_eval(scored), "pass@1 and cons@k per stage")


def _domain_section(stages: list[StageRecord]) -> str:
    scored = [s for s in stages if as_dict(s.eval.get("per_domain"))]
    curves = domain_curves(scored)
    return _img(_fig_domains(scored, curves), "pass@1 per domain over stages") if curves else ""


def _time_section(stages: list[StageRecord]) -> str:
    rows = [(s, b) for s in stages if (b := time_breakdown(s))]
    if not rows:
        return _note("No stage has recorded its time yet.")
    return _img(_fig_time(rows), "time per stage by phase") + _note(
        "RL phases are the per-step timings summed over steps; 'between steps' and SFT's dev-eval time come "
        "from the metrics' wall-clock stamps; rejection sampling's phases are its own timings; what is left of "
        "a stage's recorded seconds is 'rest of the stage'.")


def _filter_section(stages: list[StageRecord]) -> str:
    rs = [s for s in stages if s.kind == "rejection_sampling"]
    panels = [(s, r) for s in rs if (r := filter_report(s)) and _filter_bars(r)]
    gap = _missing("No filter report for", [s for s in rs if s not in [p for p, _ in panels]])
    counts = "".join(f"<p>{_e(s.name)}: " + ", ".join(f"{_e(label)} {int(n):,}" for label, n, _ in _filter_bars(r))
                     + f" (of {_e(r.get('candidates'))} candidates)</p>" for s, r in panels)
    return (_img(_fig_filter(panels), "rejection-sampling filter counts") if panels else "") + counts + gap


def _table(stages: list[StageRecord]) -> str:
    head = ["stage", "kind", "status", "seconds", "pass@1", "cons@k", "mean response tokens",
            "per-domain pass@1", "artifacts"]
    rows = []
    for s in stages:
        cons = "<br>".join(f"{_e(k)} {_fmt(s.eval[k])}" for k in cons_keys(s))
        domains = "<br>".join(f"{_e(d)} {_fmt(as_dict(v).get('pass@1'))}" + "".join(
            f" · {_e(k)} {_fmt(c)}" for k, c in as_dict(v).items() if k.startswith("cons@") and number(c) is not None)
            for d, v in as_dict(s.eval.get("per_domain")).items())
        artifacts = "<br>".join(f"{_e(k)}: <code>{_e(v)}</code>" for k, v in s.artifacts.items())
        cells = [_e(s.name), _e(s.kind), f'<span class="{_e(s.status.replace(" ", "-"))}">{_e(s.status)}</span>',
                 _fmt(s.seconds, 1), _fmt(pass_at_1(s)), cons, _fmt(s.eval.get("mean_response_tokens"), 1),
                 domains, artifacts]
        numeric = {3, 4, 6}
        rows.append("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    errors = "".join(
        f"<details><summary><b>{_e(s.name)}</b> failed: {_e(_last_line(s.error))}</summary>"
        f"<pre>{_e(str(s.error)[-4000:])}</pre></details>" for s in stages if s.error)
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
            + errors)


def _last_line(text) -> str:
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def _header(run: RunRecord) -> str:
    top = headline(run)
    counts: dict[str, int] = {}
    for s in run.stages:
        counts[s.status] = counts.get(s.status, 0) + 1
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    final, base = top["final"], top["baseline"]
    if final is None:
        score = "No stage has a pass@1 yet."
    else:
        score = f"Final pass@1 <b>{pass_at_1(final):.3f}</b> ({_e(final.name)})"
        if top["gain"] is not None:
            score += (f" vs <b>{pass_at_1(base):.3f}</b> after the first SFT stage ({_e(base.name)}): "
                      f"gain <b>{top['gain']:+.3f}</b>")
    return (f"<h1>Run report: {_e(run.pipeline)}</h1>"
            f'<p class="meta">status <span class="{_e(run.status)}">{_e(run.status)}</span> · '
            f"{len(run.stages)} stage(s): {_e(tally)} · total time {_duration(top['seconds'])} "
            f"(sum of stage times) · written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>"
            f'<p class="headline">{score}</p>')


def _guarded(title: str, build) -> tuple[str, str]:
    """A section whose drawing fails says so on the page; the rest of the report still gets written."""
    try:
        return title, build()
    except Exception as e:  # noqa: BLE001 -- a report of a broken run must still be written
        log.warning("run report: section %r could not be drawn: %s", title, e, exc_info=True)
        return title, _note(f"Could not be drawn: {type(e).__name__}: {e}")


def render(run: RunRecord) -> str:
    stages, kinds = run.stages, {s.kind for s in run.stages}
    sections = []
    if "rl" in kinds:
        sections += [
            _guarded("Reward and pass rate over RL steps", lambda: _steps_section(
                stages, "rl", "reward_mean", _plot_rl_reward, "reward and pass rate over RL steps")),
            _guarded("Mean response length over RL steps", lambda: _steps_section(
                stages, "rl", "response_length_mean", _plot_rl_length, "response length over RL steps"))]
    sections.append(_guarded("pass@1 and cons@k per stage", lambda: _eval_section(stages)))
    if any(as_dict(s.eval.get("per_domain")) for s in stages):
        sections.append(_guarded("pass@1 per domain", lambda: _domain_section(stages)))
    sections.append(_guarded("Time per stage", lambda: _time_section(stages)))
    if "rejection_sampling" in kinds:
        sections.append(_guarded("Rejection sampling: kept and dropped", lambda: _filter_section(stages)))
    if "sft" in kinds:
        sections.append(_guarded("SFT loss", lambda: _steps_section(stages, "sft", "loss", _plot_sft,
                                                                     "SFT loss over steps")))
    sections.append(_guarded("Stages", lambda: _table(stages)))
    body = "".join(f"<section><h2>{_e(title)}</h2>{content}</section>" for title, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(run.pipeline)}: run report'
            f"</title><style>{CSS}</style></head><body>{_header(run)}{body}</body></html>\n")


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` from what the run directory holds now; return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a directory; give the run directory of a pipeline run "
                         "(the one holding summary.json).")
    out = run_dir / "report.html"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(load_run(run_dir)))
    os.replace(tmp, out)
    return out
