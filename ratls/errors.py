"""Typed errors. Every error carries a message that says what was wrong and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .appraisal import Appraisal


class RatlsError(Exception):
    """Base class for every error raised by this project."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class EvidenceError(RatlsError):
    """Evidence (a report, a certificate, a CMW) is malformed or cannot be authenticated."""


class UnreadableEvidence(EvidenceError):
    """Evidence that cannot be read at all: not the format it is given as, or a layout or version
    this verifier does not read. That is no answer from the hardware: for evidence the user gave
    (``ratls evidence verify``) it is bad input (exit 2); inside a certificate or fresh evidence a
    server presents, the pipeline still records it as a failed ``evidence.parse`` check."""


class PolicyViolation(RatlsError):
    """Authentic evidence that the policy does not accept. ``appraisal``, when there is one, is
    the full result with every check, for callers that show why (``ratls pin``, ``ratls curl``)."""

    def __init__(self, message: str, *, hint: str | None = None, appraisal: Appraisal | None = None) -> None:
        super().__init__(message, hint=hint)
        self.appraisal = appraisal


class PolicyError(RatlsError):
    """A policy file that cannot be loaded: wrong syntax, unknown key, wrong type."""


class ConfigError(RatlsError):
    """A configuration problem on the operator's side (missing file, bad option, missing binary)."""


class UpstreamUnavailable(ConfigError):
    """A server the gateway fronts did not answer in time: a start-order problem that a later
    attempt may not have (unlike a wrong configuration or a missing TEE)."""


class CollectionError(RatlsError):
    """The platform could not produce evidence (no device, kernel refused, concurrent writer)."""


class UsageError(RatlsError):
    """The caller used the CLI or API wrongly."""
