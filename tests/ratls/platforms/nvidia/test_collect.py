"""NVIDIA GPU collection through NVML, against recorded NVML answers (no GPU here): the CC-state, count and
architecture checks, NVML errors in words, chain normalisation, the ready state, recording round trips, and
PynvmlApi over pynvml's own structures (a stand-in module) and over the real pynvml (no driver)."""

from __future__ import annotations

import ctypes
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ratls.errors import CollectionError, ConfigError
from ratls.platforms.nvidia.collect import (
    RECORDING_FORMAT,
    CcEnvironment,
    CollectedGpu,
    GpuSettings,
    MultiGpuMode,
    PynvmlApi,
    RecordedNvml,
    collect_gpus,
    normalise_chain,
    nvml_error,
    ready_state,
    record_session,
    set_ready,
)
from ratls.platforms.nvidia.types import GpuArch

pynvml = pytest.importorskip("pynvml")


# ---- fixtures: a small leaf-first chain and recordings built here ----


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _chain(n: int = 3) -> list[x509.Certificate]:
    """n certificates, leaf first, each issued by the next (the last self-signed)."""
    keys = [ec.generate_private_key(ec.SECP384R1()) for _ in range(n)]
    names = [f"test GPU cert {i}" for i in range(n)]
    now = datetime(2024, 1, 1, tzinfo=UTC)
    certs = []
    for i in range(n):
        issuer = min(i + 1, n - 1)
        cert = (x509.CertificateBuilder().subject_name(_name(names[i])).issuer_name(_name(names[issuer]))
                .public_key(keys[i].public_key()).serial_number(i + 1).not_valid_before(now)
                .not_valid_after(now + timedelta(days=1)).sign(keys[issuer], hashes.SHA384()))
        certs.append(cert)
    return certs


CHAIN = _chain()
CHAIN_PEM = b"".join(c.public_bytes(Encoding.PEM) for c in CHAIN)
CHAIN_DER = b"".join(c.public_bytes(Encoding.DER) for c in CHAIN)
NONCE = bytes(range(32))


def _report(index: int, nonce: bytes = NONCE) -> bytes:
    # Shaped like an SPDM request || response: version, code, params, the request nonce at [4:36], ...
    return bytes([0x11, 0xE0, 0x01, 0xFF]) + nonce + bytes([0]) + bytes([index]) * 100


def _gpu(index: int, **over: Any) -> dict[str, Any]:
    gpu = {"arch": "hopper", "uuid": f"GPU-0000000{index}-test", "vbios_version": "96.00.9F.00.01",
           "reports": [{"nonce": NONCE.hex(), "report": _report(index).hex()}], "chain_pem": CHAIN_PEM.decode()}
    gpu.update(over)
    return gpu


def _recording(gpus: int | Any = 1, *, cc: bool = True, devtools: bool = False, mode: str = "single",
               env: str = "production", **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "format": RECORDING_FORMAT, "driver_version": "550.90.07",
        "settings": {"environment": env, "cc_feature": cc, "devtools": devtools, "multi_gpu_mode": mode},
        "capabilities": {"cpu": "amd-sev-snp", "gpus_cc_capable": True},
        "ready": False, "gpus": [_gpu(i) for i in range(gpus)] if isinstance(gpus, int) else gpus,
    }
    rec.update(over)
    return rec


def _nonces(index: int) -> bytes:
    return bytes([index]) * 32


def _collect(api: RecordedNvml, **settings: Any) -> list[CollectedGpu]:
    return collect_gpus(api, GpuSettings(**settings), _nonces)


# ---- happy paths ----


