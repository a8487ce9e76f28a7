"""Load a pipeline YAML and report every problem with its YAML path and line number.

PyYAML's composed node tree keeps the position of every key and value; pydantic's errors carry a ``loc``
path. Walking one with the other gives ``pipelines/x.yaml:12: stages[0].train.lr: …``. Duplicate keys,
which YAML loaders silently resolve to the last one, are reported too.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from orchestrator.config import STAGE_KINDS, PipelineSpec
from orchestrator.references import Loc, check_references


class PipelineError(ValueError):
    """A pipeline file that cannot be run; ``problems`` holds one sentence per mistake."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _find_node(root: yaml.Node, loc: Loc) -> tuple[yaml.Node, Loc]:
    """The deepest node on ``loc`` and the loc that reaches it. Parts that are not in the YAML (a union's
    tag such as ``sft``, a validator's name) are skipped; a missing key resolves to its parent mapping."""
    node, path = root, ()
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            hit = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if hit is not None:
                node, path = hit, path + (part,)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node, path = node.value[part], path + (part,)
    return node, path


def _key_line(root: yaml.Node, loc: Loc) -> int:
    """1-based line of the key (or item) named by ``loc``; for a mapping key, the key's own line."""
    parent, found = _find_node(root, loc[:-1]) if loc else (root, ())
    if loc and found == tuple(loc[:-1]) and isinstance(parent, yaml.MappingNode):
        for k, _ in parent.value:
            if getattr(k, "value", None) == str(loc[-1]):
                return k.start_mark.line + 1
    node, _ = _find_node(root, loc)
    return node.start_mark.line + 1


def _duplicate_keys(node: yaml.Node, loc: Loc = ()) -> list[tuple[int, str]]:
    found = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = getattr(k, "value", None)
            if key in seen:
                found.append((k.start_mark.line + 1, f"{_format_loc(loc + (key,))}: duplicate key {key!r}"))
            seen.add(key)
            found += _duplicate_keys(v, loc + (key,))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            found += _duplicate_keys(v, loc + (i,))
    return found


def _describe(err: dict) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown key (not part of this section; check the spelling)"
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] == "union_tag_invalid":
        return f"unknown stage kind {err['input'].get('kind')!r}; choose from {err['ctx']['expected_tags']}"
    if err["type"] == "union_tag_not_found":
        return f"every stage needs a 'kind' ({', '.join(STAGE_KINDS)})"
    if "input" in err and err["type"] not in ("model_type", "dict_type") and not isinstance(err["input"], dict):
        return f"{msg} (got {err['input']!r})"
    return msg


def parse_pipeline(text: str, source: str = "<pipeline>", check_inputs: bool = True) -> PipelineSpec:
    """Validate YAML text; raise ``PipelineError`` listing every problem as ``source:line: path: message``.
    ``check_inputs``: also open the dataset files and build the rewards (see ``check_references``)."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise PipelineError([f"{source}{line}: not valid YAML: {getattr(e, 'problem', e)}"]) from None
    if not isinstance(data, dict):
        raise PipelineError([f"{source}:1: a pipeline is a mapping with 'name', 'models' and 'stages'"])
    problems = [(line, f"{source}:{line}: {msg}") for line, msg in _duplicate_keys(root)]
    spec = None
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(err["loc"])
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc += ("kind",)
            if err["type"] in ("extra_forbidden", "missing", "union_tag_invalid", "union_tag_not_found"):
                shown = _find_node(root, loc[:-1])[1] + loc[-1:]  # the key itself may not be in the YAML
            else:
                shown = _find_node(root, loc)[1] or loc
            line = _key_line(root, loc)
            problems.append((line, f"{source}:{line}: {_format_loc(shown)}: {_describe(err)}"))
    for loc, msg in check_references(data, inputs=check_inputs):
        line = _key_line(root, loc)
        problems.append((line, f"{source}:{line}: {_format_loc(loc)}: {msg}"))
    if problems:
        raise PipelineError([p for _, p in sorted(problems, key=lambda x: x[0])])
    return spec


def load_pipeline(path: str | Path, check_inputs: bool = True) -> PipelineSpec:
    path = Path(path)
    if not path.is_file():
        raise PipelineError([f"{path}: no such pipeline file"])
    return parse_pipeline(path.read_text(), str(path), check_inputs)
