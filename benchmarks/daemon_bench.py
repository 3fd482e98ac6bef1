"""P7–P9: the daemon (``rosterdrop serve``) with real SFTP clients.

- P7: a 200 MiB upload with OpenSSH's ``sftp`` to ``rosterdrop serve`` and to
  OpenSSH's own ``sftp-server`` behind a throwaway ``sshd`` on 127.0.0.1 (its
  own host key, config and authorized keys; no PAM), with the default request
  size and with ``-B 32768``; interleaved, medians; ratio = OpenSSH time /
  rosterdrop time, for whole sessions (what ``sftp -b`` takes: binding, ≥ 0.8)
  and for the transfer alone (reported; ≥ 0.5 with 32 KiB requests).
- P8: an S upload with paramiko; from the client's close (the CLOSE request
  answered) to the report email appearing in ``state_dir/outbox``; each
  upload a different sample seed; median.
- P9: 200 OpenSSH ``sftp`` processes at once, 20 tenants (two accounts each, as
  a tenant with 10 simultaneous uploaders needs: sessions per account default
  to 8), each tenant's SIS connecting from an address of its own (127.0.0.2,
  127.0.0.3, …: the server caps connections still logging in per address);
  every upload accepted, queued once, finished once (one ``run_finished``, one
  email); the daemon's peak RSS from ``VmHWM``.

Every daemon is a fresh ``python -m rosterdrop -c CFG serve`` with default
settings except its port (and, for P9, ``rescan_seconds = 2`` so that a rescan
that would take a file twice has the chance to within the run), logging JSON
lines to a file the harness reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from common import ProcessRun, progress, run_process

MIB = 1024 * 1024
WAIT = 120.0
SSHD = Path("/usr/sbin/sshd")
SFTP_SERVER_CANDIDATES = (Path("/usr/lib/openssh/sftp-server"), Path("/usr/libexec/sftp-server"),
                          Path("/usr/libexec/openssh/sftp-server"))


class DaemonUnavailable(Exception):
    """A tool the measurement needs is missing (sshd, sftp, ssh-keygen, paramiko)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} in {timeout:.0f} s")


def _wait(predicate: Callable[[], bool], what: str, timeout: float = WAIT,
          interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def keypair(folder: Path) -> tuple[Path, str]:
    """A fresh ed25519 client key: (private key file, public key line)."""
    if shutil.which("ssh-keygen") is None:
        raise DaemonUnavailable("ssh-keygen is not installed (apt-get install openssh-client)")
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(key)],
                   check=True, capture_output=True)
    return key, (folder / "id_ed25519.pub").read_text().strip()


# --- the two servers ----------------------------------------------------------------------------


class Serve:
    """One ``rosterdrop serve`` with its own config, state folder and JSON log."""

    def __init__(self, root: Path, accounts: dict[str, list[str]], public_key: str,
                 *, extra: Sequence[str] = ()) -> None:
        """``accounts``: tenant -> usernames (all with ``public_key``)."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.state = root / "state"
        self.log_path = root / "serve.log"
        self.config = root / "rosterdrop.toml"
        lines = [f"state_dir = {json.dumps(str(self.state))}", "[sftp]",
                 f'listen = "127.0.0.1:{self.port}"', *extra, "[log]", 'format = "json"']
        for tenant, usernames in accounts.items():
            lines += [f"[tenants.{tenant}]", f'name = "{tenant}"',
                      f'report_to = ["it@{tenant}.example"]']
            for username in usernames:
                lines += [f"[[tenants.{tenant}.accounts]]", f'username = "{username}"',
                          f"authorized_keys = [{json.dumps(public_key)}]"]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Serve:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rosterdrop", "-c", str(self.config), "serve"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.wait_for("daemon_started", 1, timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (read incrementally)."""
        with self.log_path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    self._events.append(json.loads(line))
        return self._events

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == name]

    def wait_for(self, name: str, count: int, timeout: float = WAIT) -> list[dict[str, Any]]:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_path.read_text("utf-8", "replace").splitlines()[-15:]
                raise RuntimeError(f"rosterdrop serve exited ({self.process.returncode}):\n"
                                   + "\n".join(tail))
            return len(self.named(name)) >= count

        _wait(ready, f"{count}× {name} in the daemon log", timeout)
        return self.named(name)

    def outbox(self) -> list[Path]:
        folder = self.state / "outbox"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix == ".eml" and not p.name.startswith("."))

    def memory_mib(self) -> dict[str, float]:
        """``VmHWM`` (peak RSS since start) and ``VmRSS`` of the daemon process."""
        assert self.process is not None
        found: dict[str, float] = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0]) / 1024
        return found


