"""Collect NVIDIA GPU evidence inside the confidential VM through NVML (``nvidia-ml-py``, module ``pynvml``).

Collection only: per GPU the SPDM report for a nonce, the attestation certificate chain and what NVML says
about the system's confidential-computing state. Nothing here verifies anything (not even the nonce in the
report): that is the verifier's job, on evidence that may have been collected by anyone.

NVML is reached through :class:`NvmlApi`, a protocol with exactly the calls collection needs, typed in our
terms. :class:`PynvmlApi` implements it over pynvml (imported on first use, so a client-only install never
loads it); :class:`RecordedNvml` replays a recording made on a real CVM with :func:`record_session`, which is
how the tests run without a GPU.

Facts about NVML this module relies on:

* ``nvmlDeviceGetConfComputeGpuCertificate`` fills two buffers: ``certChain`` and ``attestationCertChain``.
  The one whose leaf signs the SPDM report is ``attestationCertChain`` (``attestationCertChainSize`` bytes):
  PEM text, leaf first, ending with NVIDIA's device root (NVIDIA's samples of it have no final newline).
  DER (concatenated certificates) is accepted as well; either is normalised to leaf-first PEM.
* ``nvmlDeviceGetConfComputeGpuAttestationReport`` takes the 32-byte nonce and returns SPDM
  GET_MEASUREMENTS request || MEASUREMENTS response in ``attestationReport[:attestationReportSize]``.
* In protected-PCIe (PPCIe) mode the GPUs run with their CC feature *disabled*; the multi-GPU mode is what
  makes them confidential (NVIDIA's own tools accept CC on *or* PPCIe).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ...errors import CollectionError, ConfigError
from ...yamlfile import KeyedReader, hex_bytes
from .types import NONCE_LEN, GpuArch

RECORDING_FORMAT = "ratls-nvml-recording/1"
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


class MultiGpuMode(StrEnum):
    SINGLE = "single"  # NVML_CC_SYSTEM_MULTIGPU_NONE: every GPU on its own (single-GPU passthrough)
    PROTECTED_PCIE = "protected-pcie"  # PPCIe: NVLink in plaintext, NVSwitches inside the TCB (Hopper HGX)
    MULTI = "multi"  # NVML_CC_SYSTEM_MULTIGPU_NVLE: multi-GPU passthrough with encrypted NVLink


class CcEnvironment(StrEnum):
    UNAVAILABLE = "unavailable"
    SIMULATED = "simulated"
    PRODUCTION = "production"


# NVML ABI values (nvml.h), kept here so a pynvml older than the constant still reads them.
_ENVIRONMENTS = {0: CcEnvironment.UNAVAILABLE, 1: CcEnvironment.SIMULATED, 2: CcEnvironment.PRODUCTION}
_MULTI_GPU_MODES = {0: MultiGpuMode.SINGLE, 1: MultiGpuMode.PROTECTED_PCIE, 2: MultiGpuMode.MULTI}
_CPU_CAPS = {0: "none", 1: "amd-sev", 2: "intel-tdx", 3: "amd-sev-snp", 4: "amd-snp-vtom"}
_SUCCESS = 0
_FUNCTION_NOT_FOUND = 13
_ARGUMENT_VERSION_MISMATCH = 25
_OLD_DRIVER = (_FUNCTION_NOT_FOUND, _ARGUMENT_VERSION_MISMATCH)


@dataclass(frozen=True)
class CcSettings:
    """The system's confidential-computing settings as NVML reports them."""

    environment: CcEnvironment
    cc_feature: bool  # the GPUs' CC mode
    devtools: bool
    multi_gpu_mode: MultiGpuMode

    @property
    def confidential(self) -> bool:
        # PPCIe runs the GPUs with CC mode off by design; the PPCIe mode is what protects them.
        return self.cc_feature or self.multi_gpu_mode is MultiGpuMode.PROTECTED_PCIE


