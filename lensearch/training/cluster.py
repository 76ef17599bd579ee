"""Connecting to Ray: an explicit ``--address``, the Ray instance this process already runs (tests), the local
instance another lensearch process started on this machine, or a new local instance with the dashboard on.

The dashboard (``ray[default]``) is not decoration: Ray Train's placement-group cleaner needs the state
API, and without it every early-stopped trial leaks its CPUs (see the stack notes). A second local Ray
instance on the same host confuses that cleaner, so there is at most one local instance per machine and every
lensearch process on the machine shares it:

- the first search starts it (``ray.init``; its processes die with this driver, so nothing is left behind
  even after ``kill -9``) and records its address and pid in ``<tmp>/lensearch-local-ray.json``;
- a later search finds that record and joins the instance (what ``--address auto`` does), saying so in one
  line; the searches then queue their trials on the same CPUs;
- every process using the instance holds a shared lock on ``<tmp>/lensearch-local-ray.users.lock``; the
  process that started the instance, when its own search is over, waits for that lock to be free (the other
  searches to end) before it shuts the instance down, so it never kills another search's trials. Ctrl-C
  while it waits stops the instance at once (the other searches then stop and can be resumed).

A local instance that no lensearch process started (a user's ``ray start --head``, another program) is not
joined silently: the user is told to pass ``--address auto``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lensearch.errors import UserError

START_LOCK = "lensearch-local-ray.start.lock"   # held while finding or starting the local instance
USERS_LOCK = "lensearch-local-ray.users.lock"   # shared by every process using it; the starter waits for it
RECORD = "lensearch-local-ray.json"             # {"address": GCS address, "pid": starter pid}
JOIN_WAIT_S = 120.0                             # how long to wait for an instance that is being stopped


def _lock_dir() -> Path:
    return Path(os.environ.get("LENSEARCH_LOCK_DIR") or tempfile.gettempdir())


@dataclass
class RayHandle:
    """What :func:`connect` did. ``close()`` disconnects if we connected here, and shuts the local instance
    down if we started it (after the other searches using it have ended)."""

    owned: bool
    address: str
    started: bool = False
    users: object = field(default=None, repr=False)  # open file holding the shared users lock

    def resources(self) -> dict[str, float]:
        import ray

        return {k: float(v) for k, v in ray.cluster_resources().items()}

    def close(self) -> None:
        if not self.owned:
            return
        if self.started and self.users is not None and not _sole_user(self.users):
            # other searches still use the instance: finish this one's work (results, leaderboard) first and
            # wait for them when this process exits
            import atexit

            atexit.register(self._stop_when_alone)
            return
        self._stop_when_alone()

    def _stop_when_alone(self) -> None:
        import ray

        try:
            if self.started and self.users is not None:
                _wait_for_other_users(self.users)
                with _open_lock(START_LOCK) as start:  # no one joins while it is being stopped
                    fcntl.flock(start, fcntl.LOCK_EX)
                    if _read_record().get("pid") == os.getpid():
                        (_lock_dir() / RECORD).unlink(missing_ok=True)
                    if ray.is_initialized():
                        ray.shutdown()
            elif ray.is_initialized():
                ray.shutdown()
        finally:
            if self.users is not None:
                self.users.close()  # releases the lock
                self.users = None


def _sole_user(users) -> bool:
    """Whether no other process holds the users lock (tried by turning our shared lock exclusive; only the
    starter ever asks for it exclusively, so it is simply taken shared again after)."""
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        fcntl.flock(users, fcntl.LOCK_SH)


def _wait_for_other_users(users) -> None:
    """Give up our shared lock and take it exclusively: free once every other search using the instance ended."""
    fcntl.flock(users, fcntl.LOCK_UN)
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    print("lensearch: another search on this machine is using the Ray instance this one started; waiting for it "
          "to end before stopping Ray (Ctrl-C stops Ray now, and the other search with it)", file=sys.stderr,
          flush=True)
    try:
        fcntl.flock(users, fcntl.LOCK_EX)
    except KeyboardInterrupt:
        pass


def _read_record() -> dict:
    try:
        return json.loads((_lock_dir() / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def _local_instances() -> list[str]:
    try:
        from ray._private import services

        services._cached_find_gcs_addresses.cache_clear()  # a new look each time (instances come and go)
        return sorted(services.find_gcs_addresses())
    except Exception:  # pragma: no cover - private API moved
        return []


def _open_lock(name: str):
    path = _lock_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a+")


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
    if address and address != "auto":
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as err:
            raise UserError(f"--address {address}: cannot connect to a Ray cluster ({err})") from None
        return RayHandle(owned=True, address=ray.get_runtime_context().gcs_address)
    return _connect_local(address, num_cpus, kwargs)


def _connect_local(address: str | None, num_cpus: int | None, kwargs: dict) -> RayHandle:
    """Join this machine's lensearch Ray instance, or start it (``address`` is None or ``auto``)."""
    import ray

    deadline = time.monotonic() + JOIN_WAIT_S
    while True:
        with _open_lock(START_LOCK) as start:
            fcntl.flock(start, fcntl.LOCK_EX)   # one process at a time finds or starts the instance
            found = _local_instances()
            record = _read_record()
            ours = bool(found) and record.get("address") in found and _alive(record.get("pid"))
            if not found:
                if address == "auto":
                    raise UserError("--address auto: no Ray instance is running on this machine; leave --address "
                                    "out to start one")
                users = _open_lock(USERS_LOCK)
                fcntl.flock(users, fcntl.LOCK_SH)
                ray.init(num_cpus=num_cpus, include_dashboard=True, **kwargs)
                gcs = ray.get_runtime_context().gcs_address
                tmp = _lock_dir() / f"{RECORD}.{os.getpid()}"
                tmp.write_text(json.dumps({"address": gcs, "pid": os.getpid()}))
                os.replace(tmp, _lock_dir() / RECORD)
                return RayHandle(owned=True, address=gcs, started=True, users=users)
            if not ours and address != "auto":
                # Joining silently would tie this run to someone else's cluster, which may die with its owner.
                raise UserError(f"a Ray instance that lensearch did not start is already running on this machine "
                                f"({', '.join(found)}); join it with --address auto, or wait until it ends")
            target = record["address"] if ours else found[0]
            users = _open_lock(USERS_LOCK)
            try:
                fcntl.flock(users, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # its starter is shutting it down: wait, then start a fresh one
                users.close()
                if time.monotonic() > deadline:
                    raise UserError("the Ray instance on this machine is being stopped and did not end in "
                                    f"{JOIN_WAIT_S:.0f}s; try again later") from None
            else:
                if ours and address is None:
                    print(f"lensearch: joining the Ray instance that another lensearch process (pid "
                          f"{record['pid']}) started on this machine ({target}; as with --address auto); the "
                          f"searches share its CPUs", file=sys.stderr, flush=True)
                try:
                    ray.init(address=target, **kwargs)
                except ConnectionError as err:
                    users.close()
                    raise UserError(f"cannot join the Ray instance at {target} ({err})") from None
                return RayHandle(owned=True, address=target, users=users)
        time.sleep(1.0)
