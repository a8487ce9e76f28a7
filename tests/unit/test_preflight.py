"""Bad input is refused before the first step, at `validate` and again at `run`: a missing or unparsable dataset
file (its first bad line named), reward args the reward's constructor rejects, a dotted reward path that does not
import, a run directory that cannot be written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrator.yaml_errors import PipelineError, parse_pipeline
from tests.conftest import ROOT

PIPELINE = """\
name: p
datasets:
  prompts: {path: PROMPTS}
models:
  tiny: {init: {arch: qwen2, tokenizer: {train_on: [prompts]}}}
stages:
  - name: rl
    kind: rl
    model: tiny
    data: [prompts]
    rewards:
      - REWARD
    steps: 1
"""


def problems(prompts: str, reward: str = "{name: math}") -> list[str]:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(PIPELINE.replace("PROMPTS", prompts).replace("REWARD", reward), "p.yaml")
    return info.value.problems


def test_a_missing_dataset_file_is_named_with_its_line(tmp_path):
    [msg] = problems(str(tmp_path / "nope.jsonl"))
    assert msg.startswith("p.yaml:3: datasets.prompts.path: no dataset file at") and "nope.jsonl" in msg


def test_a_dataset_file_that_does_not_parse_names_its_first_bad_line(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "1+1", "answer": "2"}\n\n{"prompt": "2+2", "answer": }\n{"bad": 1}\n')
    [msg] = problems(str(data))
    assert msg.startswith("p.yaml:3: datasets.prompts.path: ") and f"{data}:3: not a JSON object" in msg
    data.write_text('{"prompt": "1+1", "answer": "2"}\n{"question": "2+2"}\n')
    [msg] = problems(str(data))
    assert f"{data}:2: a row needs 'messages' or a string 'prompt'" in msg


def test_reward_args_the_constructor_rejects_are_refused(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "1+1", "answer": "2"}\n')
    [msg] = problems(str(data), "{name: math, args: {timeout_s: -1}}")
    assert msg.startswith("p.yaml:12: stages[0].rewards[0].args: math: timeout_s and memory_mb must be positive")
    [msg] = problems(str(data), "{name: format, args: {strictness: 3}}")
    assert "stages[0].rewards[0].args:" in msg and "unexpected keyword argument 'strictness'" in msg


def test_a_dotted_reward_path_that_does_not_import_is_refused(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "1+1", "answer": "2"}\n')
    [msg] = problems(str(data), "{path: 'no_such_package.rewards:brevity'}")
    assert msg.startswith("p.yaml:12: stages[0].rewards[0].path: Cannot import module 'no_such_package.rewards'")
    [msg] = problems(str(data), "{path: 'rewards.format:NoSuchReward'}")
    assert "has no attribute 'NoSuchReward'" in msg


def test_run_refuses_a_run_dir_it_cannot_write(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    run = subprocess.run([sys.executable, "-m", "orchestrator", "run", "pipelines/smoke.yaml", "--run-dir",
                          str(blocker / "run")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert f"the run directory {blocker / 'run'} is not writable" in run.stderr
    assert "Ray" not in run.stderr   # refused before anything started