@dataclass(frozen=True)
class CcCapabilities:
    cpu: str  # "amd-sev-snp", "intel-tdx", ... or "none"
    gpus_cc_capable: bool


class NvmlApi(Protocol):
    """The NVML calls collection makes. Implementations raise :class:`CollectionError` only; indices are
    NVML device indices (0..device_count-1)."""

    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def cc_settings(self) -> CcSettings: ...
    def cc_capabilities(self) -> CcCapabilities: ...
    def driver_version(self) -> str: ...
    def device_count(self) -> int: ...
    def architecture(self, index: int) -> str: ...  # lower-case NVML name: "hopper", "blackwell", "ampere"
    def uuid(self, index: int) -> str: ...
    def vbios_version(self, index: int) -> str: ...
    def attestation_report(self, index: int, nonce: bytes) -> bytes: ...
    def attestation_chain(self, index: int) -> bytes: ...  # as NVML returned it (PEM or DER)
    def ready_state(self) -> bool: ...
    def set_ready_state(self, ready: bool) -> None: ...


# ---- NVML errors in words ----

_DRIVER_HINT = "install and load a confidential-computing capable NVIDIA driver inside the CVM"
_NVML_ERRORS: dict[int, tuple[str, str | None]] = {
    1: ("NVML is not initialised", "this is a bug in the caller: NVML calls must run between init and shutdown"),
    2: ("invalid argument", "the driver may be too old for this call"),
    3: ("not supported", "confidential computing needs a Hopper or Blackwell GPU in CC (or PPCIe) mode and a "
                         "CC-capable driver"),
    4: ("no permission", "run the gateway as root or give it access to the NVIDIA device nodes"),
    6: ("not found", None),
    9: ("no NVIDIA driver is loaded", _DRIVER_HINT),
    10: ("timed out", "the GPU did not answer; check the driver log in the CVM"),
    12: ("the NVML library (libnvidia-ml.so.1) was not found: no NVIDIA driver is installed", _DRIVER_HINT),
    13: ("the NVML library lacks this function", "the NVIDIA driver is older than this call; upgrade it"),
    15: ("the GPU is lost (fell off the bus)", "reset the GPU or restart the CVM"),
    16: ("the GPU needs a reset", "reset the GPU or restart the CVM"),
    17: ("the operating system blocked the request", None),
    18: ("NVML and the kernel driver versions differ", "reload the driver or reboot after a driver upgrade"),
    19: ("in use", None),
    20: ("out of memory", None),
    25: ("the driver does not know this structure version", "upgrade the NVIDIA driver"),
    27: ("not ready", "the GPU is still initialising; retry"),
    28: ("GPU not found", None),
    29: ("invalid state", "the GPU is in a state this call does not allow (e.g. CC mode off)"),
    999: ("unknown error", None),
}


def nvml_error(code: int, call: str) -> CollectionError:
    """The :class:`CollectionError` for NVML return code *code* from *call*."""
    words, hint = _NVML_ERRORS.get(code, (f"NVML error {code}", None))
    return CollectionError(f"NVML {call} failed: {words} (NVML return code {code})", hint=hint)


# ---- pynvml ----