def test_one_hopper_gpu() -> None:
    api = RecordedNvml(_recording())
    [gpu] = _collect(api, count=1, architectures=(GpuArch.HOPPER,))
    assert (gpu.index, gpu.label, gpu.arch, gpu.uuid) == (0, "gpu0", GpuArch.HOPPER, "GPU-00000000-test")
    assert (gpu.driver_version, gpu.vbios_version) == ("550.90.07", "96.00.9F.00.01")
    assert gpu.report == _report(0)
    assert gpu.chain_pem == CHAIN_PEM
    assert (gpu.cc_on, gpu.devtools, gpu.multi_gpu_mode, gpu.ready) == (True, False, MultiGpuMode.SINGLE, False)
    assert ("attestation_report", 0, _nonces(0)) in api.calls
    assert api.calls[0] == ("init",) and api.calls[-1] == ("shutdown",) and api.open_sessions == 0


def test_eight_gpus_in_ppcie_mode() -> None:
    # PPCIe runs the GPUs with their CC feature off: the multi-GPU mode is what makes them confidential.
    api = RecordedNvml(_recording(8, cc=False, mode="protected-pcie", ready=True))
    gpus = _collect(api, count=8, ppcie=True)
    assert [g.label for g in gpus] == [f"gpu{i}" for i in range(8)]
    assert [g.report for g in gpus] == [_report(i) for i in range(8)]
    assert all(g.multi_gpu_mode is MultiGpuMode.PROTECTED_PCIE and not g.cc_on and g.ready for g in gpus)
    asked = [c for c in api.calls if c[0] == "attestation_report"]
    assert asked == [("attestation_report", i, _nonces(i)) for i in range(8)]  # each GPU its own nonce


def test_any_count_and_architecture_by_default() -> None:
    rec = _recording(2)
    rec["gpus"][1]["arch"] = "blackwell"
    gpus = collect_gpus(RecordedNvml(rec), GpuSettings(), _nonces)
    assert [g.arch for g in gpus] == [GpuArch.HOPPER, GpuArch.BLACKWELL]


# ---- the CC state ----


def test_cc_off_is_refused_and_nvml_shut_down() -> None:
    api = RecordedNvml(_recording(cc=False))
    with pytest.raises(CollectionError, match="confidential computing is off") as err:
        _collect(api)
    assert "turn the GPUs' CC mode on" in str(err.value)
    assert api.open_sessions == 0 and not any(c[0] == "attestation_report" for c in api.calls)


def test_cc_off_on_incapable_gpus_says_so() -> None:
    api = RecordedNvml(_recording(cc=False, capabilities={"cpu": "amd-sev-snp", "gpus_cc_capable": False}))
    with pytest.raises(CollectionError, match="not CC-capable"):
        _collect(api)


def test_cc_off_collects_when_not_required_and_does_not_ask_for_the_ready_state() -> None:
    api = RecordedNvml(_recording(cc=False, errors={"ready_state": 3}))
    [gpu] = _collect(api, require_cc=False)
    assert not gpu.cc_on and not gpu.ready


def test_simulated_environment_is_refused() -> None:
    with pytest.raises(CollectionError, match="simulated"):
        _collect(RecordedNvml(_recording(env="simulated")))


def test_devtools_refused_unless_allowed() -> None:
    with pytest.raises(CollectionError, match="dev-tools mode") as err:
        _collect(RecordedNvml(_recording(devtools=True)))
    assert "allow_devtools" in str(err.value)
    [gpu] = _collect(RecordedNvml(_recording(devtools=True)), allow_devtools=True)
    assert gpu.devtools


@pytest.mark.parametrize(("mode", "ppcie", "ok"), [
    ("single", True, False), ("multi", True, False), ("protected-pcie", True, True),
    ("protected-pcie", False, False), ("single", False, True), ("multi", None, True), ("protected-pcie", None, True),
])
def test_ppcie_mode_as_configured(mode: str, ppcie: bool | None, ok: bool) -> None:
    api = RecordedNvml(_recording(8, mode=mode))
    if ok:
        assert len(_collect(api, ppcie=ppcie)) == 8
    else:
        with pytest.raises(CollectionError, match=f"multi-GPU mode {mode}"):
            _collect(api, ppcie=ppcie)
    assert api.open_sessions == 0


