"""The stage telemetry (orchestrator/telemetry.py) without Ray: what a real step record turns into, the events the
stage's context forwards, and the Grafana dashboard held to the metric definitions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest

from actors.actor_metrics import ActorMetrics, records_busy_time, tags_from_name
from actors.types import Rollout, StepMetrics
from orchestrator.checkpoints import StageCheckpoints
from orchestrator.cluster import ActorLost
from orchestrator.config import RLStage
from orchestrator.faults import RestartBudget
from orchestrator.run_dir import MetricsLog
from orchestrator.stages.rl_step import PHASES, Group, StepBatch, StepTiming, step_record
from orchestrator.telemetry import EXPORTED, METRICS, PHASE_ROLES, StageTelemetry
from tests.conftest import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "r1ray.json"


class Recorded:
    """Stand-in for Ray's metric objects: every set/inc/observe as (value, tags)."""

    def __init__(self):
        self.calls: dict[str, list[tuple[float, dict]]] = defaultdict(list)

    def instruments(self) -> dict:
        return {m.name: _Instrument(self.calls[m.name]) for m in EXPORTED}

    def one(self, name: str, **tags) -> float:
        """The single value recorded for ``name`` with labels including ``tags``."""
        [value] = [v for v, t in self.calls[name] if tags.items() <= t.items()]
        return value


class _Instrument:
    def __init__(self, calls: list):
        self.calls = calls

    def set(self, value, tags):
        self.calls.append((value, tags))

    inc = observe = set


def _rl_record() -> dict:
    stage = RLStage.model_validate({
        "kind": "rl", "name": "rl_math", "model": "m", "data": ["d"], "rewards": [{"name": "math"},
                                                                                  {"name": "format"}],
        "steps": 2, "prompts_per_step": 2, "grpo": {"n": 2}})
    rollouts = [Rollout(prompt_index=0, prompt_ids=[1, 2], response_ids=[3] * (4 + 2 * i), text="x",
                        response_logprobs=None, finish_reason="stop", policy_version=0) for i in range(2)]
    batch = StepBatch(groups=[Group({"prompt": "p"}, [1, 2], rollouts, [1.0, 0.5],
                                    [{"math": 1.0, "format": 1.0}, {"math": 0.0, "format": 1.0}])],
                      reward_errors=3, reward_timeouts=1, generated_tokens=10)
    batch.seconds.update(generate=2.0, reward=0.5, train=1.0, sync=0.25)
    metrics = [StepMetrics(step=1, loss=0.1, grad_norm=1.0, lr=1e-5, tokens=20, seconds=1.0)]
    return step_record(stage, 1, batch, metrics, version=1, trained_tokens=20,
                       timing=StepTiming.of(batch, True, [], 4.0), t_start=0.0)


def test_a_real_rl_step_record_becomes_labelled_metrics():
    seen = Recorded()
    telemetry = StageTelemetry("tiny_r1", "rl_math", "rl", seen.instruments())
    telemetry.step(_rl_record() | {"dev_eval_s": 3.0})
    base = {"pipeline": "tiny_r1", "stage": "rl_math"}
    assert seen.one("r1ray_step", **base, role="driver") == 1
    assert seen.one("r1ray_rl_reward_mean", **base, role="reward") == 0.75
    assert seen.one("r1ray_rl_pass_rate", role="reward") == 0.5
    assert seen.one("r1ray_rl_reward_component_mean", component="math") == 0.5
    assert seen.one("r1ray_rl_reward_component_mean", component="format") == 1.0
    assert seen.one("r1ray_rl_response_length", role="rollout") == 5.0
    assert seen.one("r1ray_generated_tokens", role="rollout") == 10
    assert seen.one("r1ray_reward_errors") == 3 and seen.one("r1ray_reward_timeouts") == 1
    assert seen.one("r1ray_phase_seconds", phase="generate", role="rollout") == 2.0
    assert seen.one("r1ray_phase_seconds", phase="train", role="trainer") == 1.0
    assert seen.one("r1ray_phase_seconds", phase="dev_eval", role="rollout") == 3.0
    assert seen.one("r1ray_phase_seconds", phase="logprob") == 0.0
    assert seen.one("r1ray_phase_seconds_spent", phase="generate") == 2.0
    spent = [t["phase"] for _, t in seen.calls["r1ray_phase_seconds_spent"]]
    assert spent == ["generate", "reward", "train", "sync", "dev_eval"], "a counter adds nothing for 0 s"
    assert not seen.calls["r1ray_sft_loss"], "an RL step's policy loss is not the SFT loss"