class PynvmlApi:
    """:class:`NvmlApi` over pynvml. *module* replaces the pynvml module (tests)."""

    def __init__(self, module: Any = None) -> None:
        self._module = module
        self._handles: dict[int, Any] = {}

    def _nvml(self) -> Any:
        if self._module is None:
            try:
                import pynvml  # only where GPUs are collected: clients never need it
            except ImportError:
                raise CollectionError("cannot collect GPU evidence: the nvidia-ml-py package (module pynvml) "
                                      "is not installed",
                                      hint="install ratls-gateway[gateway] or nvidia-ml-py in the gateway's "
                                           "environment") from None
            self._module = pynvml
        return self._module

    def _call(self, name: str, *args: Any, tolerate: tuple[int, ...] = ()) -> Any:
        """pynvml's *name*; an NVML error becomes a CollectionError, or None for a code in *tolerate*."""
        nvml = self._nvml()
        fn = getattr(nvml, name, None)
        if fn is None:
            raise CollectionError(f"the installed nvidia-ml-py has no {name}", hint="upgrade nvidia-ml-py")
        # pynvml raises NVMLError (with the return code in .value) and, for unversioned calls that the
        # library does not match, NVMLLibraryMismatchError; both become a CollectionError.
        mismatch = getattr(nvml, "NVMLLibraryMismatchError", ())
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            if int(exc.value) in tolerate:
                return None
            raise nvml_error(int(exc.value), name) from None
        except mismatch as exc:
            raise CollectionError(f"NVML {name} failed: {exc}",
                                  hint="use an nvidia-ml-py matching the driver") from None

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = self._call("nvmlDeviceGetHandleByIndex", index)
        return self._handles[index]

    def init(self) -> None:
        self._call("nvmlInit")

    def shutdown(self) -> None:
        self._handles.clear()  # handles are invalid once NVML is shut down
        self._call("nvmlShutdown")

    def cc_settings(self) -> CcSettings:
        nvml = self._nvml()
        struct = getattr(nvml, "c_nvmlSystemConfComputeSettings_v1_t", None)
        if struct is not None:
            settings = struct()
            # pynvml passes this call through unchecked: it returns NVML's code instead of raising (except
            # when the library lacks the function).
            code = self._call("nvmlSystemGetConfComputeSettings", ctypes.byref(settings), tolerate=_OLD_DRIVER)
            code = _FUNCTION_NOT_FOUND if code is None else code
            if code == _SUCCESS:
                return _cc_settings(settings.environment, settings.ccFeature, settings.devToolsMode,
                                    settings.multiGpuMode)
            if code not in _OLD_DRIVER:
                raise nvml_error(code, "nvmlSystemGetConfComputeSettings")
        # Drivers older than the settings call (535) have only the state, and no multi-GPU mode.
        state = self._call("nvmlSystemGetConfComputeState")
        return _cc_settings(state.environment, state.ccFeature, state.devToolsMode, 0)

    def cc_capabilities(self) -> CcCapabilities:
        caps = self._call("nvmlSystemGetConfComputeCapabilities")
        return CcCapabilities(_CPU_CAPS.get(caps.cpuCaps, f"unknown ({caps.cpuCaps})"), caps.gpusCaps == 1)

    def driver_version(self) -> str:
        return str(self._call("nvmlSystemGetDriverVersion"))

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount"))

    def architecture(self, index: int) -> str:
        code = self._call("nvmlDeviceGetArchitecture", self._handle(index))
        prefix = "NVML_DEVICE_ARCH_"
        names = {getattr(self._nvml(), n): n.removeprefix(prefix).lower() for n in dir(self._nvml())
                 if n.startswith(prefix)}
        return names.get(code, f"unknown ({code})")

    def uuid(self, index: int) -> str:
        return str(self._call("nvmlDeviceGetUUID", self._handle(index)))

    def vbios_version(self, index: int) -> str:
        return str(self._call("nvmlDeviceGetVbiosVersion", self._handle(index)))

    def attestation_report(self, index: int, nonce: bytes) -> bytes:
        got = self._call("nvmlDeviceGetConfComputeGpuAttestationReport", self._handle(index), nonce)
        return _sized(bytes(got.attestationReport), got.attestationReportSize, f"GPU {index} attestation report")

    def attestation_chain(self, index: int) -> bytes:
        got = self._call("nvmlDeviceGetConfComputeGpuCertificate", self._handle(index))
        return _sized(bytes(got.attestationCertChain), got.attestationCertChainSize,
                      f"GPU {index} attestation certificate chain")

    def ready_state(self) -> bool:
        return bool(self._call("nvmlSystemGetConfComputeGpusReadyState") == 1)  # ACCEPTING_CLIENT_REQUESTS_TRUE

    def set_ready_state(self, ready: bool) -> None:
        self._call("nvmlSystemSetConfComputeGpusReadyState", 1 if ready else 0)


