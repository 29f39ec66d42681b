"""A model update without restarting the gateway: an edited repository is refused until it is
back to its attested state or re-attested (POST /admin/reload, SIGHUP); clients pinned to the
old models then fail verification and the new models are served under a new certificate."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from triton_backend.demo import demo_repository

from .stack import Stack, admin_request, start_stack
from .test_external_triton import healthz
from .test_faults import wait_for
from .test_filters import get

pytestmark = pytest.mark.slow
RATLS = [sys.executable, "-m", "ratls.cli"]
INFER = json.dumps({"inputs": [
    {"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [5]},
    {"name": "INPUT1", "shape": [1], "datatype": "FP32", "data": [3]}]}).encode()


def infer(stack: Stack, model: str) -> tuple[int, bytes]:
    return get(stack.port, "POST", f"/v2/models/{model}/infer", INFER)


def ratls(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RATLS, *args], capture_output=True, text=True, timeout=120)


def add_model(repo: Path, name: str) -> None:
    shutil.copytree(repo / "add_sub", repo / name)
    config = repo / name / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "add_sub"', f'name: "{name}"'))


@pytest.fixture
def updatable(sim_state: Path, tmp_path: Path) -> tuple[Stack, Path]:
    repo = tmp_path / "models"
    shutil.copytree(demo_repository(), repo)
    stack = start_stack({"triton": {"model_repository": str(repo)}}, sim_dir=sim_state)
    yield stack, repo
    assert stack.stop() == 0, stack.log()[-3000:]


def test_edited_repository_is_refused_until_reverted(updatable: tuple[Stack, Path]) -> None:
    stack, repo = updatable
    model = repo / "add_sub" / "1" / "model.py"
    original = model.read_bytes()
    model.write_bytes(original + b"\n# an edit after attestation\n")
    assert wait_for(lambda: healthz(stack)[0] == 503, 30), "no sign of the gateway to notice the edit"
    assert any("model repository changed" in r for r in healthz(stack)[1]["reasons"])
    status, data = infer(stack, "add_sub")
    assert status == 503 and b"model repository changed after attestation" in data
    model.write_bytes(original)  # back to the measured bytes: served again, no restart
    assert wait_for(lambda: healthz(stack)[0] == 200, 30), "no sign of the gateway to recover"
    assert infer(stack, "add_sub")[0] == 200
    assert "back to its attested state" in stack.log()


def test_model_added_is_served_after_reload_under_new_claims(updatable: tuple[Stack, Path], tmp_path: Path) -> None:
    stack, repo = updatable
    old_policy = tmp_path / "policy.yaml"
    made = ratls("policy", "init", "--from", stack.url, "--sim-dir", str(stack.sim_dir), "--out", str(old_policy))
    assert made.returncode == 0, made.stderr
    assert ratls("verify", stack.url, "--policy", str(old_policy)).returncode == 0
    before = stack.status()
    admin = stack.workdir / "run" / "admin.sock"

    # A repository that cannot be measured is not re-attested: 409, and nothing changes.
    (repo / "add_sub" / "1" / "__pycache__").mkdir()
    code, body = admin_request(admin, "/admin/reload")
    assert code == 409 and "__pycache__" in body["error"], body
    assert stack.status()["config_digest"] == before["config_digest"]
    (repo / "add_sub" / "1" / "__pycache__").rmdir()
    assert wait_for(lambda: healthz(stack)[0] == 200, 30), "no sign of the gateway to recover"

    add_model(repo, "add_sub_v2")
    assert wait_for(lambda: healthz(stack)[0] == 503, 30), "no sign of the gateway to notice the new model"
    time.sleep(2)  # the admin socket refuses actions within seconds of each other
    # README's command, as written (<run_dir> is the configured control.run_dir)
    done = subprocess.run(["curl", "--unix-socket", str(admin), "-X", "POST", "http://localhost/admin/reload"],
                          capture_output=True, text=True, timeout=120)
    body = json.loads(done.stdout)
    assert done.returncode == 0 and body["changed"] is True and "add_sub_v2" in body["models"], body
    assert wait_for(lambda: healthz(stack)[0] == 200, 30), "no sign of the re-attested gateway to be ready"
    assert infer(stack, "add_sub_v2")[0] == 200 and infer(stack, "add_sub")[0] == 200
    after = stack.status()
    assert after["config_digest"] != before["config_digest"]  # filters.models lists the new model
    assert after["triton"]["pid"] != before["triton"]["pid"]  # Triton restarted on the new snapshot

    # A client pinned to the old models and config refuses the new certificate: a verdict.
    stale = ratls("verify", stack.url, "--policy", str(old_policy))
    assert stale.returncode == 1, stale.stdout + stale.stderr
    # ...and policy diff names the change: the new model, and the config key that lists it
    # (against the config document policy init saved beside the policy).
    assert Path(str(old_policy) + ".config.json").exists()
    diff = ratls("policy", "diff", "--policy", str(old_policy), stack.url)
    assert diff.returncode == 1, diff.stdout + diff.stderr
    assert "add_sub_v2" in diff.stdout and "filters.models" in diff.stdout, diff.stdout
    # SIGHUP (systemctl reload) with nothing changed: only a new certificate.
    serial = after["certificate"]["serial"]
    stack.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: stack.status()["certificate"]["serial"] != serial, 30), "no sign of the SIGHUP rotation"
    assert stack.status()["triton"]["pid"] == after["triton"]["pid"]
    assert infer(stack, "add_sub_v2")[0] == 200


def test_triton_restarted_on_a_changed_repository_stays_refused_after_a_revert(updatable: tuple[Stack, Path]) -> None:
    """What Triton loaded counts, not what the source holds now: a crash while the repository
    differs puts unmeasured models in Triton, and putting the source back does not take them out."""
    import os

    stack, repo = updatable
    add_model(repo, "extra")
    assert wait_for(lambda: healthz(stack)[0] == 503, 30), "no sign of the gateway to notice the new model"
    before = stack.status()["triton"]["pid"]
    os.kill(before, signal.SIGKILL)
    assert wait_for(lambda: stack.status()["triton"]["pid"] not in (None, before), 30), "no sign of the Triton restart"
    shutil.rmtree(repo / "extra")  # the source is the attested one again...
    time.sleep(3)  # several watch intervals
    code, body = healthz(stack)
    assert code == 503 and "Triton serves a model repository other than the attested one" in body["reasons"], body
    assert infer(stack, "extra")[0] == 503 and infer(stack, "add_sub")[0] == 503  # ...Triton's is not
    code, reloaded = admin_request(stack.workdir / "run" / "admin.sock", "/admin/reload")
    assert code == 200 and reloaded["changed"] is False, reloaded  # same claims, Triton restarted on them
    assert wait_for(lambda: healthz(stack)[0] == 200, 30), "no sign of the gateway to serve the attested models again"
    assert infer(stack, "add_sub")[0] == 200 and infer(stack, "extra")[0] != 200
