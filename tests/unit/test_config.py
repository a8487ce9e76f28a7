"""The pipeline schema: every mistake is reported with its YAML path and line, valid files parse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.__main__ import plan
from orchestrator.yaml_errors import PipelineError, load_pipeline, parse_pipeline
from tests.conftest import ROOT

GOOD = """\
name: p
datasets:
  a: {synthetic: {split: sft, size: 10}}
  e: {synthetic: {split: eval, size: 10}}
models:
  tiny:
    init: {arch: qwen2, tokenizer: {train_on: [a]}}
stages:
  - name: s1
    kind: sft
    model: tiny
    data: [a]
    train: {steps: 2, batch_size: 8, micro_batch_size: 4}
  - name: s2
    kind: eval
    model: {from: s1}
    eval: {data: e}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, "p.yaml")
    return info.value.problems


def test_good_pipeline_parses_with_references():
    spec = parse_pipeline(GOOD)
    assert [s.kind for s in spec.stages] == ["sft", "eval"]
    assert spec.stages[1].model.from_ == "s1" and spec.stages[0].model.name == "tiny"


def test_unknown_key_names_path_and_line():
    text = GOOD.replace("train: {steps: 2,", "train: {stepz: 2, steps: 2,")
    assert problems(text) == ["p.yaml:13: stages[0].train.stepz: unknown key (not part of this section; "
                              "check the spelling)"]


def test_wrong_type_names_path_line_and_value():
    [msg] = problems(GOOD.replace("batch_size: 8", "batch_size: eight"))
    assert msg.startswith("p.yaml:13: stages[0].train.batch_size: Input should be a valid integer")
    assert "'eight'" in msg


def test_dangling_and_forward_references():
    text = GOOD.replace("model: {from: s1}", "model: {from: s9}").replace("data: [a]", "data: [a, zz]")
    msgs = problems(text)
    assert "p.yaml:12: stages[0].data[1]: unknown dataset 'zz'; defined: a, e" in msgs
    assert any(m.startswith("p.yaml:16: stages[1].model.from: 'from: s9' does not refer to an earlier stage")
               for m in msgs)
    forward = GOOD.replace("model: tiny\n", "model: {from: s2}\n")
    [msg] = problems(forward)
    assert "p.yaml:11:" in msg and "it runs later" in msg


def test_eval_stage_is_not_a_checkpoint():
    text = GOOD + "  - name: s3\n    kind: eval\n    model: {from: s2}\n    eval: {data: e}\n"
    [msg] = problems(text)
    assert msg.startswith("p.yaml:20: stages[2].model.from:") and "does not produce a checkpoint" in msg


def test_unknown_stage_kind_and_missing_key_and_duplicates():
    text = GOOD.replace("kind: eval", "kind: evaluate").replace("  e: {synthetic", "  a: {synthetic")
    msgs = problems(text)
    assert any(m.startswith("p.yaml:4: datasets.a: duplicate key") for m in msgs)
    assert any(m.startswith("p.yaml:15: stages[1].kind: unknown stage kind 'evaluate'") for m in msgs)
    missing = problems(GOOD.replace("    data: [a]\n", ""))
    assert missing == ["p.yaml:9: stages[0].data: required key is missing"]


def test_batch_must_split_over_ranks_and_micro_batches():
    text = GOOD.replace("name: p\n", "name: p\ncluster: {trainer: {workers: 3}}\n")
    [msg] = problems(text)
    assert msg.startswith("p.yaml:14: stages[0].train.batch_size: batch_size 8 must be a multiple")


def test_yaml_syntax_error_has_a_line():
    [msg] = problems("name: p\nstages: [\n  - a\n")
    assert msg.startswith("p.yaml:") and "not valid YAML" in msg


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_pipelines_validate(path: Path, tmp_path, monkeypatch):
    # tiny_distill reads a finished teacher run (runs/tiny_r1): give it one, relative to the working directory
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "tiny_r1" / "rs").mkdir(parents=True)
    (tmp_path / "runs" / "tiny_r1" / "rs" / "status.json").write_text('{"status": "succeeded"}')
    if path.name.startswith("r1_"):   # full-scale examples: the user's data is not shipped, and nothing else fails
        with pytest.raises(PipelineError) as info:
            load_pipeline(path)
        assert info.value.problems and all(": no dataset file at 'data/r1/" in p for p in info.value.problems)
        assert load_pipeline(path, check_inputs=False).stages
        return
    spec = load_pipeline(path)
    assert spec.stages


