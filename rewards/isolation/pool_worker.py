"""One process of the reward pool (`python -m rewards.isolation.pool_worker`), driven by rewards/isolation/pool.py.

Protocol over its stdin/stdout frames: first the list of RewardSpec dicts, answered by ("ready", "") once
every reward is built and warmed (or ("failed", sentence)); then, per sample, (index, completion, sample)
answered by (index, total, components, details). Host rewards (http, reward_model) never reach this process.
"""

from __future__ import annotations

import traceback

from rewards.isolation.procs import child_pipes, read_frame, write_frame
from rewards.routing import RewardRouter


def main() -> None:
    in_fd, out_fd = child_pipes()
    specs = read_frame(in_fd)
    try:
        router = RewardRouter(specs)
        for spec in router.specs:
            router.reward(spec).warm_up()  # start helpers and sandbox probes now, not inside a deadline
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a sentence
        write_frame(out_fd, ("failed", str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"))
        if not isinstance(exc, ValueError):  # a configuration error needs no traceback
            traceback.print_exc()
        return
    write_frame(out_fd, ("ready", ""))
    while True:
        try:
            i, completion, sample = read_frame(in_fd)
        except EOFError:
            break
        combined = router.score(completion, sample, skip_batch=True)
        write_frame(out_fd, (i, combined.total, combined.components, combined.details))
    router.close()


if __name__ == "__main__":
    main()
