"""Cross-section checks of a pipeline YAML that its schema (``orchestrator.config``) cannot express: every name a
section refers to exists, ``from:`` points at an earlier stage that produces what is asked for, SFT batches split
evenly over ranks, and ``weight_sync: nccl`` has whole GPUs. They run on the raw YAML mapping, so
``orchestrator.yaml_errors`` reports them with the schema's own problems, each with its line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from orchestrator.config import PRODUCES_CHECKPOINT, PRODUCES_DATA
from orchestrator.data.loading import file_problem
from rewards.registry import list_rewards, reward_problem

Loc = tuple[str | int, ...]


def _ref_parts(value: Any) -> tuple[str | None, str | None]:
    """(name, from) of a reference as written in YAML; (None, None) if it is malformed (pydantic says why)."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and isinstance(value.get("from"), str):
        return None, value["from"]
    return None, None


def check_references(data: dict, inputs: bool = True) -> list[tuple[Loc, str]]:
    """Cross-section checks pydantic cannot express: names exist and ``from:`` points backwards; with ``inputs``
    also what a run reads (dataset files parse, rewards build with their args), so a bad file or argument is
    refused before the first step rather than in the middle of a stage (``plan`` skips these).

    Works on the raw YAML mapping, defensively, so these problems are reported together with the schema's
    own instead of only after every schema error is fixed.
    """
    problems: list[tuple[Loc, str]] = []
    models = data.get("models") if isinstance(data.get("models"), dict) else {}
    datasets = data.get("datasets") if isinstance(data.get("datasets"), dict) else {}
    raw_stages = data.get("stages") if isinstance(data.get("stages"), list) else []
    stages = [s if isinstance(s, dict) else {} for s in raw_stages]
    kinds: dict[str, str] = {}

    def check(value: Any, loc: Loc, table: dict, what: str, producers: set[str], output: str) -> None:
        name, source = _ref_parts(value)
        if name is not None and name not in table:
            problems.append((loc, f"unknown {what} {name!r}; defined: {', '.join(map(str, table)) or 'none'}"))
        elif source is not None and source not in kinds:
            later = any(s.get("name") == source for s in stages)
            hint = "it runs later; a stage can only use earlier stages" if later else "no stage has that name"
            problems.append((loc + ("from",), f"'from: {source}' does not refer to an earlier stage ({hint})"))
        elif source is not None and kinds[source] not in producers:
            problems.append((loc + ("from",), f"stage {source!r} (kind {kinds[source]}) does not produce {output}"))

    for name, model in models.items():
        tok = ((model or {}).get("init") or {}).get("tokenizer") if isinstance(model, dict) else None
        train_on = tok.get("train_on") if isinstance(tok, dict) else None
        for j, ds in enumerate(train_on if isinstance(train_on, list) else []):
            if isinstance(ds, str) and ds not in datasets:
                problems.append((("models", name, "init", "tokenizer", "train_on", j), f"unknown dataset {ds!r}"))
        path = model.get("path") if isinstance(model, dict) else None
        if isinstance(path, str) and not Path(path).exists():
            problems.append((("models", name, "path"), f"no checkpoint directory at {path!r}"))
    for name, ds in datasets.items():
        path = ds.get("path") if isinstance(ds, dict) else None
        if inputs and isinstance(path, str) and (problem := file_problem(Path(path))):
            problems.append((("datasets", name, "path"), problem))
        source = ds.get("from_run") if isinstance(ds, dict) else None
        if isinstance(source, dict) and isinstance(source.get("run_dir"), str) and isinstance(source.get("stage"), str):
            status = Path(source["run_dir"]) / source["stage"] / "status.json"
            if not status.exists() or '"succeeded"' not in status.read_text():
                problems.append((("datasets", name, "from_run"),
                                 f"no finished stage {source['stage']!r} in run directory {source['run_dir']!r} "
                                 f"(run that pipeline first)"))
    for i, stage in enumerate(stages):
        loc: Loc = ("stages", i)
        if stage.get("name") in kinds:
            problems.append((loc + ("name",), f"duplicate stage name {stage['name']!r}"))
        if "model" in stage:
            check(stage["model"], loc + ("model",), models, "model", PRODUCES_CHECKPOINT, "a checkpoint")
        for j, ref in enumerate(stage.get("data") if isinstance(stage.get("data"), list) else []):
            check(ref, loc + ("data", j), datasets, "dataset", PRODUCES_DATA, "a dataset")
        for j, mix in enumerate(stage.get("mix") if isinstance(stage.get("mix"), list) else []):
            if isinstance(mix, dict) and "data" in mix:
                check(mix["data"], loc + ("mix", j, "data"), datasets, "dataset", PRODUCES_DATA, "a dataset")
        for block in ("eval", "early_stopping", "dev_eval"):
            if isinstance(stage.get(block), dict) and "data" in stage[block]:
                refs = stage[block]["data"]
                if isinstance(refs, list):
                    for j, ref in enumerate(refs):
                        check(ref, loc + (block, "data", j), datasets, "dataset", PRODUCES_DATA, "a dataset")
                else:
                    check(refs, loc + (block, "data"), datasets, "dataset", PRODUCES_DATA, "a dataset")
        for j, reward in enumerate(stage.get("rewards") if inputs and isinstance(stage.get("rewards"), list) else []):
            problems += _check_reward(reward, loc + ("rewards", j))
        if stage.get("kind") == "sft":  # RL batches are sized by prompts_per_step x grpo.n, split as they come
            problems += _check_batch(stage.get("train"), loc, data.get("cluster"))
        if stage.get("kind") == "rl" and stage.get("weight_sync") == "nccl":
            roles = data.get("cluster") if isinstance(data.get("cluster"), dict) else {}
            gpus = [r.get("gpus", 0) if isinstance(r := roles.get(role), dict) else 0
                    for role in ("trainer", "rollout")]
            problem = nccl_gpu_problem(*gpus)
            if problem:
                problems.append((loc + ("weight_sync",), problem))
        if isinstance(stage.get("name"), str):
            kinds[stage["name"]] = str(stage.get("kind"))
    return problems


