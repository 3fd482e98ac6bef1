"""deploy/: the systemd unit, the container image and the compose file."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rosterdrop.config import load_settings, parse_listen

DEPLOY = Path(__file__).parent.parent / "deploy"
SRC = Path(__file__).parent.parent / "src" / "rosterdrop"
UNIT = DEPLOY / "rosterdrop.service"


def unit_keys(path: Path) -> dict[str, dict[str, list[str]]]:
    """section → key → values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_unit_is_hardened() -> None:
    """Dedicated user, read-only system but the state folder, one capability for port
    22, no privilege gain, restart on failure, logs to the journal."""
    service = unit_keys(UNIT)["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["User"] == "rosterdrop" and one["Group"] == "rosterdrop"
    assert one["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == ["/var/lib/rosterdrop"]
    assert one["StateDirectory"] == "rosterdrop"
    assert one["NoNewPrivileges"] == "yes"
    assert one["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert one["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert one["Restart"] == "on-failure"
    assert one["StandardOutput"] == "journal"
    assert one["ExecStart"].endswith("/rosterdrop serve")
    assert one["Environment"] == "ROSTERDROP_CONFIG=/etc/rosterdrop/rosterdrop.toml"
    for key in ("ProtectHome", "PrivateTmp", "PrivateDevices", "RestrictSUIDSGID",
                "ProtectKernelTunables", "LockPersonality"):
        assert one[key] == "yes", key
    assert int(one["TimeoutStopSec"]) > 10  # the daemon drains jobs for 10 s on SIGTERM


def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say about the unit, and its security
    exposure stays low (ExecStart pointed at this installation)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    executable = Path(sys.executable).parent / "rosterdrop"
    assert executable.exists()
    unit = tmp_path / "rosterdrop.service"
    unit.write_text(UNIT.read_text().replace("/opt/rosterdrop/bin/rosterdrop", str(executable)))
    verify = subprocess.run([analyze, "verify", "--man=no", str(unit)],
                                capture_output=True, text=True, timeout=60)
    said = [line for line in (verify.stdout + verify.stderr).splitlines()
            if "rosterdrop.service" in line]
    assert verify.returncode == 0 and said == [], verify.stderr
    security = subprocess.run([analyze, "security", "--offline=true", "--threshold=30",
                               str(unit)], capture_output=True, text=True, timeout=60)
    if "--offline" in security.stderr or "unrecognized" in security.stderr:
        return  # systemd < 250: no offline security scoring
    assert security.returncode == 0, security.stdout[-2000:]


def test_dockerfile_is_slim_non_root_with_state_volume_and_healthcheck() -> None:
    """The image: slim base, a non-root user, the state folder as a volume, a
    healthcheck on /healthz at the port container.toml's metrics listener uses."""
    steps = dockerfile()
    bases = [args for word, args in steps if word == "FROM"]
    assert bases and all("-slim" in base for base in bases)
    user = [args for word, args in steps if word == "USER"]
    assert user and user[-1] not in ("root", "0")
    settings = load_settings(DEPLOY / "container.toml")
    volume = " ".join(args for word, args in steps if word == "VOLUME")
    assert str(settings.state_dir) in volume
    health = " ".join(args for word, args in steps if word == "HEALTHCHECK")
    _, port = parse_listen(settings.metrics.listen)
    assert f"127.0.0.1:{port}/healthz" in health
    _, sftp_port = parse_listen(settings.sftp.listen)
    exposed = " ".join(args for word, args in steps if word == "EXPOSE").split()
    assert {str(sftp_port), str(port)} <= set(exposed)
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "ROSTERDROP_CONFIG=/etc/rosterdrop/rosterdrop.toml" in env


def test_compose_uses_keys_and_variables_that_exist() -> None:
    """compose.yaml: its config loads (unknown keys would be refused), the store and
    mail hosts are its services, the database credentials match, and every
    ROSTERDROP_* variable it sets is one rosterdrop reads."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    app = services["rosterdrop"]
    assert app["build"]["dockerfile"] == "deploy/Dockerfile"
    mounts = {m.split(":")[1]: m.split(":")[0] for m in app["volumes"]}
    config = DEPLOY / mounts["/etc/rosterdrop/rosterdrop.toml"]
    settings = load_settings(config)
    assert mounts[str(settings.state_dir)] in compose["volumes"]
    url = settings.store.url
    pg = services["postgres"]["environment"]
    assert f"{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}" \
        in url
    assert settings.mail.smtp_host in services
    source = "\n".join(p.read_text() for p in SRC.rglob("*.py"))
    for name in app["environment"]:
        assert name.startswith("ROSTERDROP_") and f'"{name}"' in source, name
    published = {p.split(":")[-1] for p in app["ports"]}
    assert {str(parse_listen(settings.sftp.listen)[1]),
            str(parse_listen(settings.metrics.listen)[1])} <= published


@pytest.mark.timeout(900)
def test_dockerfile_builds() -> None:
    """`docker build` of deploy/Dockerfile succeeds (only where a docker daemon runs)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client installed")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        pytest.skip("no docker daemon reachable (docker info failed)")
    build = subprocess.run([docker, "build", "-q", "-f", str(DEPLOY / "Dockerfile"),
                            str(DEPLOY.parent)], capture_output=True, text=True, timeout=850)
    assert build.returncode == 0, build.stderr[-3000:]
