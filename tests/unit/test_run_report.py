"""The run report: a self-contained report.html from a run directory, whole or half-finished."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from orchestrator.run_report import StageRecord, load_run, time_breakdown, write_report

T0 = 1_700_000_000.0
PIPELINE_YAML = """\
name: fake_r1
stages:
  - {name: cold_start, kind: sft}
  - {name: reasoning_rl, kind: rl}
  - {name: rs, kind: rejection_sampling}
  - {name: rs_sft, kind: sft}
  - {name: all_rl, kind: rl}
  - {name: final_eval, kind: eval}
  - {name: distill, kind: sft}
"""
FILTER = {"candidates": 400, "kept": 180, "dropped": {"incorrect": 150, "format": 40, "too_long": 20,
                                                      "duplicate": 10}, "mixed_in": 64}


def _sft_records(steps: int, dev_every: int = 0, dev_seconds: float = 5.0) -> list[dict]:
    """One second a step after a 10 s start; a dev evaluation of ``dev_seconds`` every ``dev_every`` steps
    (``elapsed_s`` counts from the loop's start, through the evaluations)."""
    out, now = [], T0 + 10.0
    for step in range(1, steps + 1):
        now += 1.0
        out.append({"time": now, "step": step, "loss": 3.0 / step, "lr": 1e-3, "elapsed_s": now - T0 - 10.0})
        if dev_every and step % dev_every == 0:
            now += dev_seconds
            out.append({"time": now, "step": step, "dev_pass@1": 0.1 * step / dev_every, "best_dev_pass@1": 0.1})
    return out


def _rl_records(steps: int, dev_every: int = 2) -> list[dict]:
    """Each step: generate 2, reward 1, logprob 0.5, train 3, sync 0.5, overhead 1 (8 s); dev eval 4 s."""
    out, now, elapsed = [], T0 + 20.0, 0.0
    for step in range(1, steps + 1):
        now += 8.0
        elapsed += 8.0
        record = {"step": step, "reward_mean": 0.2 * step, "reward_std": 0.1, "pass_rate": 0.15 * step,
                  "response_length_mean": 40.0 + step, "response_length_max": 64, "reward/math_mean": 0.15 * step,
                  "reward/format_mean": 0.9, "kl": 0.01, "clip_frac": 0.1, "entropy": 1.2, "generate_s": 2.0,
                  "reward_s": 1.0, "logprob_s": 0.5, "train_s": 3.0, "sync_s": 0.5, "overhead_s": 1.0,
                  "step_s": 8.0, "elapsed_s": elapsed}
        if step % dev_every == 0:
            now += 4.0
            elapsed += 4.0
            record["dev_pass@1"] = 0.1 * step
        out.append({"time": now, **record})
    return out


def _write_jsonl(path: Path, records: list[dict], torn: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + torn)


def _stage(name, kind, status, seconds, metrics=None, eval=None, artifacts=None, error=None) -> dict:
    out = {"name": name, "kind": kind, "status": status, "seconds": seconds, "metrics": metrics or {},
           "eval": eval or {}, "artifacts": artifacts or {}}
    return out | ({"error": error} if error else {})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """sft → rl → rejection sampling (no stage directory) → sft → rl (torn last line) → eval (failed);
    ``distill`` is in the pipeline but never ran."""
    root = tmp_path_factory.mktemp("report") / "run"
    root.mkdir()
    (root / "pipeline.yaml").write_text(PIPELINE_YAML)
    _write_jsonl(root / "cold_start" / "metrics.jsonl", _sft_records(6, dev_every=3))
    _write_jsonl(root / "reasoning_rl" / "metrics.jsonl", _rl_records(4))
    (root / "reasoning_rl" / "eval.json").write_text(json.dumps({"pass@1": 0.3, "cons@4": 0.4}))
    _write_jsonl(root / "rs_sft" / "metrics.jsonl", _sft_records(5))
    mixed = [{**r, "pass_rate/math": 0.2, "pass_rate/code": 0.1 * r["step"]} for r in _rl_records(3)]
    _write_jsonl(root / "all_rl" / "metrics.jsonl", mixed, torn='{"step": 4, "reward_me')
    stages = [
        _stage("cold_start", "sft", "succeeded", 60.0,
               {"best_step": 6, "early_stopping": [{"step": 3, "pass@1": 0.1}, {"step": 6, "pass@1": 0.2}]},
               {"pass@1": 0.2, "mean_response_tokens": 30.5}, {"checkpoint": "cold_start/checkpoint"}),
        _stage("reasoning_rl", "rl", "succeeded", 90.0,
               {"dev_curve": [{"step": s, "dev_pass@1": 0.1 * s} for s in (0, 2, 4)]},
               {"pass@1": 0.3, "cons@4": 0.4, "mean_response_tokens": 44.25}, {"checkpoint": "reasoning_rl/ckpt"}),
        _stage("rs", "rejection_sampling", "succeeded", 50.0,
               {"filter_report": FILTER, "seconds": {"generate": 20.0, "reward": 5.0}}, {},
               {"data": "rs/data.jsonl"}),
        _stage("rs_sft", "sft", "succeeded", 40.0, {}, {"pass@1": 0.35, "per_domain": {
            "code": {"pass@1": 0.3, "problems": 10}, "math": {"pass@1": 0.4, "problems": 10, "cons@4": 0.6}}}),
        _stage("all_rl", "rl", "succeeded", 70.0, {}, {"pass@1": 0.45, "cons@4": 0.5, "mean_response_tokens": 51.0,
                                                       "per_domain": {"math": {"pass@1": 0.5}, "code": {"pass@1": 0.35},
                                                                      "general": {"pass@1": 0.6}}}),
        _stage("final_eval", "eval", "failed", 12.5, error="Traceback (most recent call last):\n  ...\n"
               "RuntimeError: rollout worker died\n"),
    ]
    (root / "summary.json").write_text(json.dumps({"pipeline": "fake_r1", "status": "failed", "stages": stages}))
    return root


@pytest.fixture(scope="module")
def report(run_dir) -> str:
    out = write_report(run_dir)
    assert out == run_dir / "report.html"
    return out.read_text()


def _pngs(text: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_is_self_contained_with_one_plot_per_section(report):
    text = report
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', text, re.I)
    assert "<link" not in text and "<script" not in text
    pngs = _pngs(text)
    # RL reward, RL length, pass@1/cons@k, pass@1 per domain, time, rejection-sampling filter, SFT loss
    assert len(pngs) == 7 == text.count("<img")
    import matplotlib.image

    for png in pngs:
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(io.BytesIO(png))
        height, width = pixels.shape[:2]
        assert width >= 500 and height >= 300
        colours = np.unique(pixels.reshape(-1, pixels.shape[-1])[::7], axis=0)
        assert len(colours) > 20  # drawn lines, text and bars, not a blank canvas


def test_report_header_and_stage_table(report):
    text = report
    assert "Run report: fake_r1" in text
    # Final pass@1 is the last succeeded stage with one (all_rl), against the first SFT stage's.
    assert "Final pass@1 <b>0.450</b> (all_rl) vs <b>0.200</b> after the first SFT stage (cold_start)" in text
    assert "gain <b>+0.250</b>" in text
    assert "total time 5 min 22 s" in text  # 60 + 90 + 50 + 40 + 70 + 12.5
    table = text[text.index("<h2>Stages</h2>"):]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    assert [re.sub(r"<.*?>", "", r.split("</td>")[0]) for r in rows[1:]] == [
        "cold_start", "reasoning_rl", "rs", "rs_sft", "all_rl", "final_eval", "distill"]
    assert '<td class="num">90.0</td><td class="num">0.300</td><td>cons@4 0.400</td>' \
           '<td class="num">44.2</td>' in rows[2]
    assert "code 0.300<br>math 0.400 · cons@4 0.600" in rows[4]
    assert "checkpoint: <code>cold_start/checkpoint</code>" in rows[1]
    assert '<span class="failed">failed</span>' in rows[6] and "12.5" in rows[6]
    assert '<span class="not-run">not run</span>' in rows[7]
    assert "RuntimeError: rollout worker died</summary>" in table
    assert "No steps logged for: distill (not run)." in text  # the SFT stage that never ran


def test_report_shows_filter_counts(report):
    assert ("rs: kept 180, dropped: incorrect 150, dropped: format 40, dropped: too_long 20, "
            "dropped: duplicate 10, mixed in 64 (of 400 candidates)") in report


def test_time_breakdown_adds_up_to_the_stage_seconds(run_dir):
    stages = {s.name: s for s in load_run(run_dir).stages}
    rl = time_breakdown(stages["reasoning_rl"])
    assert rl["generate"] == 8.0 and rl["train"] == 12.0 and rl["overhead"] == 4.0  # 4 steps
    assert rl["between steps (dev eval, checkpoints)"] == 8.0  # two 4 s dev evaluations
    assert rl["rest of the stage (actors, loading, saving, final eval)"] == 90.0 - 32.0 - 8.0
    assert sum(rl.values()) == pytest.approx(90.0)
    sft = time_breakdown(stages["cold_start"])
    assert sft == {"train": 6.0, "dev eval (early stopping)": 10.0,
                   "rest of the stage (actors, loading, saving, final eval)": 44.0}
    assert time_breakdown(stages["rs"]) == {"generate": 20.0, "reward": 5.0,
                                            "rest of the stage (actors, loading, saving, final eval)": 25.0}
    assert time_breakdown(stages["final_eval"]) == {"eval (whole stage)": 12.5}
    assert time_breakdown(stages["distill"]) == {}
    # The torn line of the stage still writing is skipped, not fatal.
    assert [r["step"] for r in stages["all_rl"].rows("step_s")] == [1, 2, 3]


def test_half_finished_and_empty_run_dirs_still_get_a_report(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    (root / "pipeline.yaml").write_text(PIPELINE_YAML)
    _write_jsonl(root / "cold_start" / "metrics.jsonl", _sft_records(2), torn='{"time": 1, "st')
    (root / "summary.json").write_text('{"pipeline": "fake_r1", "status": "runn')  # torn
    text = write_report(root).read_text()
    assert "No stage has a pass@1 yet." in text and "No stage has an evaluation yet." in text
    assert '<span class="unfinished">unfinished</span>' in text  # has a directory, no record
    assert len(_pngs(text)) == 2  # the SFT loss and the time so far of the stage in progress

    empty = tmp_path / "empty"
    empty.mkdir()
    text = write_report(empty).read_text()
    assert "Run report: empty" in text and "<img" not in text
    with pytest.raises(ValueError, match="is not a directory"):
        write_report(tmp_path / "missing")


def test_stage_rows_skip_non_numbers():
    stage = StageRecord("s", "sft", "running", records=[{"step": 1, "loss": float("nan")}, {"step": 2, "loss": "x"},
                                                  {"loss": 1.0}, {"step": 3, "loss": 0.5}, {"step": 4, "loss": True}])
    assert stage.rows("loss") == [{"step": 3, "loss": 0.5}]


def test_cli_writes_the_report(tmp_path, capsys):
    from orchestrator.__main__ import main

    (tmp_path / "pipeline.yaml").write_text(PIPELINE_YAML)
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"Report: {tmp_path / 'report.html'}"
    assert "Run report: fake_r1" in (tmp_path / "report.html").read_text()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err


DRIVER_PIPELINE = """\
name: wired
cluster: {trainer: {workers: 1, cpus: 1}, rollout: {workers: 1, cpus: 1}}
datasets:
  d: {synthetic: {split: sft, size: 16, digits: 1}}
models:
  m: {path: MODEL}
stages:
  - {name: warmup, kind: sft, model: m, data: [d], train: {steps: 1, batch_size: 4, micro_batch_size: 4}}
  - {name: check, kind: eval, model: {from: warmup}, eval: {data: d}}
"""


def _spec(tmp_path: Path):
    from orchestrator.yaml_errors import parse_pipeline

    (tmp_path / "model").mkdir()  # never read: the stages are stand-ins
    return parse_pipeline(DRIVER_PIPELINE.replace("MODEL", str(tmp_path / "model")))


def _fake_stages(monkeypatch, check):
    """The driver with stand-in stage functions and no Ray: what is under test is where the run ends."""
    from contextlib import nullcontext

    from orchestrator import driver
    from orchestrator.stages.context import StageResult

    def warmup(stage, ctx):
        ctx.metrics.log({"step": 1, "loss": 2.5, "elapsed_s": 0.1}, step=1)
        return StageResult(eval={"pass@1": 0.25})

    monkeypatch.setattr(driver.cluster, "connect", lambda *args, **kwargs: nullcontext())
    monkeypatch.setattr(driver, "STAGES", {"sft": warmup, "eval": check})
    return driver


def test_driver_writes_the_report_when_a_stage_fails(tmp_path, monkeypatch, capsys):
    def check(stage, ctx):
        raise RuntimeError("no rollout workers")

    driver = _fake_stages(monkeypatch, check)
    with pytest.raises(driver.StageFailed):
        driver.run_pipeline(_spec(tmp_path), tmp_path / "run", pipeline_text=DRIVER_PIPELINE)
    assert f"Report: {tmp_path / 'run' / 'report.html'}" in capsys.readouterr().out
    text = (tmp_path / "run" / "report.html").read_text()
    assert "Run report: wired" in text and "status <span class=\"failed\">failed</span>" in text
    assert "RuntimeError: no rollout workers</summary>" in text and "Final pass@1 <b>0.250</b> (warmup)" in text


def test_a_failing_report_does_not_fail_the_run(tmp_path, monkeypatch, caplog):
    from orchestrator import run_report
    from orchestrator.stages.context import StageResult

    def broken(run_dir):
        raise OSError("disk full")

    driver = _fake_stages(monkeypatch, lambda stage, ctx: StageResult(eval={"pass@1": 0.5}))
    monkeypatch.setattr(run_report, "write_report", broken)
    summary = driver.run_pipeline(_spec(tmp_path), tmp_path / "run")
    assert summary["status"] == "succeeded"
    assert "could not write the run report" in caplog.text and "disk full" in caplog.text


def test_each_domain_gets_a_curve_over_the_stages_that_report_it(run_dir, report):
    from orchestrator.run_report import domain_curves

    stages = [s for s in load_run(run_dir).stages if s.eval.get("per_domain")]
    assert [s.name for s in stages] == ["rs_sft", "all_rl"]
    assert domain_curves(stages) == {"code": [(0, 0.3), (1, 0.35)], "math": [(0, 0.4), (1, 0.5)],
                                     "general": [(1, 0.6)]}
    assert "<h2>pass@1 per domain</h2><img" in report
    rl = {s.name: s for s in load_run(run_dir).stages}["all_rl"]
    assert [r["pass_rate/code"] for r in rl.rows("pass_rate/code")] == pytest.approx([0.1, 0.2, 0.3])
