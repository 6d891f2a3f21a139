"""Child processes of the local control plane: started in their own process group, logged
to a file, and stopped on teardown, at interpreter exit and on SIGTERM/SIGHUP.

Ctrl-C needs no handler: it raises KeyboardInterrupt, the interpreter unwinds and the
``atexit`` hook stops whatever is still running. A process started with ``detach=True``
(``mlserve dev cluster up``) is left running at exit and stopped later by PID.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from .errors import DevClusterError

LOG_TAIL_LINES = 40
STOP_GRACE_SECONDS = 10.0

_live: list[ManagedProcess] = []
_live_lock = threading.Lock()
_hooks_installed = False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, or a note saying there is none."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(empty log at {path})"


@dataclass
class ManagedProcess:
    """One program of the cluster, running in a process group of its own."""

    name: str
    argv: Sequence[str]
    log_path: Path
    detach: bool = False
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise DevClusterError(f"{self.name} was never started")
        return self.popen.pid

    def start(self) -> ManagedProcess:
        _install_hooks()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self.popen = subprocess.Popen(
                    list(self.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: Ctrl-C reaches us, not it
                    close_fds=True,
                )
            except OSError as exc:
                raise DevClusterError(f"{self.name}: cannot start {self.argv[0]}: {exc}") from exc
        if not self.detach:
            with _live_lock:
                _live.append(self)
        return self

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check(self) -> None:
        """Raise, with the tail of the log, when the process has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise DevClusterError(
                f"{self.name} exited with status {self.popen.returncode}; "
                f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def failure(self, what: str) -> DevClusterError:
        """An error about this component, carrying the tail of its log."""
        return DevClusterError(f"{self.name}: {what}; last lines of {self.log_path}:\n{log_tail(self.log_path)}")

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        if self.popen is None:
            return
        stop_group(self.popen.pid, grace, child=self.popen)
        with _live_lock:
            if self in _live:
                _live.remove(self)


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send a signal to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies, which nobody may reap, do not count)."""
    try:
        os.killpg(pgid, 0)
    except OSError as exc:
        if exc.errno != errno.EPERM:
            return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # fields after the command name: state, ppid, pgrp, ...
            state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


def stop_group(pgid: int, grace: float = STOP_GRACE_SECONDS, child: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group, then SIGKILL it when it outlives the grace period."""
    if not _signal_group(pgid, signal.SIGTERM):
        if child is not None:
            child.poll()
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if child is not None:
            child.poll()  # reap our own child, or it stays a zombie and the group "lives"
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)


def stop_all() -> None:
    """Stop every process started here that is not detached, newest first."""
    with _live_lock:
        processes = list(reversed(_live))
    for process in processes:
        process.stop()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_hooks() -> None:
    """Stop our processes at exit and on SIGTERM/SIGHUP, unless someone else handles those."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)
