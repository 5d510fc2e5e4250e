"""Processes of the tests: where the Cairn binaries are, child processes started with their
output in a log file and a parent-death signal (`ManagedProcess`), and process trees read
from Linux /proc.

Every child runs in its own session with PDEATHSIG=SIGKILL, so nothing outlives the test
run even if pytest itself is killed; whatever is still running at exit is killed.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Seconds a process may take to answer its health check after it is started.
START_TIMEOUT = float(os.environ.get("CAIRN_TEST_START_TIMEOUT", "30"))

# Every process started, so exit can kill those still running.
_ALL_PROCS: "list[ManagedProcess]" = []


class ClusterError(RuntimeError):
    pass


def bin_dir() -> Path:
    """`$CAIRN_BIN_DIR`, else `<repo>/target/release`."""
    d = os.environ.get("CAIRN_BIN_DIR")
    return Path(d) if d else REPO / "target" / "release"


def binary(name: str) -> Path:
    p = bin_dir() / name
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise ClusterError(
            f"binary {p} not found; build it with `cargo build --release --workspace` "
            f"or point CAIRN_BIN_DIR at a directory holding it"
        )
    return p


# ---------------------------------------------------------------------------------------
# child processes

_libc = None


def _child_setup():  # runs in the child between fork and exec
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def tail(path: Path, lines: int = 60) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "(no log)"
    text = data[-64 * 1024 :].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


_ADDR_IN_USE = re.compile(r"address already in use|addrinuse|os error 98|address in use", re.I)


class ManagedProcess:
    """A child process whose stdout+stderr go to a log file kept after it ends."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path, cwd: Path | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.env = env
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.popen: subprocess.Popen | None = None
        self._log_offset = 0

    def spawn(self):
        if self.alive:
            raise ClusterError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        _ALL_PROCS.append(self)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self):
        return None if self.popen is None else self.popen.poll()

    def log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self):
        """SIGKILL and reap."""
        if self.popen is not None and self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=30)

    def stop(self, timeout: float = 10, sig=signal.SIGTERM) -> int | None:
        """Polite stop (SIGTERM by default), SIGKILL after `timeout`; returns the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)


class ProcessDied(ClusterError):
    def __init__(self, proc: ManagedProcess, msg: str):
        self.proc = proc
        self.output = proc.log_since_start()
        super().__init__(f"{msg}\n--- {proc.log_path} (tail) ---\n{proc.tail()}")

    @property
    def addr_in_use(self) -> bool:
        return bool(_ADDR_IN_USE.search(self.output))


def _kill_everything():
    for p in _ALL_PROCS:
        if p.alive:
            try:
                p.popen.send_signal(signal.SIGKILL)
            except Exception:
                pass


atexit.register(_kill_everything)


# ---------------------------------------------------------------------------------------
# process trees (/proc)


def _stat(pid: int):
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # pid (comm) state ppid ...
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[1])


def descendants(pid: int) -> list[int]:
    """All live descendants of `pid` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = _stat(int(d))
        if st is None:
            continue
        children.setdefault(st[1], []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def wait_gone(pids, timeout: float) -> list[int]:
    """Waits until none of `pids` runs; returns those still running at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if running(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