def _sized(buffer: bytes, size: int, what: str) -> bytes:
    if not 0 < size <= len(buffer):
        raise CollectionError(f"NVML returned a {what} of {size} bytes (buffer {len(buffer)})",
                              hint="the driver and nvidia-ml-py may not match; upgrade both")
    return buffer[:size]


def _cc_settings(environment: int, cc_feature: int, devtools: int, multi_gpu: int) -> CcSettings:
    if environment not in _ENVIRONMENTS or multi_gpu not in _MULTI_GPU_MODES:
        raise CollectionError(f"NVML reports an unknown CC environment ({environment}) or multi-GPU mode "
                              f"({multi_gpu})", hint="this gateway is older than the driver; upgrade ratls-gateway")
    return CcSettings(_ENVIRONMENTS[environment], cc_feature == 1, devtools == 1, _MULTI_GPU_MODES[multi_gpu])


# ---- recordings ----


@dataclass
class _RecordedGpu:
    arch: str
    uuid: str
    vbios_version: str
    reports: list[bytes]
    chain: bytes
    reports_given: int = 0


class RecordedNvml:
    """:class:`NvmlApi` answering from a recording (see :func:`record_session` for the format).

    A recording holds fixed reports, so :meth:`attestation_report` returns the next recorded report whatever
    nonce it is asked for (the last one again once they are used up): the verifier's nonce check is what
    rejects a replayed report. ``errors`` (``{"call": code}`` or ``{"call/index": code}``, call = the
    protocol's method name) makes calls fail with that NVML return code. Every call is appended to
    :attr:`calls` as ``(name, *arguments)``; :attr:`open_sessions` counts init minus shutdown.
    """

    def __init__(self, recording: Mapping[str, Any]) -> None:
        r = KeyedReader(dict(recording), "recording", ConfigError)
        if r.text("format", None) != RECORDING_FORMAT:
            raise ConfigError(f"recording.format: expected {RECORDING_FORMAT!r}")
        self._driver = r.text("driver_version", None) or ""
        self._settings = _read_settings(r.sub("settings"))
        self._caps = _read_capabilities(r.sub("capabilities"))
        self._ready = bool(r.boolean("ready", False))
        gpus = r.get("gpus")
        if not isinstance(gpus, list):
            raise ConfigError("recording.gpus: expected a list of GPUs")
        self._gpus = [_read_gpu(KeyedReader(g, f"recording.gpus[{i}]", ConfigError)) for i, g in enumerate(gpus)]
        self._errors = _read_errors(r.mapping("errors"))
        r.finish()
        self.calls: list[tuple[str, Any]] = []
        self.open_sessions = 0

    def _answer(self, call: str, *args: Any, index: int | None = None) -> None:
        self.calls.append((call, *args))
        for key in (call, f"{call}/{index}"):
            if key in self._errors:
                raise nvml_error(self._errors[key], call)
        if index is not None and not 0 <= index < len(self._gpus):
            raise nvml_error(2, call)  # NVML answers an index beyond the count with INVALID_ARGUMENT

    def init(self) -> None:
        self._answer("init")
        self.open_sessions += 1

    def shutdown(self) -> None:
        self._answer("shutdown")
        self.open_sessions -= 1

    def cc_settings(self) -> CcSettings:
        self._answer("cc_settings")
        return self._settings

    def cc_capabilities(self) -> CcCapabilities:
        self._answer("cc_capabilities")
        return self._caps

    def driver_version(self) -> str:
        self._answer("driver_version")
        return self._driver

    def device_count(self) -> int:
        self._answer("device_count")
        return len(self._gpus)

    def architecture(self, index: int) -> str:
        self._answer("architecture", index, index=index)
        return self._gpus[index].arch

    def uuid(self, index: int) -> str:
        self._answer("uuid", index, index=index)
        return self._gpus[index].uuid

    def vbios_version(self, index: int) -> str:
        self._answer("vbios_version", index, index=index)
        return self._gpus[index].vbios_version

    def attestation_report(self, index: int, nonce: bytes) -> bytes:
        self._answer("attestation_report", index, nonce, index=index)
        gpu = self._gpus[index]
        report = gpu.reports[min(gpu.reports_given, len(gpu.reports) - 1)]
        gpu.reports_given += 1
        return report

    def attestation_chain(self, index: int) -> bytes:
        self._answer("attestation_chain", index, index=index)
        return self._gpus[index].chain

    def ready_state(self) -> bool:
        self._answer("ready_state")
        return self._ready

    def set_ready_state(self, ready: bool) -> None:
        self._answer("set_ready_state", ready)
        self._ready = ready


