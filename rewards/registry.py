"""Find a reward by name, dotted path, entry point or URL.

Resolution order for `get_reward(ref, **kwargs)`:
1. `http://…` / `https://…` (or the name `http` with `url=`): an `HttpReward` that POSTs batches.
2. `package.module:attribute`: a dotted path, imported on demand.
3. A built-in name (`math`, `code`, …) or one added with `@register_reward("name")`.
4. An entry point in the group `r1ray.rewards` of any installed distribution.

The referenced object is either a class (instantiated with `kwargs`) or a function
`fn(completion, sample, **kwargs)` (bound with `kwargs`). Either way the caller gets a `SafeReward` whose
call never raises. Built-ins are stored as dotted paths so importing the registry stays cheap.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from importlib import metadata
from typing import Any, Callable, Mapping

from rewards.base import RewardResult, call_reward

ENTRY_POINT_GROUP = "r1ray.rewards"

_BUILTINS: dict[str, str] = {
    "math": "rewards.math:MathReward",
    "code": "rewards.code:CodeReward",
    "format": "rewards.format:FormatReward",
    "language": "rewards.language:LanguageReward",
    "instruction": "rewards.instruction:InstructionReward",
    "reward_model": "rewards.reward_model:RewardModelReward",
    "overlong": "rewards.shaping:OverlongPenalty",
    "length": "rewards.shaping:LengthReward",
    "http": "rewards.http_reward:HttpReward",
}

# A registry because users choose rewards from an open set: built-ins, entry points, dotted paths, HTTP.
_REGISTERED: dict[str, Any] = {}


def register_reward(name: str) -> Callable[[Any], Any]:
    """Decorator: make a reward function or class available by `name` in this process."""

    def add(obj: Any) -> Any:
        if name in _BUILTINS:
            raise ValueError(f"The reward name '{name}' is built in; register yours under another name.")
        _REGISTERED[name] = obj
        return obj

    return add


class SafeReward:
    """A resolved reward whose call never raises; forwards `batch` and `close` when the target has them."""

    def __init__(self, fn: Any, name: str) -> None:
        self.fn = fn
        self.name = name

    def __call__(self, completion: Any, sample: Mapping[str, Any]) -> RewardResult:
        return call_reward(self.fn, completion, sample)

    @property
    def supports_batch(self) -> bool:
        return callable(getattr(self.fn, "batch", None))

    def batch(self, completions: list[Any], samples: list[Mapping[str, Any]],
              deadline: float | None = None) -> list[RewardResult]:
        """One result per sample. `deadline` (a time.monotonic() instant) is passed on to a batch reward whose `batch`
        takes one, which then ends its work by that time."""
        if not self.supports_batch:
            return [self(c, s) for c, s in zip(completions, samples)]
        options = {"deadline": deadline} if deadline is not None and self._takes_deadline else {}
        # A batch reward reports its own per-sample failures; this only guards against it raising.
        try:
            results = list(self.fn.batch(completions, samples, **options))
            if len(results) == len(completions):
                return [call_reward(_returning(r), "", {}) for r in results]
            message = f"The batch reward returned {len(results)} results for {len(completions)} samples."
        except Exception as exc:  # noqa: BLE001
            message = f"The batch reward raised {type(exc).__name__}: {exc}"[:300]
        return [RewardResult(0.0, {"error": "reward_error", "message": message}) for _ in completions]

    @functools.cached_property
    def _takes_deadline(self) -> bool:
        try:
            return "deadline" in inspect.signature(self.fn.batch).parameters
        except (TypeError, ValueError):  # no signature to read
            return False

    def warm_up(self) -> None:
        """Start helper processes ahead of the first sample, when the reward has any."""
        warm = getattr(self.fn, "warm_up", None)
        if callable(warm):
            warm()

    def close(self) -> None:
        close = getattr(self.fn, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return f"SafeReward({self.name!r})"


def get_reward(name_or_ref: str, **kwargs: Any) -> SafeReward:
    """Resolve a reward reference (see the module docstring) and bind `kwargs`; raises ValueError if unknown."""
    ref = name_or_ref.strip()
    if ref.startswith(("http://", "https://")):
        kwargs = {"url": ref, **kwargs}
        ref = "http"
    obj = _resolve(ref)
    return SafeReward(_bind(obj, ref, kwargs), ref)


@functools.lru_cache(maxsize=None)
def runs_in_host(ref: str) -> bool:
    """Whether the reward's class sets `in_host = True`: it is built once in the host process and scores whole
    batches there (a model worth loading once), instead of sample by sample in every pool process."""
    try:
        return getattr(_resolve(ref.strip()), "in_host", False) is True
    except ValueError:
        return False  # the pool process that builds it reports why it cannot be loaded


def reward_problem(ref: str, kwargs: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why the reward ``ref`` cannot be built with ``kwargs``, or None: checked before a run starts. Returns which
    part is wrong, ``"ref"`` (it does not resolve: a dotted path that does not import) or ``"args"``, and a sentence.

    A class is built and closed, so its constructor's own checks run (one that loads a model, ``in_host``, only has
    its arguments matched against its signature: the worker that hosts it loads it); a function must accept the
    args."""
    try:
        obj = _resolve(ref.strip())
    except ValueError as exc:
        return "ref", str(exc).rstrip(".")
    try:
        if inspect.isclass(obj) and getattr(obj, "in_host", False) is True:
            inspect.signature(obj).bind(**kwargs)
            return None
        reward = SafeReward(_bind(obj, ref, dict(kwargs)), ref)
    except TypeError as exc:
        return "args", f"reward {ref!r} does not take args {sorted(kwargs)}: {exc}"
    except Exception as exc:  # noqa: BLE001 -- a constructor's own refusal, whatever it raises
        return "args", str(exc).rstrip(".") if isinstance(exc, ValueError) else (
            f"building reward {ref!r} failed: {type(exc).__name__}: {exc}")
    reward.close()
    return None


