"""Connecting to Ray: an explicit ``--address``, the Ray instance this process already runs (tests), or a new
local instance with the dashboard on.

The dashboard (``ray[default]``) is not decoration: Ray Train's placement-group cleaner needs the state
API, and without it every early-stopped trial leaks its CPUs (see the stack notes). A second local Ray
instance on the same host confuses that cleaner, so when one is already running here we neither start
another nor join it silently: the user is told to pass ``--address auto``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from lensearch.errors import UserError


@dataclass
class RayHandle:
    """What :func:`connect` did; ``close()`` shuts Ray down only if we started or joined it here."""

    owned: bool
    address: str

    def resources(self) -> dict[str, float]:
        import ray

        return {k: float(v) for k, v in ray.cluster_resources().items()}

    def close(self) -> None:
        import ray

        if self.owned and ray.is_initialized():
            ray.shutdown()


def _running_local_instance() -> str | None:
    try:
        from ray._private.services import find_gcs_addresses

        found = list(find_gcs_addresses())
    except Exception:  # pragma: no cover - private API moved
        return None
    return found[0] if len(found) == 1 else None


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse an ``--address`` HOST:PORT (or ``ray://HOST:PORT``) that nothing answers on, in one line.

    ``ray.init`` would otherwise retry for minutes, printing a warning every few seconds. ``auto`` and other
    forms without a port are left to Ray (which fails fast on them).
    """
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__.replace("Error", " error").strip() or str(err)
        raise UserError(f"--address {address}: no Ray cluster answers there ({reason})") from None


def connect(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> RayHandle:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")          # our own progress lines instead of Tune's tables
    if address and address != "auto":
        check_reachable(address)  # also when this process is already connected elsewhere: say so, don't ignore it
    if ray.is_initialized():
        return RayHandle(owned=False, address=ray.get_runtime_context().gcs_address)
    kwargs = {"log_to_driver": not quiet, "logging_level": logging.WARNING if quiet else logging.INFO}
    try:
        if address:
            ray.init(address=address, **kwargs)
        elif (existing := _running_local_instance()) is not None:
            # Joining silently would tie this run to another process's cluster (which dies with it); a second
            # local instance would confuse Ray Train's placement-group cleaner. Ask.
            raise UserError(f"a Ray instance is already running on this machine ({existing}); join it with "
                            "--address auto, or wait until it ends")
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=True, **kwargs)
    except ConnectionError as err:
        raise UserError(f"--address {address}: cannot connect to a Ray cluster ({err})") from None
    return RayHandle(owned=True, address=ray.get_runtime_context().gcs_address)
