"""The one table of Triton's API surface (HTTP routes and gRPC methods), each with a
category and a default exposure (DESIGN.md §5). ``filters/`` compiles from this table;
nothing else in the project hard-codes Triton paths.

HTTP patterns are anchored regular expressions over the *raw* request path (no query).
``{model}`` and ``{version}`` placeholders are expanded to the strict name syntax below,
and the expansion captures them as named groups so a policy can match per model. Every
expansion of the template language (these regexes, the compiled Envoy routes, concrete
paths) goes through ``expand_template``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Category(StrEnum):
    HEALTH = "health"
    METADATA = "metadata"
    INFERENCE = "inference"
    GENERATE = "generate"
    MODEL_CONFIG = "model-config"
    STATISTICS = "statistics"
    MODEL_REPOSITORY = "model-repository"
    SHARED_MEMORY = "shared-memory"
    TRACE = "trace"
    LOGGING = "logging"
    METRICS = "metrics"
    SAGEMAKER = "sagemaker"
    VERTEX = "vertex"


class Exposure(StrEnum):
    ALLOW = "allow"       # exposed by default
    OPT_IN = "opt-in"     # denied unless the policy enables it (per model where applicable)
    DENY = "deny"         # denied; enabling it needs an explicit, loud override


DEFAULT_EXPOSURE: dict[Category, Exposure] = {
    Category.HEALTH: Exposure.ALLOW,
    Category.METADATA: Exposure.ALLOW,
    Category.INFERENCE: Exposure.ALLOW,
    Category.GENERATE: Exposure.OPT_IN,
    Category.MODEL_CONFIG: Exposure.OPT_IN,
    Category.STATISTICS: Exposure.DENY,
    # Loading a model with file overrides executes arbitrary code inside the TEE.
    Category.MODEL_REPOSITORY: Exposure.DENY,
    # The CVE-2025-23319 chain starts at shared-memory registration.
    Category.SHARED_MEMORY: Exposure.DENY,
    Category.TRACE: Exposure.DENY,
    Category.LOGGING: Exposure.DENY,
    Category.METRICS: Exposure.DENY,
    Category.SAGEMAKER: Exposure.DENY,
    Category.VERTEX: Exposure.DENY,
}

# Triton model names as this gateway accepts them: no leading dot, no slash, no percent.
MODEL_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}"
VERSION = r"[0-9]{1,19}"
REGION = r"[A-Za-z0-9_.\-]{1,128}"  # a shared-memory region name

# The template language of HttpRoute.template: ``{model}``, an optional version segment
# ``[/versions/{version}]`` (always right after ``{model}``) and ``{region}``; all else is literal.
MODEL = "{model}"
VERSION_SEGMENT = "[/versions/{version}]"
REGION_NAME = "{region}"
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in (MODEL + VERSION_SEGMENT, MODEL, VERSION_SEGMENT,
                                                          REGION_NAME)))


def expand_template(template: str, *, model: str, version: str | None = None, region: str | None = None,
                    versioned_model: str | None = None, literal: Callable[[str], str] = re.escape) -> str:
    """*template* with ``{model}`` replaced by *model*, the optional version segment by *version*,
    ``{model}`` followed by that segment by *versioned_model* (default: the two concatenated) and
    ``{region}`` by *region*; the literal text between them is passed through *literal*
    (``re.escape`` for a regular expression, ``str`` for a concrete path). A placeholder the
    template has but the caller gave nothing for is an error, not a silent literal."""
    def replacement(placeholder: str) -> str:
        if placeholder == MODEL:
            return model
        if placeholder == REGION_NAME and region is not None:
            return region
        if placeholder == VERSION_SEGMENT and version is not None:
            return version
        if placeholder == MODEL + VERSION_SEGMENT and (versioned_model is not None or version is not None):
            return versioned_model if versioned_model is not None else model + str(version)
        raise ValueError(f"template {template!r}: nothing to put in place of {placeholder}")

    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(template):
        out += [literal(template[pos:m.start()]), replacement(m.group())]
        pos = m.end()
    out.append(literal(template[pos:]))
    return "".join(out)


@dataclass(frozen=True)
class HttpRoute:
    name: str
    methods: tuple[str, ...]
    template: str
    category: Category
    streaming: bool = False  # responses stream (generate_stream): never buffer

    @property
    def per_model(self) -> bool:
        return MODEL in self.template

    @property
    def versioned(self) -> bool:
        return VERSION_SEGMENT in self.template

    @property
    def regex(self) -> str:
        return "^" + expand_template(self.template, model=f"(?P<model>{MODEL_NAME})",
                                     version=f"(?:/versions/(?P<version>{VERSION}))?", region=REGION) + "$"

    @property
    def default(self) -> Exposure:
        return DEFAULT_EXPOSURE[self.category]

    def match(self, path: str) -> re.Match[str] | None:
        return re.match(self.regex, path)


@dataclass(frozen=True)
class GrpcMethod:
    service: str
    method: str
    category: Category
    client_streaming: bool = False
    server_streaming: bool = False
    per_model: bool = False  # the request names a model (model_name field)

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.method}"

    @property
    def default(self) -> Exposure:
        return DEFAULT_EXPOSURE[self.category]


_V = VERSION_SEGMENT
C = Category

def _shared_memory_routes(kind: str) -> tuple[HttpRoute, ...]:
    """Triton's system and CUDA shared-memory APIs have the same five routes."""
    base = f"/v2/{kind}sharedmemory"
    routes = (("status", "GET", "/status"), ("region-status", "GET", "/region/{region}/status"),
              ("register", "POST", "/region/{region}/register"), ("unregister", "POST", "/unregister"),
              ("region-unregister", "POST", "/region/{region}/unregister"))
    return tuple(HttpRoute(f"{kind}-shm-{name}", (method,), base + suffix, C.SHARED_MEMORY)
                 for name, method, suffix in routes)