def list_rewards() -> list[str]:
    """Every name `get_reward` accepts without a dotted path: built-ins, registered, entry points."""
    return sorted(set(_BUILTINS) | set(_REGISTERED) | {ep.name for ep in _entry_points()})


def describe_reward(name: str) -> str:
    """The first line of the reward's docstring, or a note saying why it cannot be loaded."""
    try:
        obj = _resolve(name)
    except ValueError as exc:
        return f"(cannot load: {exc})"
    doc = inspect.getdoc(obj) or ""
    return doc.splitlines()[0] if doc else ""


def _resolve(ref: str) -> Any:
    if ":" in ref:
        return _import_path(ref)
    if ref in _REGISTERED:
        return _REGISTERED[ref]
    if ref in _BUILTINS:
        return _import_path(_BUILTINS[ref])
    for ep in _entry_points():
        if ep.name == ref:
            try:
                return ep.load()
            except Exception as exc:
                raise ValueError(
                    f"The reward '{ref}' is an entry point of group '{ENTRY_POINT_GROUP}' ({ep.value}) "
                    f"but loading it failed: {type(exc).__name__}: {exc}."
                ) from exc
    raise ValueError(
        f"Unknown reward '{ref}'. Known names: {', '.join(list_rewards())}. Use 'package.module:function' "
        f"for a dotted path, or install a package that declares an entry point in group '{ENTRY_POINT_GROUP}'."
    )


def _import_path(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr or " " in path:
        raise ValueError(f"The reward path '{path}' must look like 'package.module:function'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"Cannot import module '{module_name}' for reward '{path}': {exc}.") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"Module '{module_name}' has no attribute '{attr}' (reward '{path}').")
        obj = getattr(obj, part)
    return obj


def _bind(obj: Any, ref: str, kwargs: dict[str, Any]) -> Any:
    if inspect.isclass(obj):
        try:
            instance = obj(**kwargs)
        except TypeError as exc:
            raise ValueError(f"Reward '{ref}' cannot be built with args {sorted(kwargs)}: {exc}.") from exc
        if not callable(instance):
            raise ValueError(f"Reward '{ref}' is a class whose instances are not callable.")
        return instance
    if not callable(obj):
        raise ValueError(f"Reward '{ref}' resolved to a {type(obj).__name__}, which is not callable.")
    if not kwargs:
        return obj
    try:
        inspect.signature(obj).bind(None, None, **kwargs)
    except TypeError as exc:
        raise ValueError(f"Reward '{ref}' cannot be called with args {sorted(kwargs)}: {exc}.") from exc
    except ValueError:
        pass  # builtins without a signature: let the call decide
    return functools.partial(obj, **kwargs)


def _returning(value: Any) -> Callable[[str, Mapping[str, Any]], Any]:
    # Routes an already computed batch result through call_reward's coercion and checks.
    return lambda _completion, _sample: value


def _entry_points() -> list[metadata.EntryPoint]:
    try:
        return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # a broken installed distribution must not break the registry
        return []