# ---- count and architecture ----


def test_wrong_count_names_expected_and_found() -> None:
    with pytest.raises(CollectionError, match="expected 8 GPUs, found 1"):
        _collect(RecordedNvml(_recording(1)), count=8)


def test_no_gpu_is_refused_even_without_a_count() -> None:
    with pytest.raises(CollectionError, match="NVML sees no GPU"):
        _collect(RecordedNvml(_recording(0)))


def test_architecture_outside_the_allow_list() -> None:
    with pytest.raises(CollectionError, match="GPU 0 is hopper, not one of the configured architectures"):
        _collect(RecordedNvml(_recording()), architectures=(GpuArch.BLACKWELL,))


def test_architecture_without_cc_is_refused() -> None:
    rec = _recording(2)
    rec["gpus"][1]["arch"] = "ampere"
    api = RecordedNvml(rec)
    with pytest.raises(CollectionError, match="GPU 1 is ampere: confidential computing needs hopper or blackwell"):
        _collect(api)
    assert not any(c[0] == "attestation_report" for c in api.calls)  # checked before any GPU is asked


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        GpuSettings(count=0)
    with pytest.raises(ConfigError, match="unknown GPU architecture"):
        GpuSettings(architectures=("hopper",))  # type: ignore[arg-type]


# ---- nonces: length checked, value not ----


@pytest.mark.parametrize("nonce", [b"", bytes(31), bytes(33), bytes(64), "00" * 32])
def test_nonce_of_wrong_length_or_type_is_refused(nonce: Any) -> None:
    api = RecordedNvml(_recording())
    with pytest.raises(CollectionError, match="a GPU nonce is 32 bytes"):
        collect_gpus(api, GpuSettings(), lambda _i: nonce)
    assert api.open_sessions == 0 and not any(c[0] == "attestation_report" for c in api.calls)


def test_collector_does_not_check_the_nonce_in_the_report() -> None:
    # A recording answers with its fixed report for any nonce. The collector passes it on as it is: the
    # verifier compares the report's request nonce with its challenge and rejects this one there.
    asked = bytes([0xAB]) * 32
    [gpu] = collect_gpus(RecordedNvml(_recording()), GpuSettings(), lambda _i: asked)
    assert gpu.report == _report(0) and gpu.report[4:36] == NONCE != asked


def test_reports_are_replayed_in_order_then_the_last_again() -> None:
    rec = _recording()
    rec["gpus"][0]["reports"] = [{"report": _report(0, bytes([n]) * 32).hex()} for n in (1, 2)]
    api = RecordedNvml(rec)
    got = [api.attestation_report(0, NONCE)[4:36] for _ in range(3)]
    assert got == [bytes([1]) * 32, bytes([2]) * 32, bytes([2]) * 32]


# ---- NVML errors ----


@pytest.mark.parametrize(("code", "words"), [
    (3, "not supported"), (4, "no permission"), (9, "no NVIDIA driver is loaded"),
    (12, "libnvidia-ml.so.1"), (13, "lacks this function"), (15, "GPU is lost"), (18, "versions differ"),
    (999, "unknown error"), (4242, "NVML error 4242"),
])
def test_nvml_errors_in_words(code: int, words: str) -> None:
    api = RecordedNvml(_recording(2, errors={"attestation_report/1": code}))
    with pytest.raises(CollectionError, match=words) as err:
        _collect(api)
    assert "NVML attestation_report failed" in str(err.value) and f"return code {code}" in str(err.value)
    assert api.open_sessions == 0 and api.calls[-1] == ("shutdown",)  # shut down on the error path


def test_init_failure_needs_no_shutdown() -> None:
    api = RecordedNvml(_recording(errors={"init": 9}))
    with pytest.raises(CollectionError, match="no NVIDIA driver is loaded"):
        _collect(api)
    assert api.calls == [("init",)]