def test_an_sft_record_and_the_stage_events():
    seen = Recorded()
    telemetry = StageTelemetry("tiny_r1", "cold_start", "sft", seen.instruments())
    telemetry.started()
    telemetry.step({"step": 4, "loss": 1.25, "grad_norm": 0.5, "lr": 1e-4, "tokens_per_s": 900.0, "epoch": 0.5})
    telemetry.restart("rollout")
    telemetry.checkpoint(1.5)
    telemetry.weight_sync(0.2, 4096)
    telemetry.finished()
    assert seen.one("r1ray_sft_loss", role="trainer") == 1.25
    assert seen.one("r1ray_sft_tokens_per_second") == 900.0
    assert [v for v, _ in seen.calls["r1ray_stage_running"]] == [1, 0]
    assert seen.calls["r1ray_stage_running"][0][1]["kind"] == "sft"
    assert seen.one("r1ray_actor_restarts", role="rollout") == 1
    assert seen.one("r1ray_checkpoint_seconds", role="trainer") == 1.5
    assert seen.one("r1ray_weight_sync_seconds") == 0.2 and seen.one("r1ray_weight_sync_bytes") == 4096
    assert not seen.calls["r1ray_phase_seconds"], "an SFT step without an evaluation has no phases"


def test_nothing_to_count_records_nothing_and_bad_values_never_raise(caplog):
    seen = Recorded()
    telemetry = StageTelemetry("p", "s", "rl", seen.instruments())
    telemetry.step({"step": 1, "reward_errors": 0, "reward_timeouts": 0, "generated_tokens": 0,
                    "reward_mean": None, "pass_rate": True})
    assert not seen.calls["r1ray_reward_errors"] and not seen.calls["r1ray_generated_tokens"]
    assert not seen.calls["r1ray_rl_reward_mean"] and not seen.calls["r1ray_rl_pass_rate"]

    class Refusing(_Instrument):
        def set(self, value, tags):
            raise ValueError("Missing value for tag key(s): role.")

    StageTelemetry("p", "s", "rl", {m.name: Refusing([]) for m in METRICS}).step({"step": 1})
    assert "r1ray_step not recorded" in caplog.text


