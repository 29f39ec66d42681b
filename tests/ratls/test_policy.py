from __future__ import annotations

from pathlib import Path

import pytest

from ratls.errors import PolicyError, UsageError
from ratls.policy import load_policy, parse_policy

M = "ab" * 48


def test_full_policy(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(f"""
version: 1
platforms: [sev-snp]
sev-snp:
  measurements: ["{M}"]
  min_tcb: {{milan: {{bl: 3, tee: 0, snp: 8, ucode: 115}}, turin: {{fmc: 1, snp: 5}}}}
  guest_policy: {{debug: false, migrate_ma: false, smt: true}}
  vmpl: [0, 1]
  chip_ids: ["{'00' * 64}"]
  host_data: "{'11' * 32}"
  signing_keys: [vcek]
  products: [milan, turin]
  min_firmware: "1.55"
claims:
  models: {{add_sub: "sha256:{'0' * 64}"}}
  config: "sha256:{'1' * 64}"
  max_age: 12h
""")
    policy = load_policy(p)
    assert policy.snp.measurements == [bytes.fromhex(M)]
    assert policy.snp.min_tcb["milan"].snp == 8 and policy.snp.min_tcb["turin"].fmc == 1
    assert policy.snp.vmpl == [0, 1] and policy.snp.min_firmware == (1, 55, 0)
    assert policy.claims.max_age is not None and policy.claims.max_age.total_seconds() == 43200


@pytest.mark.parametrize(("doc", "path", "hint"), [
    ({"version": 1, "platform": ["sev-snp"]}, "policy.platform: unknown key", "platforms"),
    ({"version": 1, "sev-snp": {"measurment": []}}, "policy.sev-snp.measurment: unknown key", "measurements"),
    ({"version": 1, "sev-snp": {"guest_policy": {"debgu": False}}}, "policy.sev-snp.guest_policy.debgu", "debug"),
    ({"version": 1, "sev-snp": {"min_tcb": {"milan": {"snpp": 1}}}}, "policy.sev-snp.min_tcb.milan.snpp", "snp"),
    ({"version": 1, "claims": {"max-age": "1h"}}, "policy.claims.max-age", "max_age"),
])
def test_misspelled_keys_name_the_path(doc: dict, path: str, hint: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(doc)
    assert path in info.value.message and hint in (info.value.hint or "")


@pytest.mark.parametrize(("doc", "message"), [
    ({}, "policy.version: missing"),
    ({"version": 2}, "not supported"),
    ({"version": 1, "platforms": ["sgx"]}, "not one of"),
    ({"version": 1, "sev-snp": {"measurements": ["abc"]}}, "96 hex digits"),
    ({"version": 1, "sev-snp": {"measurements": [123]}}, "quoted strings"),
    ({"version": 1, "sev-snp": {"vmpl": 7}}, "vmpl"),
    ({"version": 1, "sev-snp": {"guest_policy": {"debug": "no"}}}, "true or false"),
    ({"version": 1, "sev-snp": {"min_tcb": {"bl": 300}}}, "0..255"),
    ({"version": 1, "sev-snp": {"min_firmware": "one"}}, "MAJOR.MINOR"),
    ({"version": 1, "claims": {"models": {"m": "md5:00"}}}, "sha256"),
    ({"version": 1, "claims": {"max_age": "soon"}}, "max_age"),
    ({"version": 1, "allow_simulated": True}, "no simulated root is pinned"),
    ({"version": 1, "platforms": []}, "no platform is accepted"),
    ([1, 2], "expected a mapping"),
])
def test_invalid_policies(doc: object, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(doc)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read policy"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [1\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)


def test_shipped_example_policies_load() -> None:
    root = Path(__file__).resolve().parents[2] / "config" / "policies"
    files = sorted(root.glob("*.yaml"))
    assert files, "config/policies/*.yaml should ship example policies"
    for f in files:
        load_policy(f)


@pytest.mark.parametrize(("doc", "message"), [
    ({"tdx": {"sept_ve_disable": None}}, r"policy\.tdx\.sept_ve_disable: must not be empty"),
    ({"sev-snp": {"guest_policy": {"debug": None}}}, r"policy\.sev-snp\.guest_policy\.debug: must not be empty"),
    ({"allow_simulated": None}, r"policy\.allow_simulated: must not be empty"),
])
def test_a_key_written_empty_is_refused_not_read_as_off(doc: dict, message: str) -> None:
    """'sept_ve_disable:' with no value used to switch the requirement off (and 'debug:' the check)."""
    with pytest.raises(PolicyError, match=message):
        parse_policy({"version": 1, "platforms": ["tdx"], **doc})
