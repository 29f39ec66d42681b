"""The typed error tree: every error is a RatlsError with a message and a hint; a policy
violation carries the appraisal that explains it as a declared attribute."""

from __future__ import annotations

from ratls.appraisal import Appraisal, failed
from ratls.client.fetch import Target
from ratls.client.verify import verify_presented
from ratls.errors import PolicyViolation, RatlsError
from ratls.policy import Policy


def test_policy_violation_takes_its_appraisal_as_a_keyword() -> None:
    appraisal = Appraisal(platform="sev-snp", checks=[failed("policy.snp.measurement", "not allowed")])
    error = PolicyViolation("refused", hint="check the policy", appraisal=appraisal)
    assert error.appraisal is appraisal
    assert isinstance(error, RatlsError) and error.message == "refused" and error.hint == "check the policy"
    assert PolicyViolation("refused").appraisal is None


def test_verify_presented_raises_with_the_appraisal() -> None:
    try:
        verify_presented(Target("gw.invalid", 8443), b"not a certificate", Policy())
    except PolicyViolation as exc:
        assert exc.appraisal is not None
        assert [c.name for c in exc.appraisal.failures] == ["certificate.parse"]
    else:
        raise AssertionError("garbage was accepted")
