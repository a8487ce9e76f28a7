"""benchmarks/tiny_r1_band.py's helpers: every training-side seed is set and the data's are kept; the band
is the mean and sample std over seeds, per stage and per domain."""

from __future__ import annotations

import json

import pytest
import yaml

from benchmarks.tiny_r1_band import RECIPE, aggregate, collect, markdown, reseed
from orchestrator.yaml_errors import parse_pipeline


def test_reseed_sets_every_training_seed_and_keeps_the_data():
    recipe = yaml.safe_load(RECIPE.read_text())
    spec = parse_pipeline(yaml.safe_dump(reseed(recipe, 7)))
    assert spec.seed == 7 and spec.rollout.seed == 7
    assert all(m.init.seed == 7 for m in spec.models.values() if m.init is not None)
    trained = [s for s in spec.stages if s.kind in ("sft", "rl")]
    assert trained and all(s.train.seed == 7 for s in trained)
    assert reseed(recipe, 7)["datasets"] == recipe["datasets"]      # the same problems for every seed
    assert recipe.get("seed", 0) != 7 and "seed" not in recipe["stages"][0]["train"]   # the input is not changed


def _run(tmp_path, name: str, math: float, general: float, wall: float):
    run = tmp_path / name
    run.mkdir()
    stages = [{"name": "sft", "seconds": 10.0, "eval": {"pass@1": math, "per_domain": {"math": {"pass@1": math}}}},
              {"name": "rs", "seconds": 2.0},
              {"name": "final", "seconds": 1.0, "eval": {"pass@1": (math + general) / 2, "temperature": 0.6,
                                                         "per_domain": {"math": {"pass@1": math},
                                                                        "general": {"pass@1": general}}}}]
    (run / "summary.json").write_text(json.dumps({"status": "succeeded", "stages": stages}))
    (run / "band_wall_s.txt").write_text(f"{wall}\n")
    return collect(run)


def test_band_is_mean_and_sample_std_per_stage_and_domain(tmp_path):
    runs = {0: _run(tmp_path, "a", 0.4, 0.1, 600.0), 1: _run(tmp_path, "b", 0.6, 0.3, 660.0)}
    assert "rs" not in runs[0]["stages"]                            # a stage without an eval has no figure
    table = aggregate(runs)
    assert table["stages"]["sft"]["pass@1"]["mean"] == pytest.approx(0.5)
    assert table["stages"]["sft"]["pass@1"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert table["stages"]["final"]["general"]["mean"] == pytest.approx(0.2)
    assert table["wall_s"]["mean"] == pytest.approx(630.0)
    text = markdown({"aggregate": table})
    assert "| final | 0.350 ± 0.141 | 0.200 ± 0.141 | 0.500 ± 0.141 |" in text and "| sft | 0.500 ± 0.141 | – |" in text
