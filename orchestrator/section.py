"""The base of every pipeline-schema section, kept apart from config.py so that modules config.py imports
(the GRPO settings in orchestrator/algorithms/grpo.py) can build on it without an import cycle."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A YAML mapping: unknown keys are errors, and aliased fields (``from``) take their Python name too."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
