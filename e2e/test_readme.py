"""Every command README.md shows in a shell block is run here, as written, in document order:
from a copy of the checkout, against the `make serve` stack the quickstart starts, with the
vendor vectors README names copied in under the names it uses. A command run elsewhere says
where, and that place must still run it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import vectors_dir
from triton_backend.launch import bind_error, wait_for_port

from .stack import fetch_cert_pem, pinned_context

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SERVE_URL = "https://127.0.0.1:8443"
SERVE_PORTS = (8443, 9464)

# Commands whose run is elsewhere (recursive or another engine), each with the place that runs
# it and a string that place must contain.
ELSEWHERE: dict[str, tuple[str, str]] = {
    "make test": (".ci/run", "make test"),
    # minutes of saturating load: run as written, and its output checked, by its own test
    "make bench": ("e2e/test_bench.py", '["make", "bench"]'),
    "make bench-attribution": ("e2e/test_bench.py", '["make", "bench-attribution"]'),
}
ELSEWHERE_SECTIONS: dict[str, tuple[str, str]] = {
    # the compose deployment needs a Docker engine: make e2e-compose checks these command by command
    "### docker-compose": ("e2e/compose/test_compose.py", "def test_readme_shows_what_ran"),
}
# Not 0, and why (what the output must say): each is part of what README says about the command.
EXPECTED_EXIT = {
    # no TEE on this machine, and make serve holds 8443
    "ratls doctor -c config/gateway.yaml": (2, "FAIL  port.listen: port 8443"),
    "ratls serve -c config/gateway.yaml": (2, "listen: port 8443 on 0.0.0.0 is already in use"),
    # simulated evidence against a hardware-only policy
    "ratls policy diff --policy config/policies/snp-strict.yaml https://127.0.0.1:8443": (1, "FAILS policy"),
    # another simulator's root, no models, no config
    "ratls verify cert.pem --policy policy.yaml": (1, "[FAIL]"),
}
# README's file names for the real vectors (under ../shared/vectors)
VECTOR_FILES = {
    "report.bin": "snp/genoa_v3_azure_trustee/report.bin",
    "vcek.pem": "snp/genoa_v3_azure_trustee/vcek.pem",
    "quote.bin": "tdx/v4_dcap-qvl/quote.bin",
    "collateral.json": "tdx/v4_dcap-qvl/collateral.json",
    "evidence.json": "azure/snp_genoa_trustee/evidence.json",
    "gpu-report.txt": "nvidia/go-nvtrust/attestationReport.txt",
    "gpu-chain.pem": "nvidia/go-nvtrust/gpuAkCertChain.txt",
    "driver-rim.xml": "nvidia/nv-local-gpu-verifier-2.7.3/rims/Driver_RIM_test_no_gpu.swidtag",
    "vbios-rim.xml": "nvidia/nv-local-gpu-verifier-2.7.3/rims/1010_0200_882_96005E0001_test_no_gpu.swidtag",
}
INSTALL_SECTION = "### Install"


@dataclass(frozen=True)
class Command:
    section: str
    text: str  # as README writes it, continuation lines and comments included

    @property
    def key(self) -> str:
        """The command without comments and line continuations, for the tables above."""
        return " ".join(shlex.split(self.text, comments=True))

    @property
    def background(self) -> bool:
        return shlex.split(self.text, comments=True)[-1] == "&"


def readme_commands(text: str) -> list[Command]:
    commands: list[Command] = []
    section, block, pending = "", False, ""
    for line in text.splitlines():
        if not block and line.startswith("#"):
            section = line
        elif line.strip() in ("```sh", "```bash"):
            block = True
        elif line.strip() == "```" and block:
            assert not pending, f"unfinished command in README: {pending!r}"
            block = False
        elif block:
            pending = f"{pending}\n{line}" if pending else line
            if _complete(pending):
                if shlex.split(pending, comments=True):
                    commands.append(Command(section, pending))
                pending = ""
    return commands


def _complete(text: str) -> bool:
    if text.endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def _checkout_copy(target: Path, with_venv: bool) -> Path:
    """The tracked files (timestamps kept, so make sees the venv as up to date), plus the venv."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        source = ROOT / rel
        if source.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / rel)
    if with_venv:
        (target / ".venv").symlink_to(VENV_BIN.parent)
    return target


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATLS_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # as after `source .venv/bin/activate`
    env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    return env


