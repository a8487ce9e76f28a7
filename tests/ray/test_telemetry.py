"""The stage telemetry on a real Ray: what StageTelemetry records shows up on the node's Prometheus endpoint under the
names deploy/grafana/r1ray.json queries, with the pipeline, stage and role labels and the recorded values; and
what a named actor records in its own process (actors/actor_metrics.py).

The Ray runs in a child process of its own (its own temp dir and metrics port, on 127.0.0.1), so this test neither
needs nor disturbs the session's local Ray, and stops only the processes it started."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.telemetry import EXPORTED
from tests.conftest import ROOT
from tests.own_processes import stop_processes_under
from tests.unit.test_telemetry import _rl_record

CHILD = """
import json, os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # keep the node on 127.0.0.1 (orchestrator/loopback.py)
import time
import ray
from actors.actor_metrics import actor_metrics, records_busy_time
from orchestrator.telemetry import StageTelemetry


class Engine:   # an actor recording its own metrics, named as the project names its actors
    @records_busy_time
    def generate(self):
        time.sleep(0.3)
        actor_metrics().generated(7)

port, temp_dir, record = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
         _metrics_export_port=port, _temp_dir=temp_dir, configure_logging=False)
sft = StageTelemetry("tiny_r1", "cold_start", "sft")
sft.started()
sft.step({"step": 4, "loss": 1.25, "tokens_per_s": 900.0})
sft.finished()
rl = StageTelemetry("tiny_r1", "rl_math", "rl")
rl.started()
rl.step(record)
rl.restart("rollout")
rl.checkpoint(1.5)
rl.weight_sync(0.25, 4096)
engine = ray.remote(num_cpus=0)(Engine).options(name="tiny_r1/rl_math/rollout-1.2", namespace="t").remote()
ray.get([engine.generate.remote() for _ in range(2)])
print("recorded", flush=True)
sys.stdin.read()   # until the test has scraped
ray.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """The r1ray samples on the endpoint: (sample name, labels) → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith("ray_r1ray_")}


def _value(samples: dict, name: str, **labels) -> float:
    [value] = [v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()]
    return value


def test_stage_metrics_reach_the_nodes_prometheus_endpoint():
    port, temp_dir = _free_port(), f"/tmp/r1tel{os.getpid()}"   # short: Ray's socket paths have a length limit
    expected = {series for m in EXPORTED for series in m.series}
    record = _rl_record() | {"dev_eval_s": 3.0}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(port), temp_dir, json.dumps(record)], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline().strip() == "recorded", "the child Ray did not start"
        deadline, samples = time.monotonic() + 120, {}
        while time.monotonic() < deadline:   # Ray's agent exports every few seconds
            try:
                samples = _scrape(port)
            except OSError:
                samples = {}
            if expected <= {name for name, _ in samples}:
                break
            time.sleep(2)
        missing = expected - {name for name, _ in samples}
        assert not missing, f"not exported after 120 s: {sorted(missing)}"

        rl = {"pipeline": "tiny_r1", "stage": "rl_math"}
        assert _value(samples, "ray_r1ray_stage_running", **rl, role="driver", kind="rl") == 1
        assert _value(samples, "ray_r1ray_stage_running", stage="cold_start", kind="sft") == 0
        assert _value(samples, "ray_r1ray_step", **rl, role="driver") == 1
        assert _value(samples, "ray_r1ray_sft_loss", stage="cold_start", role="trainer") == 1.25
        assert _value(samples, "ray_r1ray_sft_tokens_per_second", stage="cold_start") == 900
        assert _value(samples, "ray_r1ray_rl_reward_mean", **rl, role="reward") == 0.75
        assert _value(samples, "ray_r1ray_rl_reward_component_mean", **rl, component="math") == 0.5
        assert _value(samples, "ray_r1ray_rl_pass_rate", **rl) == 0.5
        assert _value(samples, "ray_r1ray_rl_response_length", **rl, role="rollout") == 5
        assert _value(samples, "ray_r1ray_generated_tokens_total", **rl, role="rollout") == 10
        assert _value(samples, "ray_r1ray_reward_errors_total", **rl, role="reward") == 3
        assert _value(samples, "ray_r1ray_reward_timeouts_total", **rl) == 1
        assert _value(samples, "ray_r1ray_phase_seconds", **rl, phase="generate", role="rollout") == 2.0
        assert _value(samples, "ray_r1ray_phase_seconds", **rl, phase="dev_eval", role="rollout") == 3.0
        assert _value(samples, "ray_r1ray_phase_seconds_spent_total", **rl, phase="train", role="trainer") == 1.0
        assert _value(samples, "ray_r1ray_actor_restarts_total", **rl, role="rollout") == 1
        # Histograms: counts are exact, Ray's _sum is made from bucket midpoints (orchestrator/telemetry.py).
        assert _value(samples, "ray_r1ray_checkpoint_seconds_count", **rl, role="trainer") == 1
        assert _value(samples, "ray_r1ray_checkpoint_seconds_bucket", **rl, le="1.0") == 0
        assert _value(samples, "ray_r1ray_checkpoint_seconds_bucket", **rl, le="2.0") == 1
        assert _value(samples, "ray_r1ray_weight_sync_seconds_count", **rl, role="trainer") == 1
        assert _value(samples, "ray_r1ray_weight_sync_bytes", **rl, role="trainer") == 4096
        # Recorded by the actor in its own process, labelled from its name (a replacement's suffix dropped).
        engine = {**rl, "role": "rollout", "rank": "1"}
        assert _value(samples, "ray_r1ray_engine_generated_tokens_total", **engine) == 14
        assert 0.6 <= _value(samples, "ray_r1ray_actor_busy_seconds_total", **engine, call="generate") < 30

        # Ray drops a gauge ~20 s after its last set: a running stage's gauges are set again and stay.
        time.sleep(30)
        later = _scrape(port)
        assert _value(later, "ray_r1ray_stage_running", **rl, kind="rl") == 1
        assert _value(later, "ray_r1ray_rl_reward_mean", **rl) == 0.75
        assert _value(later, "ray_r1ray_phase_seconds", **rl, phase="generate") == 2.0
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        stop_processes_under(temp_dir)   # whatever the child's Ray left behind, and only that
        shutil.rmtree(temp_dir, ignore_errors=True)