def test_a_dataset_from_another_run_needs_that_run_finished(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError) as info:
        load_pipeline(ROOT / "pipelines" / "tiny_distill.yaml")
    [msg] = info.value.problems
    assert "datasets.teacher_rs.from_run: no finished stage 'rs' in run directory 'runs/tiny_r1'" in msg
    (tmp_path / "runs" / "tiny_r1" / "rs").mkdir(parents=True)
    (tmp_path / "runs" / "tiny_r1" / "rs" / "status.json").write_text('{"status": "failed"}')
    with pytest.raises(PipelineError):
        load_pipeline(ROOT / "pipelines" / "tiny_distill.yaml")


@pytest.mark.parametrize("name,gpus,cpus_at_least", [("r1_qwen2_7b", 20, 100), ("r1_deepseek_v3", 400, 3000)])
def test_full_scale_examples_plan_a_sensible_cluster(name, gpus, cpus_at_least):
    spec = load_pipeline(ROOT / "pipelines" / f"{name}.yaml", check_inputs=False)
    text = plan(spec)
    peak = text.splitlines()[-1]
    assert peak.startswith("peak: ") and f", {gpus} GPU" in peak
    assert float(peak.split()[1]) >= cpus_at_least
    kinds = [s.kind for s in spec.stages]
    assert kinds[:5] == ["sft", "rl", "rejection_sampling", "sft", "rl"]


def test_plan_counts_actors_and_resources():
    text = plan(parse_pipeline(GOOD.replace("name: p\n", "name: p\ncluster: {trainer: {workers: 2, gpus: 1}}\n")
                               .replace("micro_batch_size: 4", "micro_batch_size: 2")))
    assert "2 x PolicyTrainer  1 CPU, 1 GPU each" in text
    assert "peak: 2 CPU, 2 GPU" in text


