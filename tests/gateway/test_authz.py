"""The ext_authz service's refusals are JSON whatever the reason says (it can quote what the
client sent, such as a model name with quotes or backslashes)."""

from __future__ import annotations

import asyncio
import json

import pytest
from envoy.service.auth.v3 import external_auth_pb2

import gateway.authz
from filters.auth import Decision
from gateway.authz import AuthorizationService, denied_body


@pytest.mark.parametrize("reason", ['not allowed to call model \'a"b\'', "not allowed to call model 'c:\\d'",
                                    "line\nbreak", "plain"])
def test_denied_body_is_json_for_any_reason(reason: str) -> None:
    for status, kind in ((401, "unauthenticated"), (403, "forbidden")):
        body = denied_body(Decision(False, status, None, reason))
        assert body.endswith("\n")
        assert json.loads(body) == {"error": f"{kind}: {reason}"}


def test_check_refuses_with_a_json_body(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = 'not allowed to call model \'x"}, "admin": true, "y":"\''
    monkeypatch.setattr(gateway.authz, "decide", lambda *args: Decision(False, 403, "api-key:k", reason))
    service = AuthorizationService(policy=None)  # type: ignore[arg-type]
    answer = asyncio.run(service.Check(external_auth_pb2.CheckRequest(), None))  # type: ignore[arg-type]
    assert answer.denied_response.status.code == 403
    assert json.loads(answer.denied_response.body) == {"error": f"forbidden: {reason}"}
    assert service.denied == 1
