"""`ratls policy explain` and `ratls policy diff` on simulated certificates: what a policy pins and
leaves open, and why a certificate or a live server passes or fails it, field by field."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from ratls.cert import generate_key
from ratls.cli import main
from ratls.errors import EvidenceError
from ratls.issue import issue_certificate
from ratls.platforms.sim.chain import SimChain, generate_chain
from ratls.platforms.sim.platform import SimPlatform
from ratls.policy_cli import config_snapshot_path, save_config_snapshot
from ratls.policy_report import ConfigChange, config_digest, dotted_changes
from ratls.timeutil import utcnow


def digest(char: str) -> str:
    return "sha256:" + char * 64


ADD_SUB, IDENTITY, NEW_MODEL, ADD_SUB_V2 = digest("1"), digest("2"), digest("3"), digest("4")
MODELS = {"manifest": digest("a"), "models": {"add_sub": ADD_SUB, "identity": IDENTITY}}
OLD_CONFIG = {"listen": {"port": 8443, "tls_min_version": "1.3"}, "upstreams": {"mode": "managed", "host": "127.0.0.1"},
              "filters": {"model-config": "deny", "statistics": "deny"}}
NEW_CONFIG = {**OLD_CONFIG, "filters": {"model-config": "allow", "statistics": "deny"}}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def issue(tmp_path: Path, chain: SimChain, *, models: dict[str, Any] = MODELS,
          config: dict[str, Any] = OLD_CONFIG, name: str = "c") -> tuple[Path, Path]:
    key = generate_key()
    issued = issue_certificate(SimPlatform(chain=chain), key, now=utcnow(), models=models,
                               config=config_digest(config))
    cert, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key_file


def write_policy(tmp_path: Path, chain: SimChain, claims: dict[str, Any]) -> Path:
    doc = {"version": 1, "platforms": [], "allow_simulated": True, "simulated": {"root_sha256": chain.root_sha256},
           "sev-snp": {"measurements": [chain.measurement.hex()], "guest_policy": {"debug": False}},
           "claims": claims}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def pinned_claims(models: dict[str, Any] = MODELS, config: dict[str, Any] = OLD_CONFIG,
                  whole_manifest: bool = True) -> dict[str, Any]:
    pins = dict(models["models"])
    if whole_manifest:
        pins["*"] = models["manifest"]
    return {"models": pins, "config": config_digest(config), "max_age": "24h"}


@contextmanager
def config_server(cert: Path, key: Path, document: Any) -> Iterator[int]:
    """HTTPS on loopback presenting *cert* and serving *document* at /.well-known/ratls/config."""
    body = json.dumps(document).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/.well-known/ratls/config":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.handle_error = lambda *args: None  # clients that fetch the certificate and hang up
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ---- explain ----

def test_explain_lists_pins_and_what_is_left_open(capsys, tmp_path: Path, sim_chain: SimChain) -> None:
    policy = write_policy(tmp_path, sim_chain, {"models": {"add_sub": ADD_SUB}, "max_age": "24h"})
    code, out, _ = run(capsys, "policy", "explain", str(policy))
    assert code == 0
    assert "!! allow_simulated: SIMULATED EVIDENCE IS ACCEPTED" in out and sim_chain.root_sha256 in out
    pinned, _, open_part = out.partition("not pinned")
    assert sim_chain.measurement.hex() in pinned and f"model 'add_sub' must be {ADD_SUB}" in pinned
    assert "at most 24h old" in pinned and "guests with DEBUG set are refused" in pinned
    assert "no chip allow-list: any genuine chip" in open_part
    assert "config not pinned: any gateway configuration is accepted" in open_part
    assert "models other than those listed are not pinned" in open_part

    code, out, _ = run(capsys, "policy", "explain", str(policy), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "ratls-policy-explain/1"
    assert {"sev-snp.measurements", "claims.models.add_sub", "claims.max_age"} <= set(doc["pinned"])
    assert {"claims.config", "sev-snp.chip_ids", "sev-snp.min_tcb"} <= set(doc["not_pinned"])
    assert doc["warnings"] == ["allow_simulated"]


def test_explain_unreadable_or_invalid_policy_exits_2(capsys, tmp_path: Path) -> None:
    assert run(capsys, "policy", "explain", str(tmp_path / "missing.yaml"))[0] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nplatforms: [sev-snp]\nclaims: {config: nope}\n")
    code, _, err = run(capsys, "policy", "explain", str(bad))
    assert code == 2 and "policy.claims.config" in err


# ---- diff on certificate files ----

def test_diff_model_added_names_it_and_exits_1(capsys, tmp_path: Path, sim_chain: SimChain) -> None:
    policy = write_policy(tmp_path, sim_chain, pinned_claims())
    grown = {"manifest": digest("b"), "models": {**MODELS["models"], "new_model": NEW_MODEL}}
    cert, _ = issue(tmp_path, sim_chain, models=grown)
    code, out, _ = run(capsys, "policy", "diff", "--policy", str(policy), str(cert))
    assert code == 1, out
    assert f"added:   new_model {NEW_MODEL}" in out
    assert f"manifest ('*'): {digest('a')} -> {digest('b')}" in out
    suggestion = out.split("if you trust this change", 1)[1]
    assert "new_model" in suggestion and digest("b") in suggestion

    code, out, _ = run(capsys, "policy", "diff", "--policy", str(policy), str(cert), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["verdict"] == "fail" and doc["evidence_verified"] is True
    assert doc["models"]["added"] == {"new_model": NEW_MODEL}
    assert yaml.safe_load(doc["suggestion_yaml"])["claims"]["models"]["*"] == digest("b")


def test_diff_changed_model_digest_shows_old_and_new(capsys, tmp_path: Path, sim_chain: SimChain) -> None:
    policy = write_policy(tmp_path, sim_chain, pinned_claims(whole_manifest=False))
    changed = {"manifest": digest("c"), "models": {"add_sub": ADD_SUB_V2, "identity": IDENTITY}}
    cert, _ = issue(tmp_path, sim_chain, models=changed)
    code, out, _ = run(capsys, "policy", "diff", "--policy", str(policy), str(cert))
    assert code == 1
    assert f"changed: add_sub {ADD_SUB} -> {ADD_SUB_V2}" in out
    assert "identity" not in out.split("models (claims.models)")[1].split("if you trust")[0]


def test_diff_passing_target_exits_0(capsys, tmp_path: Path, sim_chain: SimChain) -> None:
    policy = write_policy(tmp_path, sim_chain, pinned_claims())
    cert, _ = issue(tmp_path, sim_chain)
    code, out, _ = run(capsys, "policy", "diff", "--policy", str(policy), str(cert))
    assert code == 0, out
    assert "PASSES" in out and "as pinned" in out and "if you trust" not in out


def test_diff_config_change_of_a_file_says_where_to_look(capsys, tmp_path: Path, sim_chain: SimChain) -> None:
    policy = write_policy(tmp_path, sim_chain, pinned_claims())
    cert, _ = issue(tmp_path, sim_chain, config=NEW_CONFIG)
    code, out, _ = run(capsys, "policy", "diff", "--policy", str(policy), str(cert))
    assert code == 1
    assert f"config (claims.config): {config_digest(OLD_CONFIG)} -> {config_digest(NEW_CONFIG)}" in out
    assert "diff the live server" in out
    assert yaml.safe_load(out.split("accept it", 1)[1].split("\n", 1)[1])["claims"]["config"] == \
        config_digest(NEW_CONFIG)


def test_diff_unauthentic_evidence_suggests_nothing(capsys, tmp_path: Path, sim_chain: SimChain) -> None:
    policy = write_policy(tmp_path, sim_chain, pinned_claims())
    cert, _ = issue(tmp_path, generate_chain())  # a simulator whose root the policy does not pin
    code, out, _ = run(capsys, "policy", "diff", "--policy", str(policy), str(cert))
    assert code == 1
    assert "evidence: FAILED verification" in out and "sim.root" in out
    assert "if you trust" not in out and "not suggested: nothing" in out


def test_diff_unreadable_input_exits_2(capsys, tmp_path: Path, sim_chain: SimChain) -> None:
    policy = write_policy(tmp_path, sim_chain, pinned_claims())
    assert run(capsys, "policy", "diff", "--policy", str(policy), str(tmp_path / "none.pem"))[0] == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(capsys, "policy", "diff", "--policy", str(policy), f"https://127.0.0.1:{port}")
    assert code == 2 and "nothing is listening on 127.0.0.1" in err
    cert, _ = issue(tmp_path, sim_chain)
    assert run(capsys, "policy", "diff", "--policy", str(policy), str(cert), "--config-was",
               str(tmp_path / "none.json"))[0] == 2


# ---- diff on a live server: the config document ----

def test_live_config_change_names_the_dotted_key(capsys, tmp_path: Path, sim_chain: SimChain) -> None:
    policy = write_policy(tmp_path, sim_chain, pinned_claims())
    was = tmp_path / "was.json"
    was.write_text(json.dumps(OLD_CONFIG))
    cert, key = issue(tmp_path, sim_chain, config=NEW_CONFIG)
    served = {"digest": config_digest(NEW_CONFIG), "config": NEW_CONFIG}
    with config_server(cert, key, served) as port:
        code, out, _ = run(capsys, "policy", "diff", "--policy", str(policy), f"https://127.0.0.1:{port}",
                           "--config-was", str(was))
        assert code == 1, out
        assert f"changed keys (vs {was}):" in out
        assert 'filters.model-config: "deny" -> "allow"' in out and "statistics" not in out
        assert "diagnosis only" in out
        assert f"config: {config_digest(NEW_CONFIG)}" in out.split("if you trust this change", 1)[1]

        # without --config-was, the snapshot saved beside the policy is used
        snapshot = save_config_snapshot(policy, {"digest": "ignored", "config": OLD_CONFIG},
                                        expected_digest=config_digest(OLD_CONFIG))
        assert snapshot == config_snapshot_path(policy) and snapshot.name == "p.yaml.config.json"
        code, out, _ = run(capsys, "policy", "diff", "--policy", str(policy), f"127.0.0.1:{port}", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["config"]["status"] == "changed" and doc["config"]["was"] == str(snapshot)
    assert doc["config"]["changes"] == [{"path": "filters.model-config", "kind": "changed", "old": "deny",
                                         "new": "allow"}]


def test_live_document_not_matching_the_claim_is_refused(capsys, tmp_path: Path, sim_chain: SimChain) -> None:
    policy = write_policy(tmp_path, sim_chain, pinned_claims())
    was = tmp_path / "was.json"
    was.write_text(json.dumps(OLD_CONFIG))
    cert, key = issue(tmp_path, sim_chain, config=NEW_CONFIG)
    forged = {**NEW_CONFIG, "filters": {"model-config": "deny", "statistics": "deny"}}  # looks unchanged
    with config_server(cert, key, {"digest": config_digest(NEW_CONFIG), "config": forged}) as port:
        code, out, _ = run(capsys, "policy", "diff", "--policy", str(policy), f"https://127.0.0.1:{port}",
                           "--config-was", str(was), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["config"]["status"] == "untrusted"
    assert doc["config"]["changes"] == [] and doc["config"]["document"] is None
    assert "REFUSED" in doc["config"]["notes"][0] and config_digest(forged) in doc["config"]["notes"][0]
    assert "config" not in (doc["suggestion"] or {}).get("claims", {})


# ---- pure helpers ----

def test_dotted_changes_and_snapshot_refusal(tmp_path: Path) -> None:
    old = {"a": {"b": 1, "gone": "x"}, "flag": 1}
    new = {"a": {"b": 2, "c": {"d": True}}, "flag": True}
    assert dotted_changes(old, new) == [
        ConfigChange("a.b", "changed", 1, 2), ConfigChange("a.c", "added", new={"d": True}),
        ConfigChange("a.gone", "removed", old="x"), ConfigChange("flag", "changed", 1, True)]
    with pytest.raises(EvidenceError, match="not the attested"):
        save_config_snapshot(tmp_path / "p.yaml", OLD_CONFIG, expected_digest=config_digest(NEW_CONFIG))
    assert not config_snapshot_path(tmp_path / "p.yaml").exists()