def test_without_ray_initialised_recording_is_harmless():
    """Ray's own metric objects, no Ray running: records go nowhere, nothing raises, nothing starts a Ray.

    In a child process: in the full suite the session-scoped local Ray of tests/ray is still up when unit tests run."""
    script = textwrap.dedent("""
        import ray
        from tests.unit.test_telemetry import _rl_record
        from orchestrator.telemetry import StageTelemetry

        assert not ray.is_initialized()
        telemetry = StageTelemetry("p", "s", "rl")
        telemetry.started()
        telemetry.step(_rl_record())
        telemetry.restart("trainer")
        telemetry.checkpoint(0.1)
        telemetry.weight_sync(0.1, 10)
        telemetry.finished()
        assert not ray.is_initialized()
        print("recorded without ray")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "recorded without ray" in done.stdout


def test_gauges_are_set_again_while_the_stage_runs_and_not_after():
    """Ray forgets a gauge ~20 s after its last set; a step can take minutes."""
    seen = Recorded()
    telemetry = StageTelemetry("p", "s", "rl", seen.instruments(), refresh_s=0.02)
    telemetry.started()
    telemetry.step({"step": 3, "reward_errors": 2})
    deadline = time.monotonic() + 10
    while len(seen.calls["r1ray_step"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    telemetry.finished()
    assert len(seen.calls["r1ray_step"]) >= 3 and {v for v, _ in seen.calls["r1ray_step"]} == {3}
    assert len(seen.calls["r1ray_reward_errors"]) == 1, "counters keep their own total: never re-added"
    assert seen.calls["r1ray_stage_running"][-1][0] == 0
    after = len(seen.calls["r1ray_step"])
    time.sleep(0.1)
    assert len(seen.calls["r1ray_step"]) == after


def test_every_phase_of_a_step_has_a_role():
    assert set(PHASES) <= set(PHASE_ROLES)


def test_the_context_hooks_forward_log_records_restarts_and_checkpoints(tmp_path):
    seen = Recorded()
    telemetry = StageTelemetry("p", "s", "rl", seen.instruments())
    log = MetricsLog(tmp_path / "metrics.jsonl", on_log=telemetry.step)
    log.log({"step": 7, "reward_mean": 0.5}, step=7)
    log.close()
    assert seen.one("r1ray_step") == 7 and seen.one("r1ray_rl_reward_mean") == 0.5

    budget = RestartBudget("s", max_restarts=3, on_restart=telemetry.restart)
    budget.spend(ActorLost("reward", 1, "127.0.0.1", RuntimeError("killed")), step=7)
    assert seen.one("r1ray_actor_restarts", role="reward") == 1

    checkpoints = StageCheckpoints(tmp_path / "checkpoints", "fp", 1, None, keep_last=1,
                                   on_commit=telemetry.checkpoint)
    checkpoints.commit(checkpoints.begin(7), 7, {})
    assert 0 <= seen.one("r1ray_checkpoint_seconds") < 60


# ---------------------------------------------------------------------------------------------- the dashboard
def _queries(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    variables = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs + variables


def test_the_dashboard_queries_exactly_the_defined_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for q in _queries(dashboard) for name in re.findall(r"\bray_r1ray_\w+", q)}
    exported = {series for m in EXPORTED for series in m.series}
    assert used <= exported, f"the dashboard queries series the telemetry does not export: {used - exported}"
    without_panel = [m.name for m in EXPORTED if not used & set(m.series)]
    assert not without_panel, f"metrics without a panel in {DASHBOARD.name}: {without_panel}"
    assert all(name.startswith("r1ray_") and set(m.tag_keys) >= {"pipeline", "stage", "role"}
               for m in EXPORTED for name in [m.name])


def test_every_panel_reads_the_chosen_data_source():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert all(t["datasource"]["uid"] == "${datasource}" for p in panels for t in p["targets"])
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_the_grafana_file_is_where_the_docs_say():
    assert Path(DASHBOARD).is_file()
    assert "deploy/grafana/r1ray.json" in (ROOT / "docs" / "architecture.md").read_text()


def test_an_actor_labels_its_own_metrics_from_the_name_the_project_gave_it():
    assert tags_from_name("tiny_r1/rl_math/rollout-1") == {"pipeline": "tiny_r1", "stage": "rl_math",
                                                           "role": "rollout", "rank": "1"}
    assert tags_from_name("tiny_r1/rl_math/trainer-0.3")["rank"] == "0"   # a replacement keeps its rank
    assert tags_from_name(None) is None and tags_from_name("PolicyTrainer") is None
    seen = Recorded()
    named = ActorMetrics(tags_from_name("p/s/reward-2"), seen.instruments())
    named.busy("score", 0.5)
    named.busy("score", 0.0)   # nothing to add: a Ray counter refuses zero
    named.generated(12)
    assert seen.calls["r1ray_actor_busy_seconds"] == [(0.5, {"pipeline": "p", "stage": "s", "role": "reward",
                                                             "rank": "2", "call": "score"})]
    assert seen.calls["r1ray_engine_generated_tokens"][0][0] == 12
    ActorMetrics(None).busy("score", 1.0)   # unnamed, or outside Ray: records nothing, raises nothing


def test_a_decorated_actor_call_records_its_time_even_when_it_raises(monkeypatch):
    from actors import actor_metrics as module

    seen = Recorded()
    monkeypatch.setattr(module, "actor_metrics", lambda: ActorMetrics({"pipeline": "p", "stage": "s",
                                                                       "role": "trainer", "rank": "0"},
                                                                      seen.instruments()))

    class Worker:
        @records_busy_time
        def rl_step(self, fail: bool):
            time.sleep(0.05)
            if fail:
                raise RuntimeError("out of memory")
            return "done"

    assert Worker().rl_step(False) == "done"
    with pytest.raises(RuntimeError, match="out of memory"):
        Worker().rl_step(True)
    calls = seen.calls["r1ray_actor_busy_seconds"]
    assert [tags["call"] for _, tags in calls] == ["rl_step", "rl_step"] and all(v >= 0.05 for v, _ in calls)
