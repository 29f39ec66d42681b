"""Protobuf descriptors for Triton's gRPC API, built from the ``tritonclient`` package.

The gateway serves gRPC reflection from these, and the client CLI hands grpcurl a
protoset when a server offers no reflection. ``grpc.health.v1`` is described here
directly: tritonclient does not ship it, and its schema is fixed by the gRPC project.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

HEALTH_PROTO = "grpc/health/v1/health.proto"


def health_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name=HEALTH_PROTO, package="grpc.health.v1", syntax="proto3")
    req = f.message_type.add(name="HealthCheckRequest")
    req.field.add(name="service", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, json_name="service")
    resp = f.message_type.add(name="HealthCheckResponse")
    status = resp.enum_type.add(name="ServingStatus")
    for i, name in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        status.value.add(name=name, number=i)
    resp.field.add(name="status", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_ENUM,
                   type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
                   label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, json_name="status")
    svc = f.service.add(name="Health")
    svc.method.add(name="Check", input_type=".grpc.health.v1.HealthCheckRequest",
                   output_type=".grpc.health.v1.HealthCheckResponse")
    svc.method.add(name="Watch", input_type=".grpc.health.v1.HealthCheckRequest",
                   output_type=".grpc.health.v1.HealthCheckResponse", server_streaming=True)
    return f


def triton_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """model_config.proto then grpc_service.proto (dependency order), from tritonclient."""
    try:
        from tritonclient.grpc import model_config_pb2, service_pb2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("tritonclient[grpc] is needed for Triton's gRPC descriptors "
                           "(pip install 'ratls-gateway[server]')") from exc
    out = []
    for module in (model_config_pb2, service_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        out.append(proto)
    return out


def file_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    for f in (*triton_files(), health_file()):
        fds.file.append(f)
    return fds


def protoset_bytes() -> bytes:
    """Serialized FileDescriptorSet, as ``grpcurl -protoset`` reads it."""
    return file_descriptor_set().SerializeToString(deterministic=True)


def service_methods() -> dict[str, list[tuple[str, bool, bool]]]:
    """{service full name: [(method, client_streaming, server_streaming)]} from the descriptors."""
    out: dict[str, list[tuple[str, bool, bool]]] = {}
    for f in file_descriptor_set().file:
        for svc in f.service:
            full = f"{f.package}.{svc.name}" if f.package else svc.name
            out[full] = [(m.name, m.client_streaming, m.server_streaming) for m in svc.method]
    return out
