"""What every role can be asked about the node it runs on: does it see the driver's run directory?

Actors on other nodes write checkpoints and read datasets and sync files under the run directory, so it must be
one filesystem every node mounts. The driver writes a marker with a token of its own into the run directory at
the start of a run, and each actor reads it back before its stage does any work (orchestrator/cluster.py,
``check_run_dir``): a node that sees another directory under the same path, or none, is found at once.
"""

from __future__ import annotations

import socket
from pathlib import Path


class RunDirProbe:
    """Mixed into PolicyTrainer, RolloutWorker and RewardWorker: the run-dir check, and the hand-over to the next
    stage of an actor that outlives its own (orchestrator/actor_pool.py)."""

    def join_stage(self, stage: str, log_file: str | None) -> None:
        """Work for ``stage`` from now on: output to its log file (None: leave it where it goes), metrics under
        its label. The role's own state for the new stage comes with that stage's setup or load call."""
        from actors.actor_log import send_output_to_stage_log
        from actors.actor_metrics import actor_metrics

        if log_file is not None:
            send_output_to_stage_log(log_file)
        actor_metrics().moved_to(stage)

    def sees_run_dir(self, marker: str, token: str) -> tuple[str, str | None]:
        """(this node's address, None if ``marker`` holds ``token``, else what was found instead)."""
        import ray

        node = ray.util.get_node_ip_address() if ray.is_initialized() else socket.gethostname()
        path = Path(marker)
        try:
            found = path.read_text().strip()
        except FileNotFoundError:
            return node, f"there is no {path.name} in {path.parent}" + ("" if path.parent.is_dir() else
                                                                            " (the directory does not exist)")
        except OSError as e:
            return node, f"{path} cannot be read ({e.strerror or e})"
        return node, None if found == token else f"{path} belongs to another run (token {found[:12]}...)"