HTTP_ROUTES: tuple[HttpRoute, ...] = (
    HttpRoute("server-live", ("GET",), "/v2/health/live", C.HEALTH),
    HttpRoute("server-ready", ("GET",), "/v2/health/ready", C.HEALTH),
    HttpRoute("server-metadata", ("GET",), "/v2", C.METADATA),
    # Order matters: Triton reads /v2/models/stats as statistics, not as a model named "stats",
    # so the exact route must win over the per-model pattern below.
    HttpRoute("all-model-stats", ("GET",), "/v2/models/stats", C.STATISTICS),
    HttpRoute("model-metadata", ("GET",), "/v2/models/{model}" + _V, C.METADATA),
    HttpRoute("model-ready", ("GET",), "/v2/models/{model}" + _V + "/ready", C.METADATA),
    HttpRoute("model-infer", ("POST",), "/v2/models/{model}" + _V + "/infer", C.INFERENCE),
    HttpRoute("model-generate", ("POST",), "/v2/models/{model}" + _V + "/generate", C.GENERATE),
    HttpRoute("model-generate-stream", ("POST",), "/v2/models/{model}" + _V + "/generate_stream", C.GENERATE,
              streaming=True),
    HttpRoute("model-config", ("GET",), "/v2/models/{model}" + _V + "/config", C.MODEL_CONFIG),
    HttpRoute("model-stats", ("GET",), "/v2/models/{model}" + _V + "/stats", C.STATISTICS),
    HttpRoute("model-trace-setting", ("GET", "POST"), "/v2/models/{model}/trace/setting", C.TRACE),
    HttpRoute("trace-setting", ("GET", "POST"), "/v2/trace/setting", C.TRACE),
    HttpRoute("logging", ("GET", "POST"), "/v2/logging", C.LOGGING),
    HttpRoute("repository-index", ("POST",), "/v2/repository/index", C.MODEL_REPOSITORY),
    HttpRoute("repository-load", ("POST",), "/v2/repository/models/{model}/load", C.MODEL_REPOSITORY),
    HttpRoute("repository-unload", ("POST",), "/v2/repository/models/{model}/unload", C.MODEL_REPOSITORY),
    *(route for kind in ("system", "cuda") for route in _shared_memory_routes(kind)),
    HttpRoute("metrics", ("GET",), "/metrics", C.METRICS),
    HttpRoute("sagemaker-ping", ("GET",), "/ping", C.SAGEMAKER),
    HttpRoute("sagemaker-invocations", ("POST",), "/invocations", C.SAGEMAKER),
    HttpRoute("sagemaker-models", ("GET", "POST"), "/models", C.SAGEMAKER),
    HttpRoute("vertex-predict", ("POST",), "/v1/models/{model}:predict", C.VERTEX),
)

