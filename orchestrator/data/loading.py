"""Datasets by reference: user files (JSONL or parquet) and synthetic sets, materialised as JSONL.

Rows are plain dicts in one of two shapes, checked here so a bad file fails with its path and row number:
``{"messages": [{"role": ..., "content": ...}, ...]}`` or ``{"prompt": ..., "response": ...?, "answer": ...?}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.config import DatasetSpec, RunArtifact, SyntheticSpec
from orchestrator.data.code import KINDS as CODE_KINDS, make_code_split
from orchestrator.data.general import KINDS, make_general_split
from orchestrator.data.synthetic import make_split
from orchestrator.run_dir import RunDir

_ROLES = {"system", "user", "assistant"}


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"Dataset file {path} does not exist.")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # ships with Ray

        return pq.read_table(path).to_pylist()
    rows = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON object ({e.msg}).") from None
    return rows


def check_row(row: dict, where: str) -> None:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a row must be a JSON object, got {type(row).__name__}.")
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ValueError(f"{where}: 'messages' must be a non-empty list of {{role, content}}.")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
                raise ValueError(f"{where}: messages[{i}] needs a role in {sorted(_ROLES)} and string content.")
    elif not isinstance(row.get("prompt"), str):
        raise ValueError(f"{where}: a row needs 'messages' or a string 'prompt' (keys: {sorted(row)}).")


def file_problem(path: Path) -> str | None:
    """Why the dataset file at ``path`` cannot be used (a sentence naming its first bad line), or None. Reads the
    whole file, so a bad row is found before the first step rather than in the middle of a stage."""
    if not path.is_file():
        return f"no dataset file at {str(path)!r}" + (" (it is a directory)" if path.exists() else "")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
                check_row(row, f"row {i}")
            return None
        with path.open() as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        return f"{path}:{lineno}: not a JSON object ({e.msg})"
                    check_row(row, f"{path}:{lineno}")
    except ValueError as e:
        return str(e).rstrip(".")
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot read {path}: {e}"
    return None


def synthetic_rows(s: SyntheticSpec) -> list[dict]:
    if s.task == "general":
        return make_general_split(s.split, s.size, seed=s.seed, kinds=tuple(s.kinds or KINDS))
    if s.task == "code":
        return make_code_split(s.split, s.size, seed=s.seed, kinds=tuple(s.kinds or CODE_KINDS),
                               conventions=tuple(s.conventions), cases=s.cases, worked=s.worked)
    return make_split(s.split, s.size, seed=s.seed, digits=s.digits, ops=tuple(s.ops),
                      mul_methods=tuple(s.mul_methods), worked=s.worked)


def run_artifact(source: RunArtifact) -> Path:
    """The file a finished stage of another run directory recorded as its artifact."""
    return RunDir(Path(source.run_dir), "").artifact(source.stage, source.artifact)


def materialize(name: str, spec: DatasetSpec, out_dir: Path) -> Path:
    """The dataset as a JSONL file: user files and other runs' datasets are validated and copied once (the run
    keeps the data it trained on), synthetic sets generated once."""
    out = out_dir / f"{name}.jsonl"
    if out.exists():
        return out
    if spec.synthetic is not None:
        rows = synthetic_rows(spec.synthetic)
    else:
        src = Path(spec.path) if spec.path is not None else run_artifact(spec.from_run)
        rows = read_rows(src)
        for i, row in enumerate(rows):
            check_row(row, f"{src} row {i + 1}")
    if spec.limit is not None:
        rows = rows[: spec.limit]
    for i, row in enumerate(rows):
        row.setdefault("id", f"{name}-{i}")
        if spec.system is not None:
            row.setdefault("system", spec.system)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.rename(out)
    return out
