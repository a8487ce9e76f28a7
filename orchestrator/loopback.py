"""Keep an embedded (single-machine) Ray on the loopback interface.

Ray replaces a node address of 127.0.0.1 by the machine's routable IP so that other nodes could reach it.
An embedded Ray has no other nodes, so its traffic (GCS, object transfers, the trainers' gloo rendezvous)
belongs on loopback. Ray's only switch for that is its single-node mode, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
which Ray reads when it is first imported: ``prepare`` must run before anything imports ``ray``.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile

SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def local_cluster_running() -> bool:
    """True if `ray start` left a cluster address on this machine and its GCS answers."""
    marker = os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")
    try:
        host, port = open(marker).read().strip().rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def resolve_address(address: str | None) -> str:
    """The address to use: as given, else the Ray job's cluster, else a local `ray start` cluster ("auto"),
    else "local" (start an embedded Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or ("auto" if local_cluster_running() else "local")


def prepare(address: str | None) -> str:
    """Resolve the address and, for an embedded Ray, switch Ray to loopback before it is imported."""
    resolved = resolve_address(address)
    if resolved == "local" and "ray" not in sys.modules:
        os.environ.setdefault(SINGLE_NODE_ENV, "0")
    return resolved