class OpenSshServer:
    """A throwaway ``sshd`` on 127.0.0.1 serving OpenSSH's ``sftp-server``, key auth only."""

    def __init__(self, root: Path, public_key: str) -> None:
        if not SSHD.exists():
            raise DaemonUnavailable("sshd is not installed (apt-get install openssh-server)")
        sftp_server = next((p for p in SFTP_SERVER_CANDIDATES if p.exists()), None)
        if sftp_server is None:
            raise DaemonUnavailable("OpenSSH's sftp-server binary was not found")
        if os.geteuid() != 0:
            raise DaemonUnavailable("the OpenSSH baseline needs root (sshd changes user)")
        self.root = root
        self.port = _free_port()
        self.sink = root / "sink"
        self.sink.mkdir()
        host_key = root / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                       check=True, capture_output=True)
        (root / "authorized_keys").write_text(public_key + "\n")
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "PermitRootLogin prohibit-password",
            "StrictModes no", "LogLevel ERROR", f"Subsystem sftp {sftp_server}",
        ]) + "\n")
        self.sftp_server = sftp_server
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OpenSshServer:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        self.process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=(self.root / "sshd.log").open("ab"),
        )
        _wait_port(self.port, self.process, "sshd")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def sftp_argv(port: int, user: str, key: Path, batch: Path, *extra: str) -> list[str]:
    """OpenSSH ``sftp`` in batch mode, trusting any host key, with one identity."""
    return [
        "sftp", "-q", "-b", str(batch), "-P", str(port), "-i", str(key), "-F", "/dev/null",
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", *extra,
        f"{user}@127.0.0.1",
    ]


def _batch(folder: Path, name: str, commands: Sequence[str]) -> Path:
    path = folder / name
    path.write_text("\n".join(commands) + "\n")
    return path


def _negotiated(port: int, user: str, key: Path, folder: Path) -> str | None:
    """The cipher the client and server agree on (one untimed ``sftp -v`` session)."""
    argv = sftp_argv(port, user, key, _batch(folder, "pwd.batch", ["pwd"]))
    argv.remove("-q")
    argv[argv.index("LogLevel=ERROR")] = "LogLevel=DEBUG1"
    run = run_process(argv, timeout=60)
    for line in run.stderr.splitlines():
        if "kex: client->server cipher:" in line:
            return line.split("cipher:", 1)[1].strip()
    return None


# --- P7 -------------------------------------------------------------------------------------------


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        left = size
        while left:
            chunk = min(left, 8 * MIB)
            out.write(os.urandom(chunk))
            left -= chunk