def test_failing_shutdown_does_not_hide_the_first_error() -> None:
    api = RecordedNvml(_recording(cc=False, errors={"shutdown": 15}))
    with pytest.raises(CollectionError, match="confidential computing is off"):
        _collect(api)
    assert api.calls[-1] == ("shutdown",)


def test_failing_shutdown_after_success_is_reported() -> None:
    with pytest.raises(CollectionError, match="NVML shutdown failed"):
        _collect(RecordedNvml(_recording(errors={"shutdown": 999})))


def test_nvml_error_hint() -> None:
    err = nvml_error(4, "nvmlDeviceGetConfComputeGpuAttestationReport")
    assert err.hint and "root" in err.hint
    assert str(err).startswith("NVML nvmlDeviceGetConfComputeGpuAttestationReport failed: no permission")


# ---- the attestation certificate chain ----


def test_der_chain_is_converted_to_pem() -> None:
    rec = _recording()
    del rec["gpus"][0]["chain_pem"]
    rec["gpus"][0]["chain_hex"] = CHAIN_DER.hex()
    [gpu] = _collect(RecordedNvml(rec))
    assert gpu.chain_pem == CHAIN_PEM


def test_der_ending_in_a_zero_byte_keeps_it() -> None:
    # A signature's last byte can be 0x00: stripping "padding" blindly would cut the certificate short.
    # ECDSA signatures are randomised, so re-signing finds one (1 in 256 per signature).
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime(2024, 1, 1, tzinfo=UTC)
    builder = (x509.CertificateBuilder().subject_name(_name("zero")).issuer_name(_name("zero"))
               .public_key(key.public_key()).serial_number(1).not_valid_before(now)
               .not_valid_after(now + timedelta(days=1)))
    for _ in range(4000):
        cert = builder.sign(key, hashes.SHA384())
        if cert.public_bytes(Encoding.DER).endswith(b"\0"):
            break
    else:
        pytest.skip("no certificate ending in a zero byte was drawn")
    der = CHAIN_DER + cert.public_bytes(Encoding.DER)
    assert normalise_chain(der) == CHAIN_PEM + cert.public_bytes(Encoding.PEM)


def test_chain_normalisation() -> None:
    assert normalise_chain(CHAIN_PEM.rstrip(b"\n") + bytes(40)) == CHAIN_PEM  # NUL padding, no final newline
    assert normalise_chain(b"\r\n".join(CHAIN_PEM.split(b"\n"))) == CHAIN_PEM
    root_first = b"".join(c.public_bytes(Encoding.PEM) for c in reversed(CHAIN))
    assert normalise_chain(root_first) == CHAIN_PEM  # turned round: leaf first
    assert normalise_chain(b"".join(c.public_bytes(Encoding.DER) for c in reversed(CHAIN))) == CHAIN_PEM
    assert normalise_chain(CHAIN_DER + bytes(100)) == CHAIN_PEM  # a zero-padded buffer
    one = CHAIN[0].public_bytes(Encoding.PEM)
    assert normalise_chain(one) == one