def test_cli_validate_exit_codes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("lr", "x").replace("size: 10}}\n  e", "size: -1}}\n  e"))
    out = subprocess.run([sys.executable, "-m", "orchestrator", "validate", str(bad)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert f"{bad}:3: datasets.a.synthetic.size: Input should be greater than or equal to 1" in out.stderr
    ok = subprocess.run([sys.executable, "-m", "orchestrator", "validate", str(ROOT / "pipelines/smoke.yaml")],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


RL = GOOD + """\
  - name: s3
    kind: rl
    model: {from: s1}
    data: [a]
    rewards:
      - {name: math}
      - {name: format, weight: 0.1}
    steps: 5
    prompts_per_step: 4
    grpo: {n: 4, mini_batches: 2, kl_coef: 0.05}
    dev_eval: {every_steps: 2, data: e}
"""


def test_rl_stage_parses_and_plans_all_three_roles():
    spec = parse_pipeline(RL)
    rl = spec.stages[2]
    assert rl.kind == "rl" and rl.grpo.kl_coef == 0.05 and rl.pass_components == ["math"]
    assert rl.passed({"math": 1.0, "format": 0.0}) and not rl.passed({"format": 1.0})
    assert [r.component for r in rl.rewards] == ["math", "format"]
    text = plan(spec)
    assert "3. s3 (rl)" in text and "RewardWorker" in text and "asks the cluster for 2.5 CPU" in text


def test_rl_stage_mistakes_name_their_line():
    [msg] = problems(RL.replace("{name: format, weight: 0.1}", "{name: formatt, weight: 0.1}"))
    assert msg.startswith("p.yaml:24: stages[2].rewards[1]: ")
    assert "Unknown reward name 'formatt'" in msg
    [msg] = problems(RL.replace("grpo: {n: 4, mini_batches: 2", "grpo: {n: 4, mini_batches: 9"))
    assert msg.startswith("p.yaml:") and "mini_batches (9) cannot exceed prompts_per_step (4)" in msg
    [msg] = problems(RL.replace("grpo: {n: 4,", "grpo: {n: 1,"))
    assert msg.startswith("p.yaml:27: stages[2].grpo.n:")
    [msg] = problems(RL.replace("    steps: 5\n", "    steps: 5\n    pass_reward: code\n"))
    assert "pass_reward 'code' is not one of the rewards: math, format" in msg
    [msg] = problems(RL.replace("every_steps: 2, data: e}", "every_steps: 2, data: nope}"))
    assert msg.startswith("p.yaml:28: stages[2].dev_eval.data: unknown dataset 'nope'")
    [msg] = problems(RL.replace("every_steps: 2, data: e}", "every_steps: 2, data: [e, nope]}"))
    assert msg.startswith("p.yaml:28: stages[2].dev_eval.data[1]: unknown dataset 'nope'")


def test_held_out_blocks_take_one_dataset_or_several():
    one = parse_pipeline(RL).stages[2].dev_eval
    several = parse_pipeline(RL.replace("every_steps: 2, data: e}", "every_steps: 2, data: [e, a]}")).stages[2]
    assert [str(r) for r in one.data] == ["e"] and [str(r) for r in several.dev_eval.data] == ["e", "a"]
    stopping = "    early_stopping: {every_steps: 1, data: [e, a]}\n"
    text = GOOD.replace("    train: {steps: 2,", stopping + "    train: {steps: 2,")
    assert [str(r) for r in parse_pipeline(text).stages[0].early_stopping.data] == ["e", "a"]


def test_async_implies_rollout_logprobs_and_refuses_what_contradicts_it():
    rl = parse_pipeline(RL.replace("    steps: 5\n", "    steps: 5\n    async: {max_staleness: 2}\n")).stages[2]
    assert rl.async_.max_staleness == 2 and rl.grpo.logprobs_source == "rollout"
    assert rl.grpo.loss_settings(temperature=1.0).tis_cap == rl.grpo.tis_cap
    assert parse_pipeline(RL).stages[2].async_ is None
    [msg] = problems(RL.replace("    steps: 5\n", "    steps: 5\n    async: {}\n    sync_every: 2\n"))
    assert msg.startswith("p.yaml:") and "sync_every must stay 1, not 2" in msg
    [msg] = problems(RL.replace("    steps: 5\n", "    steps: 5\n    async: {}\n")
                     .replace("kl_coef: 0.05}", "kl_coef: 0.05, logprobs_source: trainer}"))
    assert "grpo.logprobs_source must be rollout" in msg
    [msg] = problems(RL.replace("    steps: 5\n", "    steps: 5\n    async: {max_staleness: 0}\n"))
    assert msg.startswith("p.yaml:") and "async.max_staleness" in msg


def test_nccl_weight_sync_needs_gpus_on_both_sides():
    nccl = RL.replace("    steps: 5\n", "    steps: 5\n    weight_sync: nccl\n")
    [msg] = problems(nccl)
    assert msg.startswith("p.yaml:26: stages[2].weight_sync: nccl moves weights GPU to GPU")
    assert "cluster.rollout.gpus=0" in msg
    gpus = nccl.replace("name: p\n", "name: p\ncluster: {trainer: {gpus: 1}, rollout: {gpus: 1}}\n")
    assert parse_pipeline(gpus).stages[2].weight_sync == "nccl"
    assert parse_pipeline(RL).stages[2].weight_sync == "auto"
    [msg] = problems(RL.replace("    steps: 5\n", "    steps: 5\n    weight_sync: nvlink\n"))
    assert "stages[2].weight_sync: Input should be 'auto', 'object_store', 'nccl' or 'checkpoint'" in msg


RS = RL + """\
  - name: rs
    kind: rejection_sampling
    model: {from: s3}
    data: [a]
    rewards:
      - {name: math}
      - {name: format}
    n: 4
    filters: {min_scores: {format: 1.0}, max_per_prompt: 1}
    mix:
      - {data: a, ratio: 0.5}
  - name: sft2
    kind: sft
    model: tiny
    data: [{from: rs}]
    train: {steps: 2, batch_size: 8, micro_batch_size: 4}
"""


def test_rejection_sampling_stage_produces_data_for_a_later_sft():
    spec = parse_pipeline(RS)
    rs = spec.stages[3]
    assert rs.kind == "rejection_sampling" and rs.filters.max_per_prompt == 1 and rs.mix[0].ratio == 0.5
    assert spec.stages[4].data[0].from_ == "rs"
    text = plan(spec)
    assert "4. rs (rejection_sampling)" in text and "RolloutWorker" in text


def test_rejection_sampling_mistakes_name_their_line():
    [msg] = problems(RS.replace("min_scores: {format: 1.0}", "min_scores: {langauge: 0.9}"))
    assert msg.startswith("p.yaml:") and "filters.min_scores names 'langauge'" in msg
    [msg] = problems(RS.replace("      - {name: math}\n      - {name: format}\n", "      - {name: format}\n")
                     .replace("min_scores: {format: 1.0}, ", ""))
    assert "filters.correct (math, code, instruction) names none of the rewards (format)" in msg
    # a checkpoint is not a dataset, and a dataset is not a checkpoint
    [msg] = problems(RS.replace("data: [{from: rs}]", "data: [{from: s3}]"))
    assert "stage 's3' (kind rl) does not produce a dataset" in msg
    [msg] = problems(RS.replace("  - name: sft2\n    kind: sft\n    model: tiny", "  - name: sft2\n    kind: sft\n"
                                "    model: {from: rs}"))
    assert "stage 'rs' (kind rejection_sampling) does not produce a checkpoint" in msg
    [msg] = problems(RS.replace("{data: a, ratio: 0.5}", "{data: zz, ratio: 0.5}"))
    assert msg.startswith("p.yaml:39: stages[3].mix[0].data: unknown dataset 'zz'")


def test_model_fp8_flag_is_a_checked_boolean():
    assert parse_pipeline(GOOD.replace("    init: {arch: qwen2", "    fp8: true\n    init: {arch: qwen2"),
                          "p.yaml").models["tiny"].fp8
    assert not parse_pipeline(GOOD, "p.yaml").models["tiny"].fp8
    [msg] = problems(GOOD.replace("    init: {arch: qwen2", "    fp8: maybe\n    init: {arch: qwen2"))
    assert "models.tiny.fp8" in msg


def test_stages_train_in_the_precision_of_their_model_lineage(tmp_path):
    from orchestrator.run_dir import RunDir
    from orchestrator.stages.context import StageContext

    spec = parse_pipeline(RS.replace("    init: {arch: qwen2, tokenizer: {train_on: [a]}}",
                                     "    init: {arch: deepseek_v3, tokenizer: {train_on: [a]}}\n    fp8: true"))
    by_name = {s.name: s for s in spec.stages}
    ctx = StageContext(spec, RunDir(tmp_path, "p"), by_name["sft2"])
    try:
        assert ctx.fp8(by_name["s1"].model) and ctx.fp8(by_name["s3"].model)   # tiny, and {from: s1} -> tiny
        assert ctx.fp8(by_name["sft2"].model)
    finally:
        ctx.close()
    plain = parse_pipeline(RS)
    ctx = StageContext(plain, RunDir(tmp_path / "b", "p"), plain.stages[2])
    try:
        assert not ctx.fp8(plain.stages[2].model)
    finally:
        ctx.close()


def test_fresh_dense_model_needs_a_head_size_vllm_serves_on_cpu():
    # hidden 96 over 4 heads is head size 24: it trains, then its first rollout fails inside vLLM's CPU
    # attention. The YAML is refused with the line of the model's init instead.
    bad = GOOD.replace("init: {arch: qwen2,", "init: {arch: qwen2, config: {hidden_size: 96},")
    [msg] = problems(bad)
    assert msg.startswith("p.yaml:7: models.tiny.init:") and "head size 24" in msg
    good = GOOD.replace("init: {arch: qwen2,", "init: {arch: qwen2, config: {hidden_size: 96, num_attention_heads: 3, "
                        "num_key_value_heads: 1},")
    assert parse_pipeline(good, "p.yaml").models["tiny"].init.config["num_attention_heads"] == 3
    [msg] = problems(GOOD.replace("init: {arch: qwen2,", "init: {arch: qwen2, config: {num_key_value_heads: 3},"))
    assert "multiple of num_key_value_heads (3)" in msg


def test_head_sizes_match_the_installed_vllm():
    cpu_attn = pytest.importorskip("vllm.v1.attention.backends.cpu_attn")
    from orchestrator.arch_defaults import VLLM_CPU_HEAD_SIZES

    assert list(VLLM_CPU_HEAD_SIZES) == list(cpu_attn.CPUAttentionBackend.get_supported_head_sizes())
