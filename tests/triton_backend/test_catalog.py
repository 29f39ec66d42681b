"""The API catalog covers every RPC of the shipped Triton and classifies raw paths strictly."""

from __future__ import annotations

import pytest

from triton_backend import catalog, descriptors
from triton_backend.catalog import Category, Exposure


def test_every_rpc_in_the_descriptor_is_categorised() -> None:
    described = descriptors.service_methods()
    in_catalog = {(m.service, m.method): m for m in catalog.GRPC_METHODS}
    for service, methods in described.items():
        for name, client_streaming, server_streaming in methods:
            entry = in_catalog.get((service, name))
            assert entry is not None, f"{service}/{name} is not in the API catalog"
            assert (entry.client_streaming, entry.server_streaming) == (client_streaming, server_streaming)
    described_pairs = {(s, m[0]) for s, ms in described.items() for m in ms}
    assert set(in_catalog) == described_pairs, "catalog lists RPCs the descriptors do not have"


def test_protoset_is_loadable() -> None:
    from google.protobuf import descriptor_pb2, descriptor_pool

    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptors.protoset_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    assert pool.FindServiceByName("inference.GRPCInferenceService").methods_by_name["ModelInfer"]
    assert pool.FindServiceByName("grpc.health.v1.Health").methods_by_name["Check"]


def test_defaults_follow_the_design() -> None:
    allowed = {c for c, e in catalog.DEFAULT_EXPOSURE.items() if e is Exposure.ALLOW}
    assert allowed == {Category.HEALTH, Category.METADATA, Category.INFERENCE}
    for category in (Category.MODEL_REPOSITORY, Category.SHARED_MEMORY, Category.TRACE, Category.LOGGING,
                     Category.STATISTICS, Category.METRICS, Category.SAGEMAKER, Category.VERTEX):
        assert catalog.DEFAULT_EXPOSURE[category] is Exposure.DENY
    assert set(catalog.DEFAULT_EXPOSURE) == set(Category)


@pytest.mark.parametrize(("method", "path", "name", "model", "version"), [
    ("GET", "/v2/health/ready", "server-ready", None, None),
    ("GET", "/v2", "server-metadata", None, None),
    ("GET", "/v2/models/add_sub", "model-metadata", "add_sub", None),
    ("GET", "/v2/models/add_sub/versions/3/ready", "model-ready", "add_sub", "3"),
    ("POST", "/v2/models/add_sub/infer", "model-infer", "add_sub", None),
    ("POST", "/v2/models/m.v2-x/versions/12/infer", "model-infer", "m.v2-x", "12"),
    ("POST", "/v2/models/llm/generate_stream", "model-generate-stream", "llm", None),
    ("GET", "/v2/models/stats", "all-model-stats", None, None),
    ("POST", "/v2/repository/models/x/load", "repository-load", "x", None),
    ("POST", "/v2/systemsharedmemory/region/r0/register", "system-shm-register", None, None),
    ("POST", "/v2/cudasharedmemory/unregister", "cuda-shm-unregister", None, None),
    ("GET", "/v2/logging", "logging", None, None),
])
def test_classify_http(method: str, path: str, name: str, model: str | None, version: str | None) -> None:
    found = catalog.classify_http(method, path)
    assert found is not None
    route, match = found
    assert route.name == name
    assert match.groupdict().get("model") == model and match.groupdict().get("version") == version


@pytest.mark.parametrize("path", [
    "/v2/repository/%6dodels/x/load", "//v2/health/ready", "/v2/models/../repository/index",
    "/v2/models/add_sub/infer/", "/v2/models/.hidden/infer", "/v2/models/a%2Fb/infer", "/v2/models/a/b/infer",
    "/v2/health/ready?x=1", "/V2/health/ready", "/v2/models/add_sub/versions/x/infer",
])
def test_path_tricks_match_nothing(path: str) -> None:
    assert catalog.classify_http("GET", path) is None
    assert catalog.classify_http("POST", path) is None


def test_method_must_match() -> None:
    assert catalog.classify_http("DELETE", "/v2/health/ready") is None
    assert catalog.classify_http("GET", "/v2/models/add_sub/infer") is None


def test_grpc_classification() -> None:
    assert catalog.classify_grpc("/inference.GRPCInferenceService/ModelInfer").category is Category.INFERENCE
    assert catalog.classify_grpc("/inference.GRPCInferenceService/RepositoryModelLoad").default is Exposure.DENY
    assert catalog.classify_grpc("/inference.GRPCInferenceService/Nope") is None


def test_one_expander_for_the_template_language() -> None:
    """The catalog's regexes, the compiled routes and concrete paths all expand templates through
    catalog.expand_template: literal text escaped (or not), each placeholder replaced."""
    template = "/v2/models/{model}[/versions/{version}]/infer"
    assert catalog.expand_template(template, model="m", version="/versions/3", literal=str) == \
        "/v2/models/m/versions/3/infer"
    assert catalog.expand_template(template, model="m", version="", literal=str) == "/v2/models/m/infer"
    assert catalog.expand_template(template, model="M", versioned_model="MV") == "/v2/models/MV/infer"
    assert catalog.expand_template("/a.b/{region}", model="", region="R") == r"/a\.b/R"
    with pytest.raises(ValueError, match="region"):
        catalog.expand_template("/v2/x/{region}", model="m")
    with pytest.raises(ValueError, match="versions"):
        catalog.expand_template(template, model="m")
