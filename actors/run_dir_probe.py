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
    """Mixed into PolicyTrainer, RolloutWorker and RewardWorker."""

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