def p7_upload(root: Path, *, mib: int, repeats: int) -> dict[str, Any]:
    """200 MiB through rosterdrop serve and through OpenSSH sftp-server, interleaved."""
    key, public = keypair(root)
    local = root / "upload.zip"
    _random_file(local, mib * MIB)
    size = mib * MIB
    modes: dict[str, list[str]] = {"default": [], "B32768": ["-B", "32768"]}
    times: dict[str, dict[str, list[float]]] = {m: {"rosterdrop": [], "openssh": []} for m in modes}
    (root / "rd").mkdir()
    (root / "ossh").mkdir()
    with Serve(root / "rd", {"bench": ["bench"]}, public) as serve, \
            OpenSshServer(root / "ossh", public) as sshd:
        user = pwd.getpwuid(os.geteuid()).pw_name
        targets: dict[str, Callable[[list[str]], ProcessRun]] = {}
        finished = [0]

        def to_rosterdrop(extra: list[str]) -> ProcessRun:
            batch = _batch(root, "rd.batch", [f"put {local} bench.zip"])
            run = run_process(sftp_argv(serve.port, "bench", key, batch, *extra), timeout=600)
            # Let the daemon finish with the upload (a failed run: it is no ZIP) before
            # the next transfer, so its processing never overlaps a measurement.
            finished[0] += 1
            serve.wait_for("run_finished", finished[0])
            done = serve.named("upload_completed")[-1]
            if run.returncode != 0 or done.get("bytes") != size:
                raise RuntimeError(f"upload to rosterdrop failed: {run.last_stderr_line()}")
            return run

        def to_openssh(extra: list[str]) -> ProcessRun:
            target = sshd.sink / "bench.zip"
            batch = _batch(root, "ossh.batch", [f"put {local} {target}"])
            run = run_process(sftp_argv(sshd.port, user, key, batch, *extra), timeout=600)
            if run.returncode != 0 or target.stat().st_size != size:
                raise RuntimeError(f"upload to sshd failed: {run.last_stderr_line()}")
            target.unlink()
            return run

        targets = {"rosterdrop": to_rosterdrop, "openssh": to_openssh}
        empty = _batch(root, "pwd.batch", ["pwd"])
        sessions: dict[str, Callable[[], ProcessRun]] = {
            "rosterdrop": lambda: run_process(sftp_argv(serve.port, "bench", key, empty)),
            "openssh": lambda: run_process(sftp_argv(sshd.port, user, key, empty)),
        }
        session_times: dict[str, list[float]] = {"rosterdrop": [], "openssh": []}
        ciphers = {"rosterdrop": _negotiated(serve.port, "bench", key, root),
                   "openssh": _negotiated(sshd.port, user, key, root)}
        for name, upload in targets.items():  # warm-up: page cache, first-use imports
            upload([])
            progress(f"P7 warm-up: {name} done")
        for rep in range(repeats):
            for mode, extra in modes.items():
                order = list(targets) if rep % 2 == 0 else list(reversed(targets))
                for name in order:
                    session_times[name].append(sessions[name]().seconds)
                    # rosterdrop keeps its uploads (spool, kept uploads) while the OpenSSH
                    # copy is deleted at once: flush dirty pages first, so neither transfer
                    # pays for writing back the previous one.
                    os.sync()
                    run = targets[name](extra)
                    times[mode][name].append(run.seconds)
                    progress(f"P7 round {rep + 1}: {mode:<7} {name:<10} {run.seconds:.2f} s "
                             f"({mib / run.seconds:.0f} MiB/s)")
        memory = serve.memory_mib()
    result: dict[str, Any] = {"mib": mib, "ciphers": ciphers, "sftp_server": str(sshd.sftp_server),
                              "daemon_memory_mib": memory, "modes": {}}
    # A session's wall time = connection set-up (key exchange, auth, and for sshd a
    # fork and re-exec per connection: ~0.27 s here against ~0.1 s for asyncssh) +
    # the transfer. The target is about the transfer: the binding ratio compares
    # medians minus each server's median empty session (``sftp`` running ``pwd``).
    setup = {name: statistics.median(ts) for name, ts in session_times.items()}
    result["session_seconds"] = {"median": setup, "runs": session_times}
    for mode in modes:
        rd, ossh = (statistics.median(times[mode][n]) for n in ("rosterdrop", "openssh"))
        rd_transfer, ossh_transfer = rd - setup["rosterdrop"], ossh - setup["openssh"]
        result["modes"][mode] = {
            "rosterdrop_seconds": times[mode]["rosterdrop"], "openssh_seconds": times[mode]["openssh"],
            "rosterdrop_median": rd, "openssh_median": ossh,
            "rosterdrop_transfer": rd_transfer, "openssh_transfer": ossh_transfer,
            "rosterdrop_mib_s": mib / rd_transfer, "openssh_mib_s": mib / ossh_transfer,
            "ratio": ossh_transfer / rd_transfer, "ratio_whole_session": ossh / rd,
        }
    return result


# --- P8 -------------------------------------------------------------------------------------------


def _ts(event: dict[str, Any]) -> float | None:
    with contextlib.suppress(KeyError, ValueError, TypeError):
        return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()
    return None


def p8_latency(root: Path, warmup: Path, uploads: Sequence[Path]) -> dict[str, Any]:
    """Close → email for each upload (one paramiko connection per upload, like a client),
    after one untimed ``warmup`` upload."""
    try:
        import paramiko
    except ImportError as exc:
        raise DaemonUnavailable("paramiko is not installed") from exc
    key, public = keypair(root)
    pkey = paramiko.Ed25519Key.from_private_key_file(str(key))
    samples: list[dict[str, Any]] = []
    with Serve(root / "rd", {"bench": ["bench"]}, public) as serve:
        for index, upload in enumerate([warmup, *uploads]):
            emails = len(serve.outbox())
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            client.connect("127.0.0.1", serve.port, username="bench", pkey=pkey,
                           look_for_keys=False, allow_agent=False, timeout=30)
            try:
                sftp = client.open_sftp()
                name = f"export-{index:02d}.zip"
                with sftp.open(name, "wb") as remote:
                    remote.set_pipelined(True)
                    remote.write(upload.read_bytes())
                closed_wall = time.time()
                closed = time.perf_counter()  # the CLOSE request has been answered
                sftp.close()
            finally:
                client.close()
            def emailed(before: int = emails) -> bool:
                return len(serve.outbox()) > before

            _wait(emailed, "the report email", interval=0.005)
            latency = time.perf_counter() - closed
            finished = serve.named("run_finished")
            queued = [e for e in serve.named("job_queued") if e.get("file") == name]
            started = [e for e in serve.named("run_started") if e.get("file") == name]
            steps: dict[str, float] = {}
            if queued and started and finished:
                q, s, f = _ts(queued[-1]), _ts(started[-1]), _ts(finished[-1])
                if q is not None and s is not None and f is not None:
                    steps = {"close_to_queued": q - closed_wall, "queued_to_run": s - q,
                             "run": f - s}
            sample = {"file": upload.name, "seconds": latency, "status": finished[-1].get("status"),
                      "steps": steps}
            if index == 0:
                progress(f"P8 warm-up: {latency:.3f} s")
                continue
            samples.append(sample)
            progress(f"P8 upload {index}/{len(uploads)} ({upload.name}): {latency:.3f} s "
                     f"{sample['status']}")
        memory = serve.memory_mib()
    return {"uploads": samples, "median": statistics.median(s["seconds"] for s in samples),
            "daemon_memory_mib": memory}


