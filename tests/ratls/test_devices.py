"""GPU evidence beside the CPU's in one certificate: the binding (claims digest, derived nonce),
every way to break it, and the nvidia-gpu policy section - on the simulated CPU and GPU."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from ratls.cert import BACKDATE, build_certificate, generate_key
from ratls.devices import CollectedDevice, device_nonce
from ratls.issue import collect_for_claims, issue_certificate, make_claims
from ratls.pipeline import verify_certificate, verify_fresh_evidence
from ratls.platforms.nvidia.collector import SimGpuCollector
from ratls.platforms.nvidia.sim import DRIVER_VERSION, VBIOS_VERSION, SimGpu, load_or_create, sim_gpu_dir
from ratls.platforms.sim.chain import SimChain
from ratls.platforms.sim.platform import SimPlatform
from ratls.policy import Policy, parse_policy
from ratls.trust import Trust

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
RIMS: dict[str, bytes] = {}  # the simulated GPU's RIMs, as a client fetches them from the gateway


def verify_with_rims(cert, **kw):
    return verify_certificate(cert, trust=Trust(device_references=RIMS), **kw)


def fresh_with_rims(collection, spki, **kw):
    return verify_fresh_evidence(collection, spki, trust=Trust(device_references=RIMS), **kw)


@pytest.fixture(scope="module")
def gpu_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sim_gpu_dir(tmp_path_factory.mktemp("sim-gpu-state"))


@pytest.fixture(scope="module", autouse=True)
def sim_gpu(gpu_dir: Path) -> SimGpu:
    gpu = load_or_create(gpu_dir)
    RIMS.update(gpu.rims_by_id())
    return gpu


def gpu_policy(chain: SimChain, gpu: SimGpu, section: dict | None = None, **top) -> Policy:
    roots, reference = gpu.reference_policy()
    doc = {"version": 1, "platforms": [], "allow_simulated": True,
           "simulated": {"root_sha256": [chain.root_sha256, *roots]},
           "sev-snp": {"measurements": [chain.measurement.hex()]}}
    if section is not None:
        doc["nvidia-gpu"] = {**reference, **section}
    doc.update(top)
    return parse_policy(doc)


def issue(chain: SimChain, collector=None, **kw):
    key = generate_key()
    return key, issue_certificate(SimPlatform(chain=chain), key, now=NOW, devices=collector, **kw)


def failures(appraisal) -> list[str]:
    return [c.name for c in appraisal.failures]


class Replay:
    """A collector that answers with devices collected elsewhere, whatever nonce it is asked for:
    a gateway (or an interposer) presenting a GPU report made for another certificate."""

    def __init__(self, devices: list[CollectedDevice]) -> None:
        self.devices = devices

    def collect(self, nonce_for: Callable[[str], bytes]) -> list[CollectedDevice]:
        return self.devices


def test_cpu_and_two_gpus_verify(sim_chain: SimChain, sim_gpu: SimGpu, gpu_dir: Path) -> None:
    _, issued = issue(sim_chain, SimGpuCollector(gpu_dir, 2))
    appraisal, rc = verify_with_rims(issued.cert, policy=gpu_policy(sim_chain, sim_gpu, {"count": 2}), now=NOW)
    assert appraisal.ok, appraisal.summary()
    assert rc is not None and [d.label for d in rc.devices] == ["gpu0", "gpu1"]
    assert set(appraisal.devices) == {"gpu0", "gpu1"}
    assert appraisal.devices["gpu0"]["driver"] == DRIVER_VERSION
    assert appraisal.devices["gpu0"]["measurements"] == "match" and appraisal.devices["gpu0"]["simulated"] is True
    assert set(rc.claims.devices) == {"gpu0", "gpu1"}
    for name in ("gpu0.nonce", "gpu0.signature", "gpu0.chain", "gpu0.binding", "gpu1.nonce",
                 "policy.nvidia-gpu.gpu0.rim-match", "policy.nvidia-gpu.count"):
        assert name in [c.name for c in appraisal.checks if c.ok], name
    assert "gpu0:" in appraisal.summary() and appraisal.to_json()["devices"]["gpu1"]["vbios"] == VBIOS_VERSION


def test_each_gpu_nonce_is_derived_from_its_certificate_claims(sim_chain: SimChain, gpu_dir: Path) -> None:
    from ratls.platforms.nvidia.abi import parse_report
    _, issued = issue(sim_chain, SimGpuCollector(gpu_dir, 2))
    base = issued.claims.encode_without_devices()
    nonces = [parse_report(d.raw).request_nonce for d in issued.devices]
    assert nonces == [device_nonce(base, "gpu0"), device_nonce(base, "gpu1")] and nonces[0] != nonces[1]


def test_gpu_record_lifted_from_another_certificate_is_refused(sim_chain: SimChain, sim_gpu: SimGpu,
                                                               gpu_dir: Path) -> None:
    # Another certificate's genuine GPU evidence, presented in a new certificate whose claims
    # (and CPU report) cover it: only the derived nonce can tell, and it does.
    other_key = generate_key()
    claims = make_claims(other_key, platform="sim", now=NOW, lifetime=dt.timedelta(hours=1), instance=b"x" * 16)
    from ratls.issue import collect_devices
    _, lifted = collect_devices(SimGpuCollector(gpu_dir, 1), claims)
    _, issued = issue(sim_chain, Replay(lifted))
    appraisal, _ = verify_with_rims(issued.cert, policy=gpu_policy(sim_chain, sim_gpu, {}), now=NOW)
    assert not appraisal.ok and "gpu0.nonce" in failures(appraisal)
    assert "gpu0.binding" not in failures(appraisal)  # the claims do cover it; the nonce is what refuses


def test_gpu_record_swapped_without_the_cpu_report_is_refused(sim_chain: SimChain, sim_gpu: SimGpu,
                                                              gpu_dir: Path) -> None:
    key, issued = issue(sim_chain, SimGpuCollector(gpu_dir, 1))
    _, other = issue(sim_chain, SimGpuCollector(gpu_dir, 1))
    forged = build_certificate(key, issued.claims_cbor, issued.evidence, not_before=NOW - BACKDATE,
                               not_after=NOW + dt.timedelta(hours=1), common_name="x", sans=["localhost"],
                               devices=other.devices)
    appraisal, _ = verify_with_rims(forged, policy=gpu_policy(sim_chain, sim_gpu, {}), now=NOW)
    assert "gpu0.binding" in failures(appraisal) and "gpu0.nonce" in failures(appraisal)


def test_added_and_missing_gpu_records_are_refused(sim_chain: SimChain, sim_gpu: SimGpu, gpu_dir: Path) -> None:
    key, plain = issue(sim_chain)
    _, with_gpu = issue(sim_chain, SimGpuCollector(gpu_dir, 1))
    added = build_certificate(key, plain.claims_cbor, plain.evidence, not_before=NOW - BACKDATE,
                              not_after=NOW + dt.timedelta(hours=1), common_name="x", sans=["localhost"],
                              devices=with_gpu.devices)
    appraisal, _ = verify_with_rims(added, policy=gpu_policy(sim_chain, sim_gpu), now=NOW)
    assert "gpu0.binding" in failures(appraisal)  # a record the claims do not list
    key2, issued = issue(sim_chain, SimGpuCollector(gpu_dir, 1))
    dropped = build_certificate(key2, issued.claims_cbor, issued.evidence, not_before=NOW - BACKDATE,
                                not_after=NOW + dt.timedelta(hours=1), common_name="x", sans=["localhost"])
    appraisal, _ = verify_with_rims(dropped, policy=gpu_policy(sim_chain, sim_gpu), now=NOW)
    assert "gpu0.binding" in failures(appraisal)  # the claims list a GPU the certificate no longer carries


def test_policy_requiring_gpus_refuses_a_certificate_without_them(sim_chain: SimChain, sim_gpu: SimGpu) -> None:
    _, issued = issue(sim_chain)
    appraisal, _ = verify_with_rims(issued.cert, policy=gpu_policy(sim_chain, sim_gpu, {}), now=NOW)
    assert failures(appraisal) == ["policy.nvidia-gpu.required"]
    optional = gpu_policy(sim_chain, sim_gpu, {"required": False, "count": None})
    assert verify_with_rims(issued.cert, policy=optional, now=NOW)[0].ok


@pytest.mark.parametrize(("section", "failed"), [
    ({"vbios_versions": ["96.00.74.00.20"]}, "policy.nvidia-gpu.gpu0.vbios"),
    ({"driver_versions": ["550.90.07"]}, "policy.nvidia-gpu.gpu0.driver"),
    ({"driver_versions": [], "min_driver_version": "580.0"}, "policy.nvidia-gpu.gpu0.driver-minimum"),
    ({"vbios_versions": [], "min_vbios_version": "96.00.a0.00.01"}, "policy.nvidia-gpu.gpu0.vbios-minimum"),
    ({"count": 2}, "policy.nvidia-gpu.count"),
    ({"architectures": ["blackwell"]}, "policy.nvidia-gpu.gpu0.architecture"),
])
def test_each_gpu_rule_refuses(sim_chain: SimChain, sim_gpu: SimGpu, gpu_dir: Path, section: dict,
                               failed: str) -> None:
    _, issued = issue(sim_chain, SimGpuCollector(gpu_dir, 1))
    appraisal, _ = verify_with_rims(issued.cert, policy=gpu_policy(sim_chain, sim_gpu, section), now=NOW)
    assert failures(appraisal) == [failed], appraisal.summary()


def test_minimum_versions_accept_newer(sim_chain: SimChain, sim_gpu: SimGpu, gpu_dir: Path) -> None:
    _, issued = issue(sim_chain, SimGpuCollector(gpu_dir, 1))
    section = {"driver_versions": [], "vbios_versions": [], "min_driver_version": "550.90.07",
               "min_vbios_version": "96.00.5e.00.01"}
    assert verify_with_rims(issued.cert, policy=gpu_policy(sim_chain, sim_gpu, section), now=NOW)[0].ok


def test_simulated_gpu_needs_simulation_allowed_and_its_roots_pinned(sim_chain: SimChain, sim_gpu: SimGpu,
                                                                     gpu_dir: Path) -> None:
    _, issued = issue(sim_chain, SimGpuCollector(gpu_dir, 1))
    unpinned = parse_policy({"version": 1, "platforms": [], "allow_simulated": True,
                             "simulated": {"root_sha256": chain_root(sim_chain)},
                             "sev-snp": {"measurements": [sim_chain.measurement.hex()]}})
    appraisal, _ = verify_with_rims(issued.cert, policy=unpinned, now=NOW)
    assert {"gpu0.root", "gpu0.rim-root"} <= set(failures(appraisal))
    # without a policy (authenticity only) an unpinned simulated GPU is not authentic either
    assert not verify_with_rims(issued.cert, policy=None, now=NOW)[0].ok


def chain_root(chain: SimChain) -> str:
    return chain.root_sha256


def test_firmware_that_differs_from_its_rim_is_refused(sim_chain: SimChain, sim_gpu: SimGpu, gpu_dir: Path) -> None:
    class Tampered(SimGpuCollector):
        def collect(self, nonce_for):
            good = super().collect(nonce_for)
            bad = sim_gpu.report(nonce_for("gpu0"), tamper={3: b"\x11" * 48})
            evidence = dataclasses.replace(good[0].evidence, raw=bad)
            return [dataclasses.replace(good[0], evidence=evidence)]

    _, issued = issue(sim_chain, Tampered(gpu_dir, 1))
    appraisal, _ = verify_with_rims(issued.cert, policy=gpu_policy(sim_chain, sim_gpu, {}), now=NOW)
    assert "gpu0.measurements" in failures(appraisal) and "policy.nvidia-gpu.gpu0.rim-match" in failures(appraisal)
    assert appraisal.devices["gpu0"]["measurements"] == "mismatch"


@pytest.mark.parametrize(("state", "failed"), [({"cc": False}, "policy.nvidia-gpu.gpu0.cc-mode"),
                                               ({"devtools": True}, "policy.nvidia-gpu.gpu0.devtools")])
def test_gpu_state_the_gateway_read_is_appraised(sim_chain: SimChain, sim_gpu: SimGpu, gpu_dir: Path,
                                                 state: dict, failed: str) -> None:
    class WithState(SimGpuCollector):
        def collect(self, nonce_for):
            return [dataclasses.replace(d, state={**d.state, **state}) for d in super().collect(nonce_for)]

    _, issued = issue(sim_chain, WithState(gpu_dir, 1))
    appraisal, _ = verify_with_rims(issued.cert, policy=gpu_policy(sim_chain, sim_gpu, {}), now=NOW)
    assert failures(appraisal) == [failed]
    allowing = gpu_policy(sim_chain, sim_gpu, {"require_cc": False, "allow_devtools": True})
    assert verify_with_rims(issued.cert, policy=allowing, now=NOW)[0].ok


def test_rim_match_not_required_accepts_a_gpu_without_rims(sim_chain: SimChain, sim_gpu: SimGpu,
                                                           gpu_dir: Path) -> None:
    _, issued = issue(sim_chain, SimGpuCollector(gpu_dir, 1))
    # a verifier that holds no RIMs (none stapled, none fetched, no RIM directory)
    appraisal, _ = verify_certificate(issued.cert, policy=gpu_policy(sim_chain, sim_gpu, {}), now=NOW)
    assert failures(appraisal) == ["policy.nvidia-gpu.gpu0.rim-match"]
    assert appraisal.devices["gpu0"]["measurements"] == "not compared (no RIMs)"
    relaxed = gpu_policy(sim_chain, sim_gpu, {"require_rim_match": False})
    assert verify_certificate(issued.cert, policy=relaxed, now=NOW)[0].ok


def test_a_rim_for_another_version_is_refused(sim_chain: SimChain, sim_gpu: SimGpu, gpu_dir: Path) -> None:
    _, issued = issue(sim_chain, SimGpuCollector(gpu_dir, 1))
    from ratls.platforms.nvidia.types import RimKind
    wrong = {k: (sim_gpu.rim(RimKind.DRIVER, version="550.90.07") if "DRIVER" in k else v) for k, v in RIMS.items()}
    appraisal, _ = verify_certificate(issued.cert, policy=gpu_policy(sim_chain, sim_gpu, {}), now=NOW,
                                      trust=Trust(device_references=wrong))
    assert "gpu0.driver-rim.version" in failures(appraisal) and "policy.nvidia-gpu.gpu0.rim-match" in failures(
        appraisal)


def test_fresh_evidence_binds_the_gpu_to_the_client_nonce(sim_chain: SimChain, sim_gpu: SimGpu,
                                                          gpu_dir: Path) -> None:
    from ratls.cert import build_collection, spki_der
    key, _ = issue(sim_chain, SimGpuCollector(gpu_dir, 1))
    nonce = b"n" * 32
    claims = make_claims(key, platform="sim", now=NOW, lifetime=dt.timedelta(minutes=5), instance=b"i" * 16,
                         nonce=nonce)
    claims_cbor, evidence, devices = collect_for_claims(SimPlatform(chain=sim_chain), claims,
                                                        SimGpuCollector(gpu_dir, 1))
    fresh = build_collection(claims_cbor, evidence, devices).encode()
    policy = gpu_policy(sim_chain, sim_gpu, {})
    spki = spki_der(key.public_key())
    assert fresh_with_rims(fresh, spki, policy=policy, now=NOW, nonce=nonce).ok
    # the same GPU report replayed under another client's nonce fails its own nonce check
    claims2 = make_claims(key, platform="sim", now=NOW, lifetime=dt.timedelta(minutes=5), instance=b"i" * 16,
                          nonce=b"m" * 32)
    replayed = [CollectedDevice(d, "sim-nvidia-gpu", {"cc": True, "devtools": False}) for d in devices]
    cbor2, ev2, dev2 = collect_for_claims(SimPlatform(chain=sim_chain), claims2, Replay(replayed))
    appraisal = fresh_with_rims(build_collection(cbor2, ev2, dev2).encode(), spki, policy=policy, now=NOW,
                                      nonce=b"m" * 32)
    assert "gpu0.nonce" in failures(appraisal)


def test_unknown_device_type_in_claims_is_refused(sim_chain: SimChain, sim_gpu: SimGpu, gpu_dir: Path) -> None:
    class Renamed(SimGpuCollector):
        def collect(self, nonce_for):
            return [dataclasses.replace(d, type="quantum-gpu") for d in super().collect(nonce_for)]

    _, issued = issue(sim_chain, Renamed(gpu_dir, 1))
    appraisal, _ = verify_with_rims(issued.cert, policy=gpu_policy(sim_chain, sim_gpu), now=NOW)
    assert "gpu0.type" in failures(appraisal)


def test_gpus_in_mixed_or_misreported_modes_are_refused(sim_chain: SimChain, sim_gpu: SimGpu, gpu_dir: Path) -> None:
    from ratls.platforms.nvidia.abi import encode_report
    from ratls.platforms.nvidia.types import MeasurementBlock, OpaqueType

    class Mixed(SimGpuCollector):
        def collect(self, nonce_for):
            out = super().collect(nonce_for)
            fields = {**sim_gpu.opaque_fields(), OpaqueType.FEATURE_FLAG: (1).to_bytes(2, "little")}
            blocks = [MeasurementBlock(i + 1, 1, sim_gpu.measurement(i)) for i in range(64)]
            multi = encode_report(nonce_for("gpu1"), blocks, fields, bytes(32), sim_gpu._sign)
            out[1] = dataclasses.replace(out[1], evidence=dataclasses.replace(out[1].evidence, raw=multi))
            return out

    _, issued = issue(sim_chain, Mixed(gpu_dir, 2))
    appraisal, _ = verify_with_rims(issued.cert, policy=gpu_policy(sim_chain, sim_gpu, {"count": 2}), now=NOW)
    assert set(failures(appraisal)) == {"policy.nvidia-gpu.mode", "policy.nvidia-gpu.gpu1.mode"}


@pytest.mark.parametrize("label", ["policy", "gpu0.x", "endorsements", "gpu\x000", "GPU0", "gpu123"])
def test_device_labels_are_a_kind_and_an_index(sim_chain: SimChain, gpu_dir: Path, label: str) -> None:
    from ratls.errors import EvidenceError

    class Relabelled(SimGpuCollector):
        def collect(self, nonce_for):
            return [dataclasses.replace(d, evidence=dataclasses.replace(d.evidence, label=label))
                    for d in super().collect(nonce_for)]

    with pytest.raises(EvidenceError, match="not a device label"):
        issue(sim_chain, Relabelled(gpu_dir, 1))