GRPC_SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"

GRPC_METHODS: tuple[GrpcMethod, ...] = (
    GrpcMethod(GRPC_SERVICE, "ServerLive", C.HEALTH),
    GrpcMethod(GRPC_SERVICE, "ServerReady", C.HEALTH),
    GrpcMethod(GRPC_SERVICE, "ModelReady", C.METADATA, per_model=True),
    GrpcMethod(GRPC_SERVICE, "ServerMetadata", C.METADATA),
    GrpcMethod(GRPC_SERVICE, "ModelMetadata", C.METADATA, per_model=True),
    GrpcMethod(GRPC_SERVICE, "ModelInfer", C.INFERENCE, per_model=True),
    GrpcMethod(GRPC_SERVICE, "ModelStreamInfer", C.INFERENCE, client_streaming=True, server_streaming=True,
               per_model=True),
    GrpcMethod(GRPC_SERVICE, "ModelConfig", C.MODEL_CONFIG, per_model=True),
    GrpcMethod(GRPC_SERVICE, "ModelStatistics", C.STATISTICS, per_model=True),
    GrpcMethod(GRPC_SERVICE, "RepositoryIndex", C.MODEL_REPOSITORY),
    GrpcMethod(GRPC_SERVICE, "RepositoryModelLoad", C.MODEL_REPOSITORY, per_model=True),
    GrpcMethod(GRPC_SERVICE, "RepositoryModelUnload", C.MODEL_REPOSITORY, per_model=True),
    GrpcMethod(GRPC_SERVICE, "SystemSharedMemoryStatus", C.SHARED_MEMORY),
    GrpcMethod(GRPC_SERVICE, "SystemSharedMemoryRegister", C.SHARED_MEMORY),
    GrpcMethod(GRPC_SERVICE, "SystemSharedMemoryUnregister", C.SHARED_MEMORY),
    GrpcMethod(GRPC_SERVICE, "CudaSharedMemoryStatus", C.SHARED_MEMORY),
    GrpcMethod(GRPC_SERVICE, "CudaSharedMemoryRegister", C.SHARED_MEMORY),
    GrpcMethod(GRPC_SERVICE, "CudaSharedMemoryUnregister", C.SHARED_MEMORY),
    GrpcMethod(GRPC_SERVICE, "TraceSetting", C.TRACE),
    GrpcMethod(GRPC_SERVICE, "LogSettings", C.LOGGING),
    GrpcMethod(HEALTH_SERVICE, "Check", C.HEALTH),
    GrpcMethod(HEALTH_SERVICE, "Watch", C.HEALTH, server_streaming=True),
)


def classify_http(method: str, path: str) -> tuple[HttpRoute, re.Match[str]] | None:
    """The catalog entry for a raw request path (query stripped by the caller), or None."""
    for route in HTTP_ROUTES:
        m = route.match(path)
        if m and method.upper() in route.methods:
            return route, m
    return None


def classify_grpc(path: str) -> GrpcMethod | None:
    for method in GRPC_METHODS:
        if method.path == path:
            return method
    return None



# Triton's own API groups (--http-restricted-api / --grpc-restricted-protocol names) per
# category. Generate shares "inference" and the rest have no group, so they are not listed.
RESTRICTED_API_GROUP: dict[Category, str] = {
    Category.HEALTH: "health", Category.METADATA: "metadata", Category.INFERENCE: "inference",
    Category.SHARED_MEMORY: "shared-memory", Category.MODEL_CONFIG: "model-config",
    Category.MODEL_REPOSITORY: "model-repository", Category.STATISTICS: "statistics",
    Category.TRACE: "trace", Category.LOGGING: "logging",
}

# The server-metadata extensions Triton advertises, by the category that serves them: a
# gateway that denies a category does not advertise its extension.
EXTENSION_CATEGORY: dict[str, Category] = {
    "model_repository": Category.MODEL_REPOSITORY, "model_repository(unload_dependents)": Category.MODEL_REPOSITORY,
    "model_configuration": Category.MODEL_CONFIG, "system_shared_memory": Category.SHARED_MEMORY,
    "cuda_shared_memory": Category.SHARED_MEMORY, "statistics": Category.STATISTICS, "trace": Category.TRACE,
    "logging": Category.LOGGING, "generate": Category.GENERATE,
}
