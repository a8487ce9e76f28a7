"""The driver: for each stage in the pipeline, skip it if it already finished, else run it and record it."""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from pathlib import Path

from orchestrator import cluster
from orchestrator.actor_pool import ActorPool
from orchestrator.config import RUN_ONLY_FIELDS, PipelineSpec
from orchestrator.run_dir import RunDir, fingerprint
from orchestrator.stages import eval as eval_stage
from orchestrator.stages import rejection, rl, sft
from orchestrator.stages.context import StageContext
from orchestrator.trackers import Trackers, open_trackers

log = logging.getLogger(__name__)

STAGES = {"sft": sft.run, "rl": rl.run, "eval": eval_stage.run, "rejection_sampling": rejection.run}


class StageFailed(RuntimeError):
    def __init__(self, stage: str, kind: str, cause: BaseException):
        self.stage = stage
        super().__init__(f"Stage {stage!r} ({kind}) failed: {cause}")


def stage_fingerprints(spec: PipelineSpec) -> dict[str, str]:
    """A stage's fingerprint covers its own section, the models and datasets it may read, and every earlier
    stage's fingerprint: changing anything upstream re-runs it, changing nothing skips it. Settings of how a stage
    runs rather than what it computes (checkpointing, fault tolerance: ``RUN_ONLY_FIELDS``) are left out."""
    shared = {"models": spec.model_dump()["models"], "datasets": spec.model_dump()["datasets"],
              "seed": spec.seed}
    out, chain = {}, fingerprint(shared)
    for stage in spec.stages:
        chain = fingerprint([chain, stage.model_dump(mode="json", exclude=set(RUN_ONLY_FIELDS))])
        out[stage.name] = chain
    return out


def run_pipeline(spec: PipelineSpec, run_dir: Path, address: str | None = None, pipeline_text: str = "",
                 verbose: bool = False, dashboard: bool = True) -> dict:
    """Run the stages that have not finished; at the end, succeeded or failed, write RUN_DIR/report.html.

    Actors write their output to RUN_DIR/<stage>/logs/<role>-<rank>.log, or with ``verbose`` to this console;
    ``dashboard`` applies to an embedded Ray (orchestrator/cluster.py, ``connect``)."""
    try:
        return _run_stages(spec, run_dir, address, pipeline_text, verbose, dashboard)
    finally:
        _write_report(run_dir)


def _write_report(run_dir: Path) -> None:
    try:
        from orchestrator.run_report import write_report

        print(f"Report: {write_report(run_dir)}")
    except Exception as e:  # noqa: BLE001 -- the report is a view of the run; it never fails the run
        log.warning("could not write the run report in %s: %s", run_dir, e, exc_info=True)


def _run_stages(spec: PipelineSpec, run_dir: Path, address: str | None, pipeline_text: str, verbose: bool,
                dashboard: bool) -> dict:
    run = RunDir(run_dir, spec.name)
    if pipeline_text:
        (run.root / "pipeline.yaml").write_text(pipeline_text)
    names = [s.name for s in spec.stages]
    fps = stage_fingerprints(spec)
    pending = [s for s in spec.stages if not run.is_finished(s.name, fps[s.name])]
    for stage in spec.stages:
        if stage not in pending:
            log.info("stage %s: already finished in %s, skipping", stage.name, run.root)
    if not pending:
        return run.write_summary(names, "succeeded")
    run.write_summary(names, "running")
    trackers = open_trackers(spec, run.root)
    failed = True   # until every pending stage succeeded (a stage's error, Ctrl-C, a lost cluster)
    try:
        _run_pending(spec, run, pending, fps, trackers, address, verbose, dashboard)
        failed = False
    finally:
        trackers.finish(failed)
    return run.write_summary(names, "succeeded")


def _run_pending(spec: PipelineSpec, run: RunDir, pending: list, fps: dict[str, str], trackers: Trackers,
                 address: str | None, verbose: bool, dashboard: bool) -> None:
    names = [s.name for s in spec.stages]
    with cluster.connect(address, spec.cluster, verbose=verbose, dashboard=dashboard):
        pool = ActorPool()   # actors a stage hands to the next one that needs the same role, built the same way
        try:
            _run_each(spec, run, pending, fps, trackers, verbose, pool, names)
        finally:
            pool.shutdown()
            if pool.reused:
                log.info("actor groups taken over by a later stage: %s", dict(pool.reused))


def _run_each(spec: PipelineSpec, run: RunDir, pending: list, fps: dict[str, str], trackers: Trackers,
              verbose: bool, pool: ActorPool, names: list[str]) -> None:
    for stage in pending:
        log.info("stage %s (%s): starting", stage.name, stage.kind)
        ctx = StageContext(spec, run, stage, fps[stage.name], actor_logs=not verbose, trackers=trackers,
                           pool=pool)
        t0 = time.perf_counter()
        try:
            result = STAGES[stage.kind](stage, ctx)
        except Exception as e:
            run.record(stage.name, stage.kind, "failed", fps[stage.name], time.perf_counter() - t0,
                       error="".join(traceback.format_exception(e))[-20_000:])
            run.write_summary(names, "failed")
            raise StageFailed(stage.name, stage.kind, e) from e
        finally:
            ctx.close()
        seconds = time.perf_counter() - t0
        if ctx.taken_over:
            result.metrics["actors_taken_over"] = ctx.taken_over
        run.record(stage.name, stage.kind, "succeeded", fps[stage.name], seconds, vars(result))
        # Recorded as finished, the stage will never resume: what a resume would read only takes disk now.
        for leftover in ("checkpoints", "chunks"):
            shutil.rmtree(ctx.dir / leftover, ignore_errors=True)
        run.write_summary(names, "running")
        log.info("stage %s: succeeded in %.1f s %s", stage.name, seconds,
                 f"eval {result.eval.get('pass@1')}" if result.eval else "")