def _read_errors(raw: Mapping[Any, Any]) -> dict[str, int]:
    for key, code in raw.items():
        if isinstance(code, bool) or not isinstance(code, int):
            raise ConfigError(f"recording.errors.{key}: expected an NVML return code (integer), got {code!r}")
    return {str(k): v for k, v in raw.items()}


def _read_settings(r: KeyedReader | None) -> CcSettings:
    if r is None or r.boolean("cc_feature", None) is None:
        raise ConfigError("recording.settings.cc_feature: missing", hint="write down what NVML answered")
    s = CcSettings(r.enum("environment", CcEnvironment, CcEnvironment.PRODUCTION),
                   bool(r.boolean("cc_feature", None)), bool(r.boolean("devtools", False)),
                   r.enum("multi_gpu_mode", MultiGpuMode, MultiGpuMode.SINGLE))
    r.finish()
    return s


def _read_capabilities(r: KeyedReader | None) -> CcCapabilities:
    if r is None:
        return CcCapabilities("none", True)
    caps = CcCapabilities(r.text("cpu", "none") or "none", bool(r.boolean("gpus_cc_capable", True)))
    r.finish()
    return caps


def _read_gpu(r: KeyedReader) -> _RecordedGpu:
    reports = r.get("reports")
    if not isinstance(reports, list) or not reports:
        raise ConfigError(f"{r.key_path('reports')}: expected a non-empty list of {{nonce, report}}")
    raw = []
    for i, item in enumerate(reports):
        entry = KeyedReader(item, f"{r.key_path('reports')}[{i}]", ConfigError)
        text = entry.text("report", None) or ""
        if not text:
            raise ConfigError(f"{entry.key_path('report')}: empty")
        raw.append(hex_bytes(text, len(text) // 2, entry.key_path("report"), ConfigError))
        entry.text("nonce", None, optional=True)  # what it answered; informative, never checked here
        entry.finish()
    if r.has("chain_pem") == r.has("chain_hex"):
        raise ConfigError(f"{r.path}: give exactly one of chain_pem (text) and chain_hex (NVML's bytes)")
    pem = r.text("chain_pem", None, optional=True)
    hexed = r.text("chain_hex", None, optional=True) or ""
    chain = pem.encode() if pem is not None else hex_bytes(hexed, len(hexed) // 2, r.key_path("chain_hex"),
                                                           ConfigError)
    gpu = _RecordedGpu(r.text("arch", None) or "", r.text("uuid", None) or "", r.text("vbios_version", "") or "",
                       raw, chain)
    r.finish()
    return gpu


def record_session(api: NvmlApi, nonces: Sequence[bytes]) -> dict[str, Any]:
    """Drive *api* as collection would and write down every answer: a recording :class:`RecordedNvml`
    replays. Reads only (the ready state is recorded, never set). Per GPU, one report for each nonce.

    To capture one on a real CVM (as root, with the driver loaded)::

        import json, os
        from ratls.platforms.nvidia.collect import PynvmlApi, record_session
        rec = record_session(PynvmlApi(), [os.urandom(32)])
        print(json.dumps(rec, indent=1))

    Format (JSON-able; hex is lower case)::

        {"format": "ratls-nvml-recording/1", "driver_version": "550.90.07",
         "settings": {"environment": "production", "cc_feature": true, "devtools": false,
                      "multi_gpu_mode": "single"},
         "capabilities": {"cpu": "amd-sev-snp", "gpus_cc_capable": true},
         "ready": false,
         "gpus": [{"arch": "hopper", "uuid": "GPU-…", "vbios_version": "96.00.9F.00.01",
                   "reports": [{"nonce": "<64 hex>", "report": "<hex>"}],
                   "chain_pem": "-----BEGIN CERTIFICATE-----…"}]}

    ``chain_pem`` holds the chain exactly as NVML returned it when that is PEM text; otherwise
    ``chain_hex`` holds NVML's bytes. A recording also accepts ``errors`` (see :class:`RecordedNvml`).
    """
    for nonce in nonces:
        _check_nonce(nonce, "record_session")
    with nvml_session(api):
        settings = api.cc_settings()
        rec: dict[str, Any] = {
            "format": RECORDING_FORMAT,
            "driver_version": api.driver_version(),
            "settings": {"environment": settings.environment.value, "cc_feature": settings.cc_feature,
                         "devtools": settings.devtools, "multi_gpu_mode": settings.multi_gpu_mode.value},
            "capabilities": _record_capabilities(api),
            "ready": api.ready_state() if settings.confidential else False,
            "gpus": [_record_gpu(api, i, nonces) for i in range(api.device_count())],
        }
    return rec


def _record_capabilities(api: NvmlApi) -> dict[str, Any]:
    caps = api.cc_capabilities()
    return {"cpu": caps.cpu, "gpus_cc_capable": caps.gpus_cc_capable}


def _record_gpu(api: NvmlApi, index: int, nonces: Sequence[bytes]) -> dict[str, Any]:
    gpu: dict[str, Any] = {"arch": api.architecture(index), "uuid": api.uuid(index),
                           "vbios_version": api.vbios_version(index),
                           "reports": [{"nonce": n.hex(), "report": api.attestation_report(index, n).hex()}
                                       for n in nonces]}
    chain = api.attestation_chain(index)
    try:
        text = chain.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if _PEM_BEGIN.decode() in text:
        gpu["chain_pem"] = text
    else:
        gpu["chain_hex"] = chain.hex()
    return gpu


# ---- collection ----


@dataclass(frozen=True)
class GpuSettings:
    """What the gateway configuration asks of the GPUs."""

    count: int | None = None  # the number expected; None: any number from 1
    architectures: tuple[GpuArch, ...] = ()  # allowed; empty: any that supports CC
    require_cc: bool = True
    allow_devtools: bool = False
    ppcie: bool | None = None  # True: must be in PPCIe mode, False: must not be, None: either

    def __post_init__(self) -> None:
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int)
                                       or self.count < 1):
            raise ConfigError(f"GPU count must be at least 1, got {self.count!r}",
                              hint="leave it unset to accept any number of GPUs")
        for arch in self.architectures:
            if not isinstance(arch, GpuArch):
                raise ConfigError(f"unknown GPU architecture {arch!r}",
                                  hint=f"known: {', '.join(a.value for a in GpuArch)}")


