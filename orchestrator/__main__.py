"""python -m orchestrator run PIPELINE.yaml [--run-dir DIR] [--address RAY_ADDRESS] [--verbose] [--no-dashboard]
| validate FILE | plan FILE
| report RUN_DIR"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from orchestrator.config import ROLE_CLASSES, PipelineSpec
from orchestrator.yaml_errors import PipelineError, load_pipeline


def plan(spec: PipelineSpec) -> str:
    """Stages, the actors each holds while it runs (its declared ``roles``) and what they ask of the cluster."""
    lines = [f"pipeline {spec.name}: {len(spec.stages)} stage(s), run one at a time"]
    peak_cpu = peak_gpu = 0.0
    for i, stage in enumerate(spec.stages, 1):
        data = ", ".join(str(d) for d in getattr(stage, "data", []))
        lines.append(f"  {i}. {stage.name} ({stage.kind})  model: {stage.model}" + (f"  data: {data}" if data else ""))
        cpu = gpu = 0.0
        for role in stage.roles:
            res = spec.cluster.resources(role)
            lines.append(f"       {res.workers} x {ROLE_CLASSES[role]:<14} {res.cpus:g} CPU, {res.gpus:g} GPU each")
            cpu, gpu = cpu + res.workers * res.cpus, gpu + res.workers * res.gpus
        lines.append(f"       asks the cluster for {cpu:g} CPU, {gpu:g} GPU")
        peak_cpu, peak_gpu = max(peak_cpu, cpu), max(peak_gpu, gpu)
    lines.append(f"peak: {peak_cpu:g} CPU, {peak_gpu:g} GPU (actors are released between stages)")
    return "\n".join(lines)


def report(run_dir: Path) -> int:
    from orchestrator.run_report import write_report

    try:
        print(f"Report: {write_report(run_dir)}")
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run a pipeline (skips stages that already finished in the run dir)")
    run_p.add_argument("pipeline")
    run_p.add_argument("--run-dir", default=None, help="default: runs/<pipeline name>")
    run_p.add_argument("--address", default=None, help="Ray address to join; default: the job's cluster, a "
                                                       "running local cluster, or an embedded one")
    run_p.add_argument("--verbose", action="store_true", help="show every actor's output (vLLM, DeepSpeed) here "
                       "instead of in RUN_DIR/<stage>/logs/")
    run_p.add_argument("--no-dashboard", action="store_true", help="start an embedded Ray without its dashboard")
    sub_p = sub.add_parser("submit", help="submit `run` as a Ray job whose metadata names the pipeline and run dir")
    sub_p.add_argument("pipeline", help="a pipeline file inside --working-dir")
    sub_p.add_argument("--run-dir", required=True, help="a path every node of the cluster mounts")
    sub_p.add_argument("--address", default=None, help="the cluster's dashboard, e.g. http://HEAD:8265 (default: "
                       "RAY_API_SERVER_ADDRESS, else RAY_ADDRESS, else a cluster on this machine)")
    sub_p.add_argument("--working-dir", default=".", help="uploaded as the job's working directory (default: .)")
    sub_p.add_argument("--runtime-env-json", default=None, help="more runtime env, e.g. "
                       "'{\"env_vars\": {\"HF_HOME\": \"/shared/hf\"}}'")
    sub_p.add_argument("--submission-id", default=None)
    sub_p.add_argument("--no-wait", action="store_true", help="return once submitted instead of following the logs")
    for name, text in (("validate", "check a pipeline file and print every problem"),
                       ("plan", "print stages, actors and cluster resources without starting anything")):
        sub.add_parser(name, help=text).add_argument("pipeline")
    sub.add_parser("report", help="write RUN_DIR/report.html from a run directory (whole or half-finished)"
                   ).add_argument("run_dir")
    args = parser.parse_args(argv)
    if args.command == "report":
        return report(Path(args.run_dir))

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if not getattr(args, "verbose", False):
        # The driver's own libraries (Ray's client, transformers' tokenizer loading) speak at WARNING and up;
        # the project's loggers keep INFO: one line per stage event.
        for noisy in ("ray", "transformers", "filelock", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        # `plan` describes a pipeline whose data may not be at hand yet; `validate` and `run` open every input.
        spec = load_pipeline(args.pipeline, check_inputs=args.command not in ("plan", "submit"))
    except PipelineError as e:
        print(f"{args.pipeline}: {len(e.problems)} problem(s)", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(f"{args.pipeline}: ok ({len(spec.stages)} stage(s))")
        return 0
    if args.command == "plan":
        print(plan(spec))
        return 0
    if args.command == "submit":   # inputs are checked by `run` on the cluster, where its paths point
        from orchestrator.submit import SubmitError, job_request, parse_runtime_env, submit

        try:
            request = job_request(args.pipeline, spec.name, args.run_dir, args.working_dir,
                                  parse_runtime_env(args.runtime_env_json))
        except SubmitError as e:
            print(f"{args.pipeline}: {e}", file=sys.stderr)
            return 2
        return submit(request, args.address, args.submission_id, wait=not args.no_wait)

    from orchestrator.loopback import prepare

    address = prepare(args.address)  # before the first `import ray`
    from orchestrator.driver import StageFailed, run_pipeline

    run_dir = Path(args.run_dir or Path("runs") / spec.name).resolve()
    from orchestrator.run_dir import unwritable

    problem = unwritable(run_dir)
    if problem:
        print(f"{args.pipeline}: {problem}", file=sys.stderr)
        return 2
    try:
        summary = run_pipeline(spec, run_dir, address, Path(args.pipeline).read_text(), verbose=args.verbose,
                               dashboard=not args.no_dashboard)
    except StageFailed as e:
        logs = "" if args.verbose else f"\nActor logs: {run_dir / e.stage / 'logs'}"
        print(f"\nFAILED: {e}\nDetails: {run_dir / e.stage / 'status.json'}{logs}", file=sys.stderr)
        return 1
    print(f"\nPipeline {spec.name}: {summary['status']}. Run directory: {run_dir}")
    for st in summary["stages"]:
        ev = ", ".join(f"{k} {v}" for k, v in st.get("eval", {}).items() if k in ("pass@1", "cons@8",
                                                                                    "mean_response_tokens"))
        print(f"  {st['name']:<20} {st['status']:<10} {st['seconds']:>8.1f} s  {ev}")
    print(f"Summary: {run_dir / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