def _check_reward(reward: Any, loc: Loc) -> list[tuple[Loc, str]]:
    """A named or dotted-path reward must build with its args (the schema already refused unknown names and
    malformed paths, so only those that pass it are built here)."""
    if not isinstance(reward, dict) or not isinstance(args := reward.get("args", {}), dict):
        return []
    name, path = reward.get("name"), reward.get("path")
    if isinstance(name, str) and name in list_rewards():
        ref, key = name, "name"
    elif isinstance(path, str) and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", path):
        ref, key = path, "path"
    else:
        return []
    found = reward_problem(ref, args)
    if found is None:
        return []
    part, problem = found
    return [(loc + ("args" if part == "args" and args else key,), problem)]


def nccl_gpu_problem(trainer_gpus: Any, rollout_gpus: Any) -> str | None:
    """Why ``weight_sync: nccl`` cannot run on this cluster (a sentence), or None when it can."""
    # Whole GPUs: NCCL cannot have two members of one group on the same device.
    if all(isinstance(g, (int, float)) and g >= 1 for g in (trainer_gpus, rollout_gpus)):
        return None
    return (f"nccl moves weights GPU to GPU, so every trainer and rollout worker needs a whole GPU of its own "
            f"(cluster.trainer.gpus={trainer_gpus}, cluster.rollout.gpus={rollout_gpus}); without them use auto, "
            "object_store or checkpoint")


def _check_batch(train: Any, loc: Loc, cluster: Any) -> list[tuple[Loc, str]]:
    """An optimizer step's batch must split evenly into ranks × micro-batches (DeepSpeed's invariant)."""
    if not isinstance(train, dict):
        return []
    batch, micro = train.get("batch_size", 32), train.get("micro_batch_size", 8)
    trainer = (cluster or {}).get("trainer") if isinstance(cluster, dict) else None
    ranks = trainer.get("workers", 1) if isinstance(trainer, dict) else 1
    if not all(isinstance(x, int) and x > 0 for x in (batch, micro, ranks)):
        return []
    if batch % (micro * ranks):
        return [(loc + ("train", "batch_size"),
                 f"batch_size {batch} must be a multiple of micro_batch_size ({micro}) x trainer workers ({ranks})")]
    return []