def _wait_serving(proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"make serve exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen("http://127.0.0.1:9464/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"make serve not ready in {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the command's whole session (a backgrounded command outlives its shell)."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(proc.pid):
            proc.poll()
            time.sleep(0.2)
        if not _group_alive(proc.pid):
            break
    proc.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_readme_parsing_keeps_commands_whole() -> None:
    text = "# s\n```sh\n# a comment\nratls curl -- -d '{\"a\":\n 1}' \\\n  https://x/ # note\necho hi &\n```\n"
    cmds = readme_commands(text)
    assert [c.text for c in cmds] == ["ratls curl -- -d '{\"a\":\n 1}' \\\n  https://x/ # note", "echo hi &"]
    assert cmds[1].background and not cmds[0].background


def test_tables_name_only_commands_readme_has() -> None:
    keys = {c.key for c in readme_commands((ROOT / "README.md").read_text())}
    assert set(EXPECTED_EXIT) <= keys and set(ELSEWHERE) <= keys
    sections = {c.section for c in readme_commands((ROOT / "README.md").read_text())}
    assert set(ELSEWHERE_SECTIONS) <= sections
    for where, marker in [*ELSEWHERE.values(), *ELSEWHERE_SECTIONS.values()]:
        assert marker in (ROOT / where).read_text(), f"{where} no longer runs {marker!r}"


def test_install_commands_from_a_checkout(tmp_path: Path) -> None:
    """README's install lines, as written, in a copy of the checkout with no venv."""
    commands = [c for c in readme_commands((ROOT / "README.md").read_text()) if c.section == INSTALL_SECTION]
    assert len(commands) == 2
    checkout = _checkout_copy(tmp_path / "checkout", with_venv=False)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    for command in commands:
        done = subprocess.run(["bash", "-c", command.text], cwd=checkout, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{command.text}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    ratls = checkout / ".venv/bin/ratls"
    assert subprocess.run([str(ratls), "--version"], capture_output=True, text=True).returncode == 0
    served = subprocess.run([str(ratls), "serve", "--help"], capture_output=True, text=True)
    assert served.returncode == 0 and "--hold-on-refusal" in served.stdout  # the server extra installed
    probe = "import ratls.client.triton, tritonclient.grpc, gateway.app"
    assert subprocess.run([str(checkout / ".venv/bin/python"), "-c", probe], cwd=tmp_path).returncode == 0


def test_every_readme_command_runs_as_written(tmp_path: Path) -> None:
    busy = [p for p in SERVE_PORTS + (8000,) if bind_error("0.0.0.0", p) is not None]  # noqa: S104 - make serve's
    assert not busy, f"README's commands use ports {busy}, which another process holds: stop it first"
    checkout = _checkout_copy(tmp_path / "checkout", with_venv=True)
    assert subprocess.run(["make", "-q", "venv"], cwd=checkout).returncode == 0, \
        "make would reinstall the venv from the copy: run make venv in the checkout first"
    missing_vectors = []
    for name, rel in VECTOR_FILES.items():
        if (vectors_dir() / rel).exists():
            shutil.copy2(vectors_dir() / rel, checkout / name)
        else:
            missing_vectors.append(name)
    env = _env()
    background: list[subprocess.Popen[bytes]] = []
    serve: subprocess.Popen[bytes] | None = None
    ran, not_run, failures = [], [], []
    try:
        for command in readme_commands((ROOT / "README.md").read_text()):
            if command.section in ELSEWHERE_SECTIONS or command.key in ELSEWHERE or command.section == INSTALL_SECTION:
                continue
            needs = [f for f in missing_vectors if re.search(rf"(^|\s){re.escape(f)}(\s|$)", command.key)]
            if needs:
                not_run.append(f"{command.key} (needs {', '.join(needs)} from the vectors)")
                continue
            if command.key == "make serve":
                log = tmp_path / "make-serve.log"
                with open(log, "wb") as out:
                    serve = subprocess.Popen(["bash", "-c", command.text], cwd=checkout, env=env, stdout=out,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
                _wait_serving(serve, log)
                ran.append(command.key)
                continue
            if command.background:
                proc = subprocess.Popen(["bash", "-c", command.text], cwd=checkout, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
                background.append(proc)
                listen = re.search(r"--listen \S+:(\d+)", command.text)
                wait_for_port(int(listen.group(1))) if listen else time.sleep(2)
                ran.append(command.key)
                continue
            done = subprocess.run(["bash", "-c", command.text], cwd=checkout, env=env, capture_output=True,
                                  text=True, timeout=600, stdin=subprocess.DEVNULL)
            expected, says = EXPECTED_EXIT.get(command.key, (0, ""))
            if done.returncode != expected or says not in done.stdout + done.stderr:
                failures.append(f"[{command.section}] {command.key}\n  exit {done.returncode}, expected {expected} "
                                f"saying {says!r}\n"
                                f"  stdout: {done.stdout[-1500:]}\n  stderr: {done.stderr[-1500:]}")
            ran.append(command.key)
        if serve is not None:  # the stack served every client command: check it is still the one started
            ctx = pinned_context(fetch_cert_pem(8443))
            assert urllib.request.urlopen(f"{SERVE_URL}/healthz", context=ctx, timeout=5).status == 200
    finally:
        for proc in background:
            _stop(proc)
        if serve is not None:
            _stop(serve)
    assert not failures, "\n".join(failures)
    # every command was either run or named below as needing the vectors: none fell through
    assert "make serve" in ran and len(ran) + len(not_run) >= 30, (ran, not_run)
    if not_run:
        pytest.skip("ran every other README command; without ../shared/vectors these did not run: "
                    + "; ".join(not_run))
