"""Route a sample to the rewards of its domain and combine their scores by weight.

All-scenario RL mixes math, code and general samples in one batch; each sample's `domain` field picks the
rewards that apply (a spec without `domains` applies to every sample, including ones with no domain). The
total is the weighted sum of the applicable components, unnormalised, so a weight means the same thing
whatever else applies to the sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from rewards.base import RewardResult
from rewards.config import RewardSpec, parse_specs
from rewards.registry import SafeReward, get_reward


@dataclass(slots=True)
class Combined:
    total: float
    """Weighted sum of the applicable components."""
    components: dict[str, float] = field(default_factory=dict)
    """Unweighted score per applicable component."""
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each component's details, by component name."""


def sample_domain(sample: Mapping[str, Any]) -> str | None:
    domain = sample.get("domain") if isinstance(sample, Mapping) else None
    return domain if isinstance(domain, str) and domain else None


def applicable(specs: list[RewardSpec], domain: str | None) -> Iterator[RewardSpec]:
    """The specs that score a sample of `domain`, in configuration order."""
    return (spec for spec in specs if spec.applies_to(domain))


def combine(specs: list[RewardSpec], results: Mapping[str, RewardResult]) -> Combined:
    """Weight the results (keyed by component) of the specs that were applied."""
    by_name = {spec.component: spec for spec in specs}
    combined = Combined(0.0)
    for name, result in results.items():
        combined.components[name] = result.score
        combined.details[name] = result.details
        combined.total += by_name[name].weight * result.score
    return combined


class RewardRouter:
    """Holds the resolved rewards of a spec list and scores single samples with the ones that apply."""

    def __init__(self, specs: list[RewardSpec] | list[dict[str, Any]]) -> None:
        self.specs = parse_specs(specs)
        self._rewards: dict[str, SafeReward] = {}

    def reward(self, spec: RewardSpec) -> SafeReward:
        # Built lazily: a worker that never sees a code sample never needs the sandbox.
        if spec.component not in self._rewards:
            self._rewards[spec.component] = get_reward(spec.ref, **spec.kwargs)
        return self._rewards[spec.component]

    def score(self, completion: Any, sample: Mapping[str, Any], *, skip_batch: bool = False) -> Combined:
        """Score one sample; with `skip_batch`, rewards that run per batch in the host (http, reward_model) are
        left to the caller."""
        results: dict[str, RewardResult] = {}
        for spec in applicable(self.specs, sample_domain(sample)):
            if skip_batch and spec.in_host:
                continue
            results[spec.component] = self.reward(spec)(completion, sample)
        combined = combine(self.specs, results)
        if not results and not skip_batch:
            combined.details["routing"] = {"message": f"No reward applies to domain {sample_domain(sample)!r}."}
        return combined

    def close(self) -> None:
        for reward in self._rewards.values():
            reward.close()
        self._rewards.clear()
