"""A local server process: install once, start detached, wait until ready, stop.

State lives under one folder (`$FLEETSTREAM_HOME`, default `~/.fleetstream`):
`run/<name>.pid` (the server's pid and its process's start time, so that a
pid the kernel has since given to another process, after a reboot or on a
machine restored from a copy, names no server), `logs/<name>.log` and
`data/<name>/`. A log past
LOG_ROTATE_BYTES moves to `<name>.log.1` when its service starts. Starting is
idempotent (a running service is left alone), a port held by some other
process is a clear error, and a service that dies while starting reports the
tail of its log.
"""
from __future__ import annotations

import abc
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

#: a log larger than this at a start moves aside to `<name>.log.1` (replacing the older one)
LOG_ROTATE_BYTES = 64 * 1024 * 1024


class ServiceError(RuntimeError):
    """A local service could not be installed, started or stopped."""


def home() -> Path:
    """The folder that holds every local service's state."""
    return Path(os.environ.get("FLEETSTREAM_HOME", Path.home() / ".fleetstream")).resolve()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Service(abc.ABC):
    """One local server. Subclasses say how to install and run it."""

    #: short name: file names and `fleetstream dev up NAME`
    name: str
    #: how long start() waits for ready()
    start_timeout_s: float = 60.0
    #: how long stop() waits after TERM before it KILLs
    stop_timeout_s: float = 20.0

    def __init__(self, port: int, root: Path | None = None) -> None:
        self.port = port
        #: the folder for this server's run/, logs/ and data/ (default: `home()`); installed
        #: tools stay shared under `home()`
        self.root = root

    # --- what a subclass provides -------------------------------------------------
    def install(self) -> None:
        """Fetch what the server needs (idempotent; fast when already installed)."""

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    def environment(self) -> dict[str, str]:
        """Extra environment variables for the server process."""
        return {}

    def prepare(self) -> None:
        """Write config files and data folders before the first start."""

    def ready(self) -> bool:
        """True once the server serves; by default its port accepts connections."""
        return port_open(self.port)

    # --- shared machinery -------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return (self.root or home()) / "data" / self.name

    @property
    def log_path(self) -> Path:
        return (self.root or home()) / "logs" / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return (self.root or home()) / "run" / f"{self.name}.pid"

    def pid(self) -> int | None:
        """The pid of our running server process, or None (also when the pid file names a
        process that is not the one started: the pid was reused)."""
        try:
            return recorded_process(self.pid_path.read_text())
        except OSError:
            return None

    def running(self) -> bool:
        return self.pid() is not None and self.ready()

    def start(self) -> None:
        """Install, prepare and start the server; return once it is ready."""
        if self.pid() is not None:
            if self._wait_ready():
                return
            raise ServiceError(f"{self.name}: process {self.pid()} runs but is not ready; "
                               f"see {self.log_path}")
        if port_open(self.port):
            raise ServiceError(
                f"{self.name}: port {self.port} is already taken by another process; "
                f"stop it or choose another port (see `fleetstream dev --help`)")
        self.install()
        for folder in (self.data_dir, self.log_path.parent, self.pid_path.parent):
            folder.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self._rotate_log()
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.environment()}, cwd=self.data_dir,
                start_new_session=True)
        self.pid_path.write_text(process_record(process.pid))
        if not self._wait_ready(process):
            self.stop()
            raise ServiceError(f"{self.name} did not become ready within "
                               f"{self.start_timeout_s:.0f} s; last log lines:\n{self.log_tail()}")

    def _rotate_log(self) -> None:
        try:
            if self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                self.log_path.replace(self.log_path.with_name(f"{self.log_path.name}.1"))
        except FileNotFoundError:
            pass

    def _wait_ready(self, process: subprocess.Popen | None = None) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.ready():
                return True
            if process is not None and process.poll() is not None:
                raise ServiceError(f"{self.name} exited with code {process.returncode} while "
                                   f"starting; last log lines:\n{self.log_tail()}")
            time.sleep(0.25)
        return False

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the server's whole process group: TERM, then KILL after timeout_s
        (default: `stop_timeout_s`)."""
        timeout_s = self.stop_timeout_s if timeout_s is None else timeout_s
        pid = self.pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and process_alive(pid):
                time.sleep(0.1)
            if not process_alive(pid):
                break
        self.pid_path.unlink(missing_ok=True)

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            return f"{self.name:<12} stopped"
        state = "ready" if self.ready() else "starting/unready"
        return f"{self.name:<12} {state:<16} pid {pid}  port {self.port}  log {self.log_path}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def http_ready(url: str) -> bool:
    """True when `url` answers 200 (a server's readiness endpoint)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def apt_install(service: str, package: str) -> None:
    """Install the Debian `package` a service runs (`apt-get update`, then `install -y`)."""
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(step, capture_output=True, text=True,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0:
            raise ServiceError(f"{service}: `{' '.join(step)}` failed:\n{done.stderr[-2000:]}")


def process_start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot: field 22 of /proc/<pid>/stat), or
    None when there is no such process. With its pid it names one process, where a pid alone
    names whichever process the kernel gave it to last."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])   # fields after `(comm)` start at 3


def process_record(pid: int) -> str:
    """`pid start-time`: what a pid or lease file holds to name process `pid`."""
    return f"{pid} {process_start_time(pid)}"


def recorded_process(record: str) -> int | None:
    """The pid a `process_record` names, while that very process runs; else None (ended, or
    the pid now belongs to another process; a record without a start time names none)."""
    try:
        pid, started = (int(field) for field in record.split())
    except ValueError:
        return None
    return pid if process_alive(pid) and process_start_time(pid) == started else None


def process_alive(pid: int) -> bool:
    """True while process `pid` exists (a child of ours that ended is reaped)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
