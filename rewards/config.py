"""How one reward appears in a pipeline YAML (the RL stage holds `rewards: list[RewardSpec]`).

```yaml
rewards:
  - {name: math, weight: 1.0, domains: [math]}
  - {name: code, weight: 1.0, domains: [code], args: {all_or_nothing: true}}
  - {name: format, weight: 0.1}                       # no `domains`: applies to every sample
  - {path: "my_pkg.rewards:brevity", weight: 0.2, args: {target: 400}}
  - {http: {url: "http://127.0.0.1:8000/score", timeout_s: 10, retries: 2}, domains: [general]}
```
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rewards.registry import list_rewards, runs_in_host

_PATH_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class HttpRewardSpec(BaseModel):
    """A user's scoring service: batches are POSTed as JSON (see rewards/http_reward.py for the protocol)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    batch_size: int = Field(64, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"http.url must start with http:// or https://, got '{url}'.")
        return url


class RewardSpec(BaseModel):
    """One reward: exactly one of `name`, `path` or `http`, plus its weight, domains and args."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    """A built-in or registered name, or an entry point of group `r1ray.rewards`."""
    path: str | None = None
    """A dotted path `package.module:function` (or `:Class`)."""
    http: HttpRewardSpec | None = None
    weight: float = 1.0
    domains: list[str] | None = None
    """Sample domains this reward applies to; omitted means every sample."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the reward's class or function."""
    label: str | None = None
    """Component name in metrics; defaults to the name, the function of the path, or `http`."""

    @model_validator(mode="after")
    def _exactly_one_source(self) -> "RewardSpec":
        given = [k for k in ("name", "path", "http") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"A reward needs exactly one of `name`, `path` or `http`; got {given or 'none'}."
            )
        if self.path is not None and not _PATH_RE.match(self.path):
            raise ValueError(f"Reward path '{self.path}' must look like 'package.module:function'.")
        if self.http is not None and self.args:
            raise ValueError("An `http` reward takes its settings inside `http:`, not `args`.")
        if self.name is not None and self.name not in list_rewards():
            raise ValueError(
                f"Unknown reward name '{self.name}'. Known: {', '.join(list_rewards())}; a plugin can also be "
                "given as `path: package.module:function`."
            )
        return self

    @property
    def component(self) -> str:
        if self.label:
            return self.label
        if self.name:
            return self.name
        if self.path:
            return self.path.rsplit(":", 1)[1].rsplit(".", 1)[-1]
        return "http"

    @property
    def ref(self) -> str:
        """The reference `rewards.registry.get_reward` resolves."""
        return self.name or self.path or "http"

    @property
    def kwargs(self) -> dict[str, Any]:
        if self.http is not None:
            return self.http.model_dump()
        return dict(self.args)

    @property
    def in_host(self) -> bool:
        """Scored a batch at a time by the host process, not per sample in the pool: `http` rewards and those
        whose class sets `in_host = True` (`reward_model`)."""
        return self.http is not None or runs_in_host(self.ref)

    def applies_to(self, domain: str | None) -> bool:
        return self.domains is None or (domain is not None and domain in self.domains)


def parse_specs(specs: list[RewardSpec] | list[dict[str, Any]]) -> list[RewardSpec]:
    """Validate a list of specs (dicts from YAML or models) and check that component names are unique."""
    parsed = [s if isinstance(s, RewardSpec) else RewardSpec.model_validate(s) for s in specs]
    seen: dict[str, int] = {}
    for i, spec in enumerate(parsed):
        if spec.component in seen:
            raise ValueError(
                f"rewards[{i}] and rewards[{seen[spec.component]}] are both called '{spec.component}'; "
                "give one of them a `label` so their scores can be told apart."
            )
        seen[spec.component] = i
    return parsed