@pytest.mark.parametrize("raw", [b"", bytes(64), b"garbage", CHAIN_DER[:-10], b"-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_unreadable_chain_is_refused(raw: bytes) -> None:
    with pytest.raises(CollectionError, match="neither PEM nor DER"):
        normalise_chain(raw, "GPU 3")


# ---- the ready state ----


def test_set_ready_is_called_and_recorded() -> None:
    api = RecordedNvml(_recording())
    assert ready_state(api) is False
    set_ready(api, True)
    assert ("set_ready_state", True) in api.calls
    assert ready_state(api) is True
    [gpu] = _collect(api)
    assert gpu.ready
    set_ready(api, False)
    assert ready_state(api) is False and api.open_sessions == 0


def test_set_ready_error_is_mapped_and_shut_down() -> None:
    api = RecordedNvml(_recording(errors={"set_ready_state": 4}))
    with pytest.raises(CollectionError, match="no permission"):
        set_ready(api, True)
    assert api.open_sessions == 0


# ---- recordings ----


def test_record_session_round_trip() -> None:
    original = _recording(8, mode="protected-pcie", cc=False, ready=True)
    rec = json.loads(json.dumps(record_session(RecordedNvml(original), [NONCE])))
    assert rec == original
    settings = GpuSettings(count=8, ppcie=True)
    assert collect_gpus(RecordedNvml(rec), settings, _nonces) == collect_gpus(RecordedNvml(original), settings,
                                                                              _nonces)


def test_record_session_keeps_a_der_chain_as_hex() -> None:
    original = _recording()
    del original["gpus"][0]["chain_pem"]
    original["gpus"][0]["chain_hex"] = CHAIN_DER.hex()
    assert record_session(RecordedNvml(original), [NONCE])["gpus"][0]["chain_hex"] == CHAIN_DER.hex()


def test_record_session_refuses_a_bad_nonce() -> None:
    with pytest.raises(CollectionError, match="32 bytes"):
        record_session(RecordedNvml(_recording()), [bytes(16)])


@pytest.mark.parametrize(("change", "words"), [
    ({"format": "other"}, "recording.format"),
    ({"colour": "green"}, "recording.colour: unknown key"),
    ({"gpus": "none"}, "recording.gpus: expected a list"),
    ({"settings": {"environment": "production"}}, "cc_feature: missing"),
    ({"settings": {"cc_feature": True, "multi_gpu_mode": "nvlink"}}, "multi_gpu_mode"),
    ({"errors": {"init": "nine"}}, "recording.errors.init"),
])
def test_bad_recording_is_a_config_error(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        RecordedNvml(_recording(**change))


@pytest.mark.parametrize(("gpu", "words"), [
    ({"reports": []}, "non-empty list"),
    ({"reports": [{"report": "xyz"}]}, r"gpus\[0\].reports\[0\].report"),
    ({"chain_hex": "00"}, "exactly one of chain_pem"),
])
def test_bad_recorded_gpu_is_a_config_error(gpu: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        RecordedNvml(_recording(gpus=[_gpu(0, **gpu)]))


# ---- NVIDIA's sample evidence as the recorded answers ----


def test_vendor_report_and_chain_pass_through(vectors: Path) -> None:
    folder = vectors / "nvidia" / "go-nvtrust"
    if not (folder / "attestationReport.txt").is_file():
        pytest.skip(f"NVIDIA vectors not found in {folder}")
    report = bytes.fromhex((folder / "attestationReport.txt").read_text().strip())
    chain = (folder / "gpuAkCertChain.txt").read_bytes()  # NVML's attestationCertChain: PEM, no final newline
    rec = _recording(gpus=[_gpu(0, reports=[{"report": report.hex()}], chain_pem=chain.decode())])
    [gpu] = _collect(RecordedNvml(rec), count=1, architectures=(GpuArch.HOPPER,))
    assert gpu.report == report
    assert gpu.chain_pem == chain + b"\n"  # the same certificates, byte for byte, in canonical PEM
    certs = x509.load_pem_x509_certificates(gpu.chain_pem)
    assert [c.public_bytes(Encoding.DER) for c in certs] == [c.public_bytes(Encoding.DER)
                                                             for c in x509.load_pem_x509_certificates(chain)]
    assert "GSP FMC LF" in certs[0].subject.rfc4514_string()  # leaf first


# ---- PynvmlApi over pynvml's structures, and over the real pynvml ----


class _FakeNvml(SimpleNamespace):
    """pynvml's error class, constants and ctypes structures, with the C calls answered here."""

    def __init__(self, *, cc: int = 1, mode: int = 0, settings_code: int = 0, count: int = 2,
                 chain: bytes = CHAIN_PEM.rstrip(b"\n")) -> None:
        real = {k: getattr(pynvml, k) for k in dir(pynvml) if k.startswith(("NVML", "c_nvml"))}
        super().__init__(**real)
        self.cc, self.mode, self.settings_code, self.count, self.chain = cc, mode, settings_code, count, chain
        self.ready, self.log = 0, []

    def nvmlInit(self) -> None:
        self.log.append("init")

    def nvmlShutdown(self) -> None:
        self.log.append("shutdown")

    def nvmlSystemGetConfComputeSettings(self, ref: Any) -> int:
        if self.settings_code == 13:  # a library without the function: pynvml raises for this one
            raise pynvml.NVMLError(13)
        settings = ref._obj
        assert settings.version == pynvml.nvmlSystemConfComputeSettings_v1
        settings.environment, settings.ccFeature, settings.devToolsMode = 2, self.cc, 0
        settings.multiGpuMode = self.mode
        return self.settings_code

    def nvmlSystemGetConfComputeState(self) -> Any:
        return SimpleNamespace(environment=2, ccFeature=self.cc, devToolsMode=0)

    def nvmlSystemGetConfComputeCapabilities(self) -> Any:
        return SimpleNamespace(cpuCaps=2, gpusCaps=1)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "570.124.03"

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        if index >= self.count:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return ("handle", index)

    def nvmlDeviceGetArchitecture(self, handle: Any) -> int:
        return pynvml.NVML_DEVICE_ARCH_BLACKWELL if handle[1] else pynvml.NVML_DEVICE_ARCH_HOPPER

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return f"GPU-{handle[1]}"

    def nvmlDeviceGetVbiosVersion(self, handle: Any) -> str:
        return "97.00.0B.00.01"

    def nvmlDeviceGetConfComputeGpuAttestationReport(self, handle: Any, nonce: bytes) -> Any:
        got = pynvml.c_nvmlConfComputeGpuAttestationReport_t()
        got.nonce = (ctypes.c_uint8 * len(nonce))(*nonce)  # raises for anything but 32 bytes, as pynvml does
        data = _report(handle[1], bytes(got.nonce))
        ctypes.memmove(got.attestationReport, data, len(data))
        got.attestationReportSize = len(data)
        return got

    def nvmlDeviceGetConfComputeGpuCertificate(self, handle: Any) -> Any:
        got = pynvml.c_nvmlConfComputeGpuCertificate_t()
        ctypes.memmove(got.certChain, b"\x30\x00", 2)  # the other chain: never read
        got.certChainSize = 2
        ctypes.memmove(got.attestationCertChain, self.chain, len(self.chain))
        got.attestationCertChainSize = len(self.chain)
        return got

    def nvmlSystemGetConfComputeGpusReadyState(self) -> int:
        return self.ready

    def nvmlSystemSetConfComputeGpusReadyState(self, state: int) -> None:
        self.log.append(("set_ready", state))
        self.ready = state


def test_pynvml_api_over_pynvml_structures() -> None:
    fake = _FakeNvml()
    gpus = collect_gpus(PynvmlApi(fake), GpuSettings(count=2), _nonces)
    assert [(g.arch, g.uuid, g.driver_version, g.vbios_version) for g in gpus] == [
        (GpuArch.HOPPER, "GPU-0", "570.124.03", "97.00.0B.00.01"),
        (GpuArch.BLACKWELL, "GPU-1", "570.124.03", "97.00.0B.00.01")]
    assert [g.report for g in gpus] == [_report(0, _nonces(0)), _report(1, _nonces(1))]
    assert all(g.chain_pem == CHAIN_PEM for g in gpus)  # attestationCertChain, not certChain
    assert fake.log == ["init", "shutdown"]


def test_pynvml_api_recorded_then_replayed() -> None:
    rec = record_session(PynvmlApi(_FakeNvml(mode=1, cc=0)), [NONCE])
    assert rec["settings"] == {"environment": "production", "cc_feature": False, "devtools": False,
                               "multi_gpu_mode": "protected-pcie"}
    assert rec["capabilities"] == {"cpu": "intel-tdx", "gpus_cc_capable": True}
    assert rec["gpus"][1]["arch"] == "blackwell" and rec["gpus"][0]["chain_pem"] == CHAIN_PEM.rstrip(b"\n").decode()
    [g0, g1] = collect_gpus(RecordedNvml(json.loads(json.dumps(rec))), GpuSettings(ppcie=True), _nonces)
    assert g1.report == _report(1, NONCE) and g1.multi_gpu_mode is MultiGpuMode.PROTECTED_PCIE


def test_pynvml_api_ready_state() -> None:
    fake = _FakeNvml()
    api = PynvmlApi(fake)
    set_ready(api, True)
    assert ready_state(api) is True and ("set_ready", 1) in fake.log
    set_ready(api, False)
    assert fake.log[-2] == ("set_ready", 0) and ready_state(api) is False


def test_pynvml_api_settings_fall_back_to_the_state_on_old_drivers() -> None:
    api = PynvmlApi(_FakeNvml(settings_code=13))
    api.init()
    s = api.cc_settings()
    assert (s.environment, s.cc_feature, s.multi_gpu_mode) == (CcEnvironment.PRODUCTION, True, MultiGpuMode.SINGLE)
    assert PynvmlApi(_FakeNvml(settings_code=25)).cc_settings().multi_gpu_mode is MultiGpuMode.SINGLE


def test_pynvml_api_settings_error_code_is_mapped() -> None:
    with pytest.raises(CollectionError, match="nvmlSystemGetConfComputeSettings failed: no permission"):
        PynvmlApi(_FakeNvml(settings_code=4)).cc_settings()


def test_pynvml_api_unknown_multi_gpu_mode_is_refused() -> None:
    with pytest.raises(CollectionError, match="unknown CC environment .* or multi-GPU mode"):
        PynvmlApi(_FakeNvml(mode=7)).cc_settings()


def test_pynvml_api_maps_pynvml_errors() -> None:
    fake = _FakeNvml()

    def refuse(_handle: Any, _nonce: bytes) -> Any:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    fake.nvmlDeviceGetConfComputeGpuAttestationReport = refuse
    with pytest.raises(CollectionError, match="GpuAttestationReport failed: not supported"):
        collect_gpus(PynvmlApi(fake), GpuSettings(), _nonces)
    assert fake.log == ["init", "shutdown"]


def test_pynvml_api_refuses_an_oversized_answer() -> None:
    fake = _FakeNvml()
    real = fake.nvmlDeviceGetConfComputeGpuCertificate

    def oversized(handle: Any) -> Any:
        got = real(handle)
        got.attestationCertChainSize = 0x1401
        return got

    fake.nvmlDeviceGetConfComputeGpuCertificate = oversized
    with pytest.raises(CollectionError, match="attestation certificate chain of 5121 bytes"):
        collect_gpus(PynvmlApi(fake), GpuSettings(), _nonces)


def test_missing_pynvml_is_a_collection_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    with pytest.raises(CollectionError, match="nvidia-ml-py package .* is not installed") as err:
        collect_gpus(PynvmlApi(), GpuSettings(), _nonces)
    assert "ratls-gateway[gateway]" in str(err.value)


def test_real_pynvml_without_a_driver() -> None:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        pass
    else:
        pytest.skip("an NVIDIA driver is installed here: this test is about a machine without one")
    with pytest.raises(CollectionError, match="no NVIDIA driver is installed") as err:
        collect_gpus(PynvmlApi(), GpuSettings(), _nonces)
    assert "NVML nvmlInit failed" in str(err.value) and "return code 12" in str(err.value)
    with pytest.raises(CollectionError, match="nvmlInit failed"):
        set_ready(PynvmlApi(), True)
