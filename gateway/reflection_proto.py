"""The gRPC server-reflection schema (grpc/reflection/v1/reflection.proto), described here
so the gateway needs no extra package; v1alpha is the same messages under another package."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def reflection_file(package: str) -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name=f"grpc/reflection/{package.rsplit('.', 1)[-1]}/reflection.proto",
                                           package=package, syntax="proto3")
    p = f".{package}."

    def msg(name: str, fields: list[tuple[str, int, int, str | None, int | None]],
            oneofs: tuple[str, ...] = ()) -> None:
        m = f.message_type.add(name=name)
        for o in oneofs:
            m.oneof_decl.add(name=o)
        for fname, number, ftype, type_name, oneof in fields:
            label = F.LABEL_REPEATED if fname in _REPEATED else F.LABEL_OPTIONAL
            fd = m.field.add(name=fname, number=number, type=ftype, label=label, json_name=_camel(fname))
            if type_name:
                fd.type_name = p + type_name
            if oneof is not None:
                fd.oneof_index = oneof

    msg("ServerReflectionRequest", [
        ("host", 1, F.TYPE_STRING, None, None),
        ("file_by_filename", 3, F.TYPE_STRING, None, 0),
        ("file_containing_symbol", 4, F.TYPE_STRING, None, 0),
        ("file_containing_extension", 5, F.TYPE_MESSAGE, "ExtensionRequest", 0),
        ("all_extension_numbers_of_type", 6, F.TYPE_STRING, None, 0),
        ("list_services", 7, F.TYPE_STRING, None, 0),
    ], ("message_request",))
    msg("ExtensionRequest", [("containing_type", 1, F.TYPE_STRING, None, None),
                             ("extension_number", 2, F.TYPE_INT32, None, None)])
    msg("ServerReflectionResponse", [
        ("valid_host", 1, F.TYPE_STRING, None, None),
        ("original_request", 2, F.TYPE_MESSAGE, "ServerReflectionRequest", None),
        ("file_descriptor_response", 4, F.TYPE_MESSAGE, "FileDescriptorResponse", 0),
        ("all_extension_numbers_response", 5, F.TYPE_MESSAGE, "ExtensionNumberResponse", 0),
        ("list_services_response", 6, F.TYPE_MESSAGE, "ListServiceResponse", 0),
        ("error_response", 7, F.TYPE_MESSAGE, "ErrorResponse", 0),
    ], ("message_response",))
    msg("FileDescriptorResponse", [("file_descriptor_proto", 1, F.TYPE_BYTES, None, None)])
    msg("ExtensionNumberResponse", [("base_type_name", 1, F.TYPE_STRING, None, None),
                                    ("extension_number", 2, F.TYPE_INT32, None, None)])
    msg("ListServiceResponse", [("service", 1, F.TYPE_MESSAGE, "ServiceResponse", None)])
    msg("ServiceResponse", [("name", 1, F.TYPE_STRING, None, None)])
    msg("ErrorResponse", [("error_code", 1, F.TYPE_INT32, None, None), ("error_message", 2, F.TYPE_STRING, None, None)])
    svc = f.service.add(name="ServerReflection")
    svc.method.add(name="ServerReflectionInfo", input_type=p + "ServerReflectionRequest",
                   output_type=p + "ServerReflectionResponse", client_streaming=True, server_streaming=True)
    return f


_REPEATED = {"file_descriptor_proto", "service"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(r.capitalize() for r in rest)


V1 = reflection_file("grpc.reflection.v1")
V1ALPHA = reflection_file("grpc.reflection.v1alpha")
_pool = descriptor_pool.DescriptorPool()
_pool.Add(V1)
Request = message_factory.GetMessageClass(_pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest"))
Response = message_factory.GetMessageClass(_pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse"))
ServiceResponse = message_factory.GetMessageClass(_pool.FindMessageTypeByName("grpc.reflection.v1.ServiceResponse"))
