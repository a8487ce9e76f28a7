"""What a stage saves by taking over the previous stage's actors (orchestrator/actor_pool.py) instead of starting
its own: per role, the seconds from "the stage needs a trainer group / a rollout engine" to "it is set up for the
stage's model", both ways, alternated in one process so that both see the same machine.

- trainer, new: start a PolicyTrainer group (process, imports, rendezvous) and ``setup`` it;
  taken over: ``join_stage`` and ``setup`` on the running group (the old engine is destroyed first).
- rollout, new: start a RolloutWorker and ``load`` the model (vLLM's import and engine build);
  taken over: ``join_stage`` (the engine goes) and ``load`` (a new engine, in the running process).

The model is make run's tiny DeepSeek-V3 shape (random weights, the tokenizer trained on synthetic rows).

    PYTHONPATH=. python benchmarks/actor_handover.py --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on 127.0.0.1 (orchestrator/loopback.py)

from benchmarks.weight_sync import model_config  # noqa: E402  (after the loopback setting)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    import ray

    from orchestrator.cluster import spawn_rollout, spawn_trainers
    from orchestrator.config import ClusterSpec, InitSpec, RoleResources, RolloutEngineSpec, SFTTrainSpec
    from orchestrator.data.synthetic import make_split
    from orchestrator.fresh_model import materialize

    rows = make_split("sft", 300, digits=2)
    init = InitSpec.model_validate({"arch": "deepseek_v3", "config": model_config(128, 4),
                                    "tokenizer": {"vocab_size": 512, "train_on": ["sft"]}})
    path = str(materialize("bench", init, (r["prompt"] + "\n" + r["response"] for r in rows),
                           Path(tempfile.mkdtemp(prefix="handover-")) / "model"))
    cluster = ClusterSpec(trainer=RoleResources(workers=1, cpus=1, threads=1),
                          rollout=RoleResources(workers=1, cpus=1, threads=1))
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}},
             configure_logging=False, log_to_driver=False)
    settings = SFTTrainSpec(steps=1, batch_size=1, micro_batch_size=1).settings(path, total_steps=1, grad_accum=1,
                                                                              fp8=False)
    engine = RolloutEngineSpec(max_model_len=512).settings()

    def trainer_new():
        group = spawn_trainers(cluster.trainer, cluster)
        group.call("setup", settings)
        return group

    def trainer_taken(group):
        group.call("join_stage", "next", None)
        group.call("setup", settings)

    def rollout_new():
        group = spawn_rollout(cluster.rollout, cluster, engine)
        group.call("load", path, 0)
        return group

    def rollout_taken(group):
        group.call("join_stage", "next", None)
        group.call("load", path, 0)

    times: dict[str, list[float]] = {}
    for role, new, taken in (("trainer", trainer_new, trainer_taken), ("rollout", rollout_new, rollout_taken)):
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            group = new()
            t1 = time.perf_counter()
            taken(group)
            t2 = time.perf_counter()
            group.shutdown()
            times.setdefault(f"{role}, new", []).append(t1 - t0)
            times.setdefault(f"{role}, taken over", []).append(t2 - t1)
    ray.shutdown()
    print(f"| role, way | median s (min-max) of {args.repeat} |")
    print("|---|---:|")
    for key, xs in times.items():
        print(f"| {key} | {statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f}) |")


if __name__ == "__main__":
    main()