@dataclass(frozen=True)
class CollectedGpu:
    """One GPU's evidence and what NVML said about it (NVML's words: nothing here is verified)."""

    index: int
    label: str  # "gpu0"
    arch: GpuArch
    uuid: str
    driver_version: str  # NVML's, to compare with the report's
    vbios_version: str  # NVML's
    report: bytes  # SPDM GET_MEASUREMENTS request || MEASUREMENTS response, as the GPU returned it
    chain_pem: bytes  # attestation certificate chain, leaf first, PEM
    cc_on: bool  # the GPUs' CC feature (off in PPCIe mode by design)
    devtools: bool
    multi_gpu_mode: MultiGpuMode
    ready: bool  # the system's GPUs-ready state when collected


@contextlib.contextmanager
def nvml_session(api: NvmlApi) -> Iterator[NvmlApi]:
    """NVML initialised for the block and always shut down after it."""
    api.init()
    try:
        yield api
    except BaseException:
        # The first error is the one to report: a failing shutdown must not replace it.
        with contextlib.suppress(CollectionError):
            api.shutdown()
        raise
    api.shutdown()


def collect_gpus(api: NvmlApi, settings: GpuSettings, nonce_for: Callable[[int], bytes]) -> list[CollectedGpu]:
    """Every GPU's evidence, after checking NVML's CC state, the count and the architectures against
    *settings*. ``nonce_for(index)`` gives each GPU's 32-byte challenge. Raises :class:`CollectionError`."""
    with nvml_session(api):
        state = api.cc_settings()
        _check_state(api, state, settings)
        count = api.device_count()
        _check_count(count, settings.count)
        archs = [_check_arch(api.architecture(i), i, settings.architectures) for i in range(count)]
        driver = api.driver_version()
        # The ready state exists only in CC (or PPCIe) mode; NVML refuses to read it otherwise.
        ready = api.ready_state() if state.confidential else False
        return [_collect_one(api, i, arch, driver, state, ready, nonce_for(i)) for i, arch in enumerate(archs)]


