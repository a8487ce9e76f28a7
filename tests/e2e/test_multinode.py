"""A pipeline on a three-node Ray cluster on one machine, submitted with `python -m orchestrator submit`.

A head and two worker raylets, each on its own loopback address (127.0.0.2-4) with its own temp dir, ports and 2
logical CPUs; a tiny SFT stage, then GRPO with 2 trainer ranks and 2 rollout engines under `placement: spread`.
What it checks: the job succeeds and its metadata names the pipeline and the run dir; the dashboard's state API
lists the actors under the project's names (`<pipeline>/<stage>/<role>-<rank>` in the run's namespace); the two
trainer ranks and the two engines each sit on two different nodes; both engines (so at least one on another node
than trainer rank 0) serve the trained weights after each sync (trainer and engine logprobs agree on the sampled
tokens); the two trainer ranks end each stage with bit-identical weights; and while the job runs, every node's own
Prometheus endpoint exports `r1ray_` metrics: the driver's on the head, each actor's own (busy seconds, an
engine's tokens) on the node it sits on.

Why not 127.0.0.1 for every node: Ray's multi-node mode replaces a node address of 127.0.0.1 (also in
`--address`) by the machine's routable IP, and its single-node mode (orchestrator/loopback.py) refuses worker
nodes. Other 127.x addresses are loopback too and Ray leaves them alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.cluster import run_namespace
from tests.conftest import ROOT
from tests.e2e.test_pipelines import _free_port, _get_json
from tests.own_processes import stop_processes_under

pytestmark = pytest.mark.slow

PIPELINE = "tests/e2e/multinode.yaml"   # relative to the repo root, the uploaded working dir
HEAD, WORKERS = "127.0.0.2", ("127.0.0.3", "127.0.0.4")
CPUS_PER_NODE = 2


def _run(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _node_ports() -> tuple[list[str], int]:
    """`ray start` port options and the node's metrics port. Every port a node opens gets its own number: the
    agents bind all interfaces, and other Rays on this machine (other tests' embedded ones) hold the defaults."""
    metrics = _free_port()
    return ["--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
            "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(_free_port()),
            "--node-manager-port", str(_free_port()), "--object-manager-port", str(_free_port())], metrics


class Watch:
    """Calls ``poll_once`` every ``every_s`` seconds on a daemon thread while the job runs, and once more at the
    end, so what was seen is on record even after it is gone (ended actors, aged-out metrics)."""

    every_s = 3.0

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.poll_once()

    def _poll(self) -> None:
        while not self._stop.wait(self.every_s):
            self.poll_once()

    def poll_once(self) -> None:
        raise NotImplementedError


class MetricsWatch(Watch):
    """Every node's Prometheus endpoint: per node IP, the ``ray_r1ray_*`` series seen (name and labels)."""

    every_s = 2.0

    def __init__(self, endpoints: dict[str, int]):
        super().__init__()
        self.endpoints = endpoints
        self.seen: dict[str, set[tuple[str, frozenset]]] = {ip: set() for ip in endpoints}

    def poll_once(self) -> None:
        for ip, port in self.endpoints.items():
            try:
                with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:   # the agent is busy or still starting; the next poll catches up
                continue
            self.seen[ip] |= {(x.name, frozenset(x.labels.items()))
                              for family in text_string_to_metric_families(text) for x in family.samples
                              if x.name.startswith("ray_r1ray_")}

    def labels(self, ip: str, name: str) -> list[dict]:
        return [dict(labels) for n, labels in self.seen[ip] if n == name]


class ActorWatch(Watch):
    """The dashboard's state API: the run's actors (name, class, node, state) as last seen, so a placement is on
    record even if the list drops actors that ended with their stage."""

    def __init__(self, dashboard: str, namespace: str):
        super().__init__()
        self.url = f"{dashboard}/api/v0/actors?limit=1000&detail=1"
        self.namespace = namespace
        self.seen: dict[str, dict] = {}

    def poll_once(self) -> None:
        try:
            actors = _get_json(self.url)["data"]["result"]["result"]
        except Exception:  # noqa: BLE001 -- the dashboard may be busy for a moment; the next poll catches up
            return
        for a in actors:
            if a.get("ray_namespace") == self.namespace and a.get("name"):
                self.seen[a["name"]] = a


def test_a_pipeline_job_spreads_its_roles_over_three_nodes(tmp_path):
    venv_bin = str(Path(sys.executable).parent)
    temp_root = Path("/tmp") / f"r1mn{os.getpid()}"   # short: Ray's unix sockets have a path-length limit
    env = {**os.environ, "PATH": venv_bin + os.pathsep + os.environ["PATH"], "RAY_ADDRESS": "",
           "RAY_AUTH_MODE": "token",                     # Ray's token authentication, on both sides
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",     # multi-node mode (tests/conftest.py sets single-node)
           "RAY_TMPDIR": str(temp_root)}                 # every process of this cluster carries the marker
    token = _run([f"{venv_bin}/ray", "get-auth-token", "--generate"], env, timeout=60)
    assert token.returncode == 0, token.stderr[-2000:]
    port, dash = _free_port(), _free_port()
    dashboard = f"http://127.0.0.1:{dash}"
    run_dir = tmp_path / "run"
    head_ports, metrics_port = _node_ports()
    endpoints = {HEAD: metrics_port}
    t0 = time.perf_counter()
    try:
        # vLLM's own rendezvous address defaults to the routable IP; each node's engines use the node's.
        head = _run([f"{venv_bin}/ray", "start", "--head", "--node-ip-address", HEAD, "--port", str(port),
                     "--num-cpus", str(CPUS_PER_NODE), "--temp-dir", str(temp_root / "head"),
                     "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                     "--ray-client-server-port", str(_free_port()), "--disable-usage-stats", *head_ports],
                    {**env, "VLLM_HOST_IP": HEAD}, timeout=180)
        assert head.returncode == 0, head.stderr[-3000:]
        for i, ip in enumerate(WORKERS):
            ports, endpoints[ip] = _node_ports()
            worker = _run([f"{venv_bin}/ray", "start", "--address", f"{HEAD}:{port}", "--node-ip-address", ip,
                           "--num-cpus", str(CPUS_PER_NODE), "--temp-dir", str(temp_root / f"worker{i}"),
                           "--disable-usage-stats", *ports], {**env, "VLLM_HOST_IP": ip}, timeout=180)
            assert worker.returncode == 0, worker.stderr[-3000:]
        nodes = _wait_for_nodes(dashboard, 3)
        assert {n["node_ip"] for n in nodes} == {HEAD, *WORKERS}
        started = time.perf_counter() - t0

        namespace = run_namespace("multinode", run_dir)
        cmd = [sys.executable, "-m", "orchestrator", "submit", PIPELINE, "--run-dir",
               str(run_dir), "--address", dashboard]
        with ActorWatch(dashboard, namespace) as watch, MetricsWatch(endpoints) as scraped:
            for _ in range(12):  # right after `ray start` the head's job agent may not have registered yet
                submit = _run(cmd, env, timeout=1200)
                if "No available agent to submit job" not in submit.stderr + submit.stdout:
                    break
                time.sleep(5)
        out = submit.stdout + submit.stderr
        assert submit.returncode == 0, out[-6000:]
        job_s = time.perf_counter() - t0 - started
        print(f"cluster up in {started:.0f} s, job {job_s:.0f} s")

        _check_job(dashboard, out, env, run_dir)
        _check_run(run_dir)
        _check_placement(watch.seen, {n["node_id"]: n["node_ip"] for n in nodes})
        _check_metrics(scraped, watch.seen, {n["node_id"]: n["node_ip"] for n in nodes})
    finally:
        stop_processes_under(str(temp_root))   # this cluster's processes only; `ray stop` would end every Ray here
        shutil.rmtree(temp_root, ignore_errors=True)


def _wait_for_nodes(dashboard: str, count: int, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            nodes = [n for n in _get_json(f"{dashboard}/api/v0/nodes?limit=10")["data"]["result"]["result"]
                     if n["state"] == "ALIVE"]
        except Exception:  # noqa: BLE001 -- the dashboard is still starting
            nodes = []
        if len(nodes) == count or time.monotonic() > deadline:
            assert len(nodes) == count, nodes
            return nodes
        time.sleep(2)


def _check_job(dashboard: str, out: str, env: dict, run_dir: Path) -> None:
    """The job succeeded, and Ray holds the pipeline and the run dir in its metadata."""
    line = next(x for x in out.splitlines() if x.startswith("Submitted job "))
    job_id = line.split()[2].rstrip(":")
    assert f"Job {job_id} SUCCEEDED" in out
    probe = ("import json, sys; from ray.job_submission import JobSubmissionClient as C; "
             "info = C(sys.argv[1]).get_job_info(sys.argv[2]); "
             "print(json.dumps({'status': str(info.status), 'metadata': info.metadata, "
             "'entrypoint': info.entrypoint}))")
    got = _run([sys.executable, "-c", probe, dashboard, job_id], env, timeout=60)  # token auth set in its env
    assert got.returncode == 0, got.stderr[-2000:]
    info = json.loads(got.stdout.strip().splitlines()[-1])
    assert info["status"] == "SUCCEEDED"
    assert info["metadata"] == {"pipeline": "multinode", "run_dir": str(run_dir),
                                "pipeline_file": PIPELINE}
    assert info["entrypoint"] == f"python -m orchestrator run {PIPELINE} --run-dir {run_dir}"


def _check_run(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "succeeded" and [s["status"] for s in summary["stages"]] == ["succeeded"] * 2
    steps = [json.loads(x) for x in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == [1, 2]
    metrics = json.loads((run_dir / "rl" / "status.json").read_text())["metrics"]
    assert metrics["weight_sync"] == "object_store"
    # The weights reached both engines (on two nodes, so at least one away from trainer rank 0): the trainer's
    # logprobs of the tokens they sampled after a sync equal theirs to ~2e-7. A stale engine would be far off:
    # measured here, the two lr-1e-3 steps moved the model's logprobs by ~0.1 per token.
    for r in steps:
        assert r["sync_s"] > 0 and r["policy_version_lag"] == 0.0
        assert r["grad_norm"] > 0, steps   # the step moved the weights (the length penalty gives advantages)
        assert r["rollout_logprob_diff"] < 1e-4, steps
    assert steps[-1]["policy_version"] >= 1
    # The two trainer ranks, on two nodes, end each stage with the same weights (the stage checks it, exactly).
    for stage in ("sft", "rl"):
        sums = json.loads((run_dir / stage / "status.json").read_text())["metrics"]["rank_checksums"]
        assert len(sums) == 2 and sums[0] == sums[1], (stage, sums)


def _check_metrics(scraped: MetricsWatch, actors: dict[str, dict], node_ip: dict[str, str]) -> None:
    """The driver's metrics leave through the head's endpoint; every node that hosted an actor exported that
    actor's own ones (labelled with its role and rank, from its name)."""
    driver = scraped.labels(HEAD, "ray_r1ray_step")
    assert {x["stage"] for x in driver} == {"sft", "rl"} and {x["pipeline"] for x in driver} == {"multinode"}
    assert scraped.labels(HEAD, "ray_r1ray_rl_reward_mean") and scraped.labels(HEAD, "ray_r1ray_sft_loss")
    for name, actor in actors.items():
        _, stage, who = name.split("/")
        role, rank = who.split(".")[0].split("-")
        ip = node_ip[actor["node_id"]]
        busy = scraped.labels(ip, "ray_r1ray_actor_busy_seconds_total")
        assert any(x["stage"] == stage and x["role"] == role and x["rank"] == rank for x in busy), (name, ip, busy)
    # Taken over by the rl stage, the sft stage's trainer ranks count their rl steps under the rl label.
    for rank in ("0", "1"):
        ip = node_ip[actors[f"multinode/sft/trainer-{rank}"]["node_id"]]
        busy = scraped.labels(ip, "ray_r1ray_actor_busy_seconds_total")
        assert any(x["stage"] == "rl" and x["call"] == "rl_step" and x["rank"] == rank for x in busy), (rank, busy)
    for rank in ("0", "1"):
        tokens = scraped.labels(node_ip[actors[f"multinode/rl/rollout-{rank}"]["node_id"]],
                                "ray_r1ray_engine_generated_tokens_total")
        assert any(x["rank"] == rank for x in tokens), (rank, tokens)


def _check_placement(seen: dict[str, dict], node_ip: dict[str, str]) -> None:
    """Named as the project names them, and `placement: spread` put each role's two actors on two nodes. The rl
    stage took the sft stage's trainer ranks over (orchestrator/actor_pool.py) and started the other roles."""
    assert not any(n.startswith("multinode/rl/trainer-") for n in seen), sorted(seen)
    for stage, roles in (("sft", {"trainer": "PolicyTrainer"}),
                         ("rl", {"rollout": "RolloutWorker", "reward": "RewardWorker"})):
        for role, cls in roles.items():
            ranks = 1 if role == "reward" else 2
            names = [f"multinode/{stage}/{role}-{r}" for r in range(ranks)]
            assert all(n in seen for n in names), sorted(seen)
            assert all(seen[n]["class_name"] == cls for n in names)
            if ranks == 2:
                where = [node_ip[seen[n]["node_id"]] for n in names]
                assert where[0] != where[1], f"{stage} {role} ranks both on {where[0]}"
