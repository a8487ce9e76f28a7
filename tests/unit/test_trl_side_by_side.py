"""benchmarks/trl_side_by_side.py's own helpers: which steps its medians cover, and the project pipeline it writes.
No TRL needed (the benchmark runs TRL in a child process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.trl_side_by_side import medians, project_pipeline, steady
from orchestrator.yaml_errors import parse_pipeline


def _records(steps: int) -> list[dict]:
    # step k takes k seconds; a dev-eval style record without step_s is mixed in
    rows = [{"step": k, "step_s": float(k), "generate_s": k / 2, "train_s": 1.0} for k in range(1, steps + 1)]
    return rows[:3] + [{"step": 3, "dev_pass@1": 0.5}] + rows[3:]


def test_medians_cover_steps_3_to_20_only():
    rows = _records(25)
    assert [r["step"] for r in steady(rows)] == list(range(3, 21))
    m = medians(rows)
    assert m["step_s"] == 11.5 and m["generate_s"] == 5.75 and m["train_s"] == 1.0
    assert "sync_s" not in m  # a key the records lack is left out, not reported as 0


def test_medians_of_a_short_run_use_the_steps_it_has():
    assert medians(_records(5))["step_s"] == 4.0
    with pytest.raises(ValueError, match="no step records"):
        medians(_records(2))


@pytest.mark.parametrize("staleness", [None, 1])
def test_project_pipeline_validates_with_the_stage_named_rl(staleness, tmp_path: Path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "qwen2"}')
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "1+1?", "answer": "2", "domain": "math"}\n')
    spec = project_pipeline(tmp_path / "model", tmp_path / "prompts.jsonl", 20, 2, staleness)
    import yaml

    pipeline = parse_pipeline(yaml.safe_dump(spec), check_inputs=False)
    [stage] = pipeline.stages
    assert stage.name == "rl" and stage.steps == 20 and stage.prompts_per_step == 8 and stage.grpo.n == 8
    assert stage.sampling.max_tokens == 64 and stage.grpo.kl_coef == 0 and stage.train.optim.lr == 1e-4
    assert (stage.async_ is None) == (staleness is None)
