"""What a resume reads back: atomic checkpoint directories, metrics truncated to the checkpoint, RNG states and data
positions that continue exactly where the uninterrupted run would have gone."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from actors import rng
from orchestrator.checkpoints import StageCheckpoints
from orchestrator.config import FaultTolerance
from orchestrator.run_dir import MetricsLog
from orchestrator.stages.rl_step import PromptSampler
from orchestrator.stages.sft import EpochBatches, _EarlyStopper
from tests.conftest import ROOT


def _write(checkpoints: StageCheckpoints, step: int, payload: bytes = b"x") -> None:
    tmp = checkpoints.begin(step)
    (tmp / "weights.bin").write_bytes(payload)
    checkpoints.commit(tmp, step, {"step": step, "size": len(payload)})


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_whole(tmp_path):
    root = tmp_path / "checkpoints"
    _write(StageCheckpoints(root, "fp", 1, None, keep_last=2), 1, b"a" * 1000)
    # A second process starts checkpoint 2 and is killed while its files are being written.
    writer = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from orchestrator.checkpoints import StageCheckpoints
        from pathlib import Path
        tmp = StageCheckpoints(Path({str(root)!r}), "fp", 1, None, keep_last=2).begin(2)
        with open(tmp / "weights.bin", "wb") as f:
            f.write(b"b" * 4096)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (root / "step-2.tmp" / "weights.bin").exists()   # the torn write is there ...
    checkpoints = StageCheckpoints(root, "fp", 1, None, keep_last=2)
    latest = checkpoints.latest()                           # ... and is never read
    assert latest.step == 1 and latest.state == {"step": 1, "size": 1000}
    assert (latest.path / "weights.bin").read_bytes() == b"a" * 1000
    checkpoints.discard_others(latest)
    assert sorted(p.name for p in root.iterdir()) == ["step-1"]


def test_checkpoints_keep_the_last_k_and_only_their_own_fingerprint(tmp_path):
    root = tmp_path / "checkpoints"
    checkpoints = StageCheckpoints(root, "fp", 2, None, keep_last=2)
    for step in (2, 4, 6):
        _write(checkpoints, step)
    assert [c.step for c in checkpoints.complete()] == [4, 6]
    assert StageCheckpoints(root, "other config", 2, None, keep_last=2).latest() is None
    assert [checkpoints.due(s) for s in (1, 2, 3, 4)] == [False, True, False, True]
    timed = StageCheckpoints(root, "fp", None, 0.2, keep_last=2)
    assert not timed.due(1)
    time.sleep(0.25)
    assert timed.due(1)


def test_metrics_resume_keeps_each_step_once(tmp_path):
    path, tb = tmp_path / "metrics.jsonl", tmp_path / "events"
    log = MetricsLog(path, tb)
    for step in range(1, 6):
        log.log({"step": step, "loss": float(step)}, step=step)
    log.close()
    with path.open("a") as f:
        f.write('{"step": 6, "lo')   # the torn line of a kill mid-write
    resumed = MetricsLog(path, tb, resume_step=3)
    assert [r["step"] for r in resumed.kept] == [1, 2, 3]
    for step in (4, 5):
        resumed.log({"step": step, "loss": 10.0 + step}, step=step)
    assert [r["step"] for r in resumed.rewind(4)] == [1, 2, 3, 4]   # a trainer restart from step 4
    resumed.log({"step": 5, "loss": 20.0}, step=5)
    resumed.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0), (5, 20.0)]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 14.0),
                                                                    (5, 20.0)]
    MetricsLog(path, tb).close()   # no checkpoint: a fresh start drops the earlier attempt's records
    assert path.read_text() == "" and not any(tb.glob("*/*"))


def test_rng_round_trip():
    state = rng.capture()
    first = (random.random(), float(np.random.rand()), torch.rand(3).tolist())
    rng.restore(state)
    assert (random.random(), float(np.random.rand()), torch.rand(3).tolist()) == first


def test_sft_batches_continue_their_order_after_a_restore():
    uninterrupted = EpochBatches(50, 8, seed=3)
    expected = [uninterrupted.next() for _ in range(20)]   # 6 batches an epoch: several reshuffles
    first = EpochBatches(50, 8, seed=3)
    seen = [first.next() for _ in range(7)]
    state = json.loads(json.dumps(first.state()))           # as a checkpoint's state.json holds it
    resumed = EpochBatches(50, 8, seed=3)
    resumed.restore(state)
    assert seen + [resumed.next() for _ in range(13)] == expected


def test_length_grouped_batches_pad_less_and_still_cover_each_epoch():
    rng = random.Random(0)
    lengths = [rng.choice((30, 60, 120)) + rng.randint(0, 9) for _ in range(2000)]
    plain, grouped = EpochBatches(2000, 16, seed=1), EpochBatches(2000, 16, seed=1, lengths=lengths)

    def padded(batches: EpochBatches) -> int:   # tokens of one epoch once each batch pads to its longest row
        return sum(16 * max(lengths[i] for i in batches.next()) for _ in range(2000 // 16))

    assert padded(grouped) < 0.75 * padded(plain)
    epoch = [i for _ in range(2000 // 16) for i in grouped.next()]
    assert len(epoch) == len(set(epoch)) == 2000 // 16 * 16            # no row twice in an epoch, tail dropped
    spans = sorted(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in (grouped.next() for _ in range(40)))
    assert spans[20] <= 9                              # most batches hold one length class (a random one spans ~95)
    first = [EpochBatches(2000, 16, seed=1, lengths=lengths).next() for _ in range(2)]
    assert first[0] == first[1]                                         # seeded: the same batches everywhere


def test_length_grouped_batches_continue_after_a_restore():
    lengths = [i % 7 for i in range(50)]
    uninterrupted = EpochBatches(50, 8, seed=3, lengths=lengths)
    expected = [uninterrupted.next() for _ in range(20)]
    first = EpochBatches(50, 8, seed=3, lengths=lengths)
    seen = [first.next() for _ in range(7)]
    resumed = EpochBatches(50, 8, seed=3, lengths=lengths)
    resumed.restore(json.loads(json.dumps(first.state())))
    assert seen + [resumed.next() for _ in range(13)] == expected


def test_prompts_after_a_restore_continue_the_uninterrupted_order():
    rows = [{"id": i} for i in range(10)]
    expected = [r["id"] for r in PromptSampler(rows, seed=5).take(27)]   # crosses two epoch boundaries
    first = PromptSampler(rows, seed=5)
    seen = [r["id"] for r in first.take(13)]
    resumed = PromptSampler(rows, seed=5)
    resumed.restore(json.loads(json.dumps(first.state())))
    assert seen + [r["id"] for r in resumed.take(14)] == expected


def test_early_stopping_state_round_trip():
    stopper = _EarlyStopper(patience=2, min_delta=0.0)
    for step, score in [(10, 0.2), (20, 0.3), (30, 0.25)]:
        stopper.update(step, score)
    again = _EarlyStopper(patience=2, min_delta=0.0)
    again.restore(json.loads(json.dumps(stopper.state())))
    assert (again.best, again.best_step, again.bad, again.history) == (0.3, 20, 1, stopper.history)
    again.update(40, 0.1)
    assert again.should_stop


@pytest.mark.parametrize("fields", [{"checkpoint_every": 7}, {"keep_last": 5}, {"checkpoint_every_s": None},
                                    {"fault_tolerance": FaultTolerance(max_restarts=0)}])
def test_run_settings_leave_the_fingerprint_alone(fields):
    from orchestrator.driver import stage_fingerprints
    from orchestrator.yaml_errors import parse_pipeline

    spec = parse_pipeline((ROOT / "pipelines" / "smoke.yaml").read_text())
    first = spec.stages[0]

    def with_first(stage):
        return spec.model_copy(update={"stages": [stage, *spec.stages[1:]]})

    assert stage_fingerprints(with_first(first.model_copy(update=fields))) == stage_fingerprints(spec)
    longer = first.model_copy(update={"train": first.train.model_copy(update={"steps": 13})})
    assert stage_fingerprints(with_first(longer))["cold_start"] != stage_fingerprints(spec)["cold_start"]