def _collect_one(api: NvmlApi, index: int, arch: GpuArch, driver: str, state: CcSettings, ready: bool,
                 nonce: bytes) -> CollectedGpu:
    _check_nonce(nonce, f"nonce for GPU {index}")
    report = api.attestation_report(index, nonce)
    chain = normalise_chain(api.attestation_chain(index), f"GPU {index}")
    return CollectedGpu(index=index, label=f"gpu{index}", arch=arch, uuid=api.uuid(index), driver_version=driver,
                        vbios_version=api.vbios_version(index), report=report, chain_pem=chain,
                        cc_on=state.cc_feature, devtools=state.devtools, multi_gpu_mode=state.multi_gpu_mode,
                        ready=ready)


def _check_state(api: NvmlApi, state: CcSettings, settings: GpuSettings) -> None:
    if settings.require_cc and not state.confidential:
        raise CollectionError("confidential computing is off on the GPUs (NVML: CC feature disabled, multi-GPU "
                              f"mode {state.multi_gpu_mode})", hint=_cc_off_hint(api))
    if settings.require_cc and state.environment is CcEnvironment.SIMULATED:
        raise CollectionError("NVML reports a simulated confidential-computing environment",
                              hint="run on production CC hardware, or set require_cc to false for testing")
    if state.devtools and not settings.allow_devtools:
        raise CollectionError("the GPUs are in CC dev-tools mode: debuggers and profilers can read their memory",
                              hint="set the GPUs' CC mode to 'on' (not 'devtools') from the host, or allow_devtools "
                                   "for development")
    in_ppcie = state.multi_gpu_mode is MultiGpuMode.PROTECTED_PCIE
    if settings.ppcie is not None and settings.ppcie != in_ppcie:
        want = "protected-PCIe (PPCIe) mode" if settings.ppcie else "no protected-PCIe (PPCIe) mode"
        raise CollectionError(f"the GPU settings ask for {want}, NVML reports multi-GPU mode {state.multi_gpu_mode}",
                              hint="switch the host's PPCIe mode, or make the ppcie setting match the host")


def _cc_off_hint(api: NvmlApi) -> str:
    try:
        caps = api.cc_capabilities()
    except CollectionError:
        caps = None  # only used for a better hint
    if caps is not None and not caps.gpus_cc_capable:
        return "these GPUs are not CC-capable (NVML); confidential computing needs Hopper or Blackwell GPUs"
    return "turn the GPUs' CC mode on from the host and restart the CVM, or set require_cc to false for testing"


