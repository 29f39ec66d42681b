"""gRPC server reflection (v1 and v1alpha) answered from Triton's descriptors, so
``grpcurl list`` and ``describe`` work through the gateway without touching Triton."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from triton_backend import descriptors

from . import reflection_proto

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"


def _reflection_files() -> list[descriptor_pb2.FileDescriptorProto]:
    return [reflection_proto.V1, reflection_proto.V1ALPHA]


class ReflectionIndex:
    def __init__(self) -> None:
        files = list(descriptors.file_descriptor_set().file) + _reflection_files()
        self.pool = descriptor_pool.DescriptorPool()
        self.serialized: dict[str, bytes] = {}
        self.protos: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        for f in files:
            self.pool.Add(f)
            self.serialized[f.name] = f.SerializeToString()
            self.protos[f.name] = f
        self.services = sorted(f"{f.package}.{s.name}" for f in files for s in f.service)

    def with_dependencies(self, name: str) -> list[bytes]:
        out: list[str] = []

        def visit(n: str) -> None:
            if n in out or n not in self.protos:
                return
            out.append(n)
            for dep in self.protos[n].dependency:
                visit(dep)

        visit(name)
        return [self.serialized[n] for n in out]

    def _file_of(self, symbol: str):  # type: ignore[no-untyped-def]
        try:
            return self.pool.FindFileContainingSymbol(symbol)
        except KeyError:
            # Methods ("pkg.Service.Method") are looked up through their service.
            parent = symbol.rsplit(".", 1)[0]
            service = self.pool.FindServiceByName(parent)
            if symbol.rsplit(".", 1)[1] not in service.methods_by_name:
                raise
            return service.file

    def answer(self, req: Any) -> Any:
        resp = reflection_proto.Response(valid_host=req.host, original_request=req)
        kind = req.WhichOneof("message_request")
        try:
            if kind == "list_services":
                resp.list_services_response.service.extend(
                    reflection_proto.ServiceResponse(name=s) for s in self.services)
            elif kind == "file_by_filename":
                files = self.with_dependencies(req.file_by_filename)
                if not files:
                    raise KeyError(req.file_by_filename)
                resp.file_descriptor_response.file_descriptor_proto.extend(files)
            elif kind == "file_containing_symbol":
                fd = self._file_of(req.file_containing_symbol)
                resp.file_descriptor_response.file_descriptor_proto.extend(self.with_dependencies(fd.name))
            else:
                raise KeyError(kind)
        except KeyError:
            resp.error_response.error_code = grpc.StatusCode.NOT_FOUND.value[0]
            resp.error_response.error_message = "not found"
        return resp


def handlers(index: ReflectionIndex) -> list[grpc.GenericRpcHandler]:
    async def info(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for req in requests:
            yield index.answer(req)

    out = []
    for service in (V1, V1ALPHA):
        handler = grpc.stream_stream_rpc_method_handler(
            info, request_deserializer=reflection_proto.Request.FromString,
            response_serializer=reflection_proto.Response.SerializeToString)
        out.append(grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}))
    return out


def reflection_server() -> grpc.aio.Server:
    """A gRPC server (not started) answering reflection for Triton's services."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(handlers(ReflectionIndex()))
    return server