# --- P9 -------------------------------------------------------------------------------------------


def p9_concurrent(root: Path, uploads: Sequence[Path], *, clients: int, tenants: int) -> dict[str, Any]:
    """``clients`` sftp processes at once over ``tenants`` tenants (two accounts each)."""
    key, public = keypair(root)
    accounts = {f"d{t + 1}": [f"d{t + 1}-a", f"d{t + 1}-b"] for t in range(tenants)}
    plan = []
    for i in range(clients):
        tenant = f"d{i % tenants + 1}"
        user = accounts[tenant][(i // tenants) % 2]
        plan.append((tenant, user, uploads[(i // tenants) % len(uploads)], f"client-{i + 1:02d}.zip"))
    source = {f"d{t + 1}": f"127.0.0.{t + 2}" for t in range(tenants)}
    batches = root / "batches"
    batches.mkdir()
    with Serve(root / "rd", accounts, public, extra=["rescan_seconds = 2"]) as serve:
        started = time.perf_counter()
        procs = []
        for i, (tenant, user, upload, name) in enumerate(plan):
            batch = _batch(batches, f"{i}.batch", [f"put {upload} {name}"])
            argv = sftp_argv(serve.port, user, key, batch, "-o", f"BindAddress={source[tenant]}")
            procs.append(subprocess.Popen(argv,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE))
        exits = [p.wait(timeout=600) for p in procs]
        errors = [p.stderr.read().decode("utf-8", "replace").strip() if p.stderr else ""
                  for p in procs]
        uploaded = time.perf_counter() - started
        progress(f"P9: {exits.count(0)}/{clients} clients done in {uploaded:.1f} s")
        with contextlib.suppress(RuntimeError):
            serve.wait_for("run_finished", clients, timeout=600)
        processed = time.perf_counter() - started
        time.sleep(3)  # a rescan (every 2 s) that took a file twice would show now
        _wait(lambda: len(serve.outbox()) >= min(clients, len(serve.named("run_finished"))),
              "the last emails", timeout=30)
        memory = serve.memory_mib()
        events = serve.events()
        emails = serve.outbox()
    by = Counter(e.get("event") for e in events)
    queued = [(e.get("tenant"), e.get("file")) for e in events if e.get("event") == "job_queued"]
    finished_jobs = Counter(e.get("job_id") for e in events if e.get("event") == "job_finished")
    runs = Counter(e.get("run_id") for e in events if e.get("event") == "run_finished")
    statuses = Counter(str(e.get("status")) for e in events if e.get("event") == "run_finished")
    completed = [e for e in events if e.get("event") == "upload_completed"]
    expected = {(t, n) for t, _u, _p, n in plan}
    result = {
        "clients": clients, "tenants": tenants,
        "client_exit_ok": exits.count(0),
        "client_errors": sorted({e.splitlines()[-1] for e in errors if e})[:5],
        "upload_completed": len(completed),
        "job_queued": len(queued),
        "queued_each_once": Counter(queued) == Counter(expected),
        "job_finished": sum(finished_jobs.values()),
        "jobs_finished_once": len(finished_jobs) == clients and set(finished_jobs.values()) == {1},
        "run_finished": sum(runs.values()),
        "runs_distinct": len(runs),
        "emails": len(emails),
        "statuses": dict(statuses),
        "refused_or_aborted": by.get("upload_refused", 0) + by.get("upload_aborted", 0)
        + by.get("session_refused", 0),
        "upload_seconds": uploaded,
        "processed_seconds": processed,
        "daemon_memory_mib": memory,
    }
    result["accepted"] = min(exits.count(0), len(completed), len(queued))
    result["processed_once"] = bool(
        result["queued_each_once"] and result["jobs_finished_once"]
        and result["run_finished"] == clients and result["runs_distinct"] == clients
        and result["emails"] == clients
    )
    return result


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield Path(folder)