def _check_count(count: int, expected: int | None) -> None:
    if count < 1:
        raise CollectionError("NVML sees no GPU", hint="pass the GPUs through to the CVM")
    if expected is not None and count != expected:
        raise CollectionError(f"expected {expected} GPU{'s' if expected != 1 else ''}, found {count}",
                              hint="pass all configured GPUs through to the CVM, or correct the GPU count setting")


def _check_arch(name: str, index: int, allowed: tuple[GpuArch, ...]) -> GpuArch:
    try:
        arch = GpuArch(name)
    except ValueError:
        raise CollectionError(f"GPU {index} is {name}: confidential computing needs "
                              f"{' or '.join(a.value for a in GpuArch)}") from None
    if allowed and arch not in allowed:
        raise CollectionError(f"GPU {index} is {arch}, not one of the configured architectures "
                              f"({', '.join(allowed)})", hint="correct the architectures setting or the GPUs")
    return arch


def _check_nonce(nonce: object, what: str) -> None:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_LEN:
        size = f"{len(nonce)} bytes" if isinstance(nonce, bytes) else type(nonce).__name__
        raise CollectionError(f"{what}: a GPU nonce is {NONCE_LEN} bytes, got {size}")


def normalise_chain(raw: bytes, what: str = "GPU") -> bytes:
    """NVML's attestation chain (PEM text or concatenated DER, NUL padding tolerated) as leaf-first PEM."""
    try:
        # Padding is stripped only from PEM text: a DER certificate may well end in a zero byte.
        certs = x509.load_pem_x509_certificates(raw.rstrip(b"\0")) if _PEM_BEGIN in raw else _load_der_sequence(raw)
    except ValueError as exc:
        raise CollectionError(f"{what}: NVML's attestation certificate chain is neither PEM nor DER ({exc})",
                              hint="the driver may be damaged; reinstall it") from None
    # NVML gives the leaf first; should a chain ever come root first, turn it round so consumers need not guess.
    if len(certs) > 1 and not _links(certs) and _links(certs[::-1]):
        certs = certs[::-1]
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


def _links(certs: Sequence[x509.Certificate]) -> bool:
    return all(a.issuer == b.subject for a, b in zip(certs, certs[1:], strict=False))


def _load_der_sequence(data: bytes) -> list[x509.Certificate]:
    certs, pos = [], 0
    while pos < len(data) and (not certs or data[pos:].strip(b"\0")):  # zeros after a certificate: padding
        end = pos + _der_length(data, pos)
        certs.append(x509.load_der_x509_certificate(data[pos:end]))
        pos = end
    if not certs:
        raise ValueError("empty")
    return certs


def _der_length(data: bytes, pos: int) -> int:
    """Total length (header included) of the DER SEQUENCE at *pos*."""
    if pos + 2 > len(data) or data[pos] != 0x30:
        raise ValueError(f"no DER SEQUENCE at byte {pos}")
    first = data[pos + 1]
    if first < 0x80:
        if pos + 2 + first > len(data):
            raise ValueError(f"truncated DER at byte {pos}")
        return 2 + first
    n = first & 0x7F
    if not 1 <= n <= 4 or pos + 2 + n > len(data):
        raise ValueError(f"bad DER length at byte {pos}")
    total = 2 + n + int.from_bytes(data[pos + 2:pos + 2 + n], "big")
    if pos + total > len(data):
        raise ValueError(f"truncated DER at byte {pos}")
    return total


def set_ready(api: NvmlApi, ready: bool) -> None:
    """Tell the driver whether the GPUs may accept work (``nvmlSystemSetConfComputeGpusReadyState``). The
    gateway sets it only after its own verification of the evidence passed."""
    with nvml_session(api):
        api.set_ready_state(ready)


def ready_state(api: NvmlApi) -> bool:
    with nvml_session(api):
        return api.ready_state()
