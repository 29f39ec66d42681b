"""ratls: RA-TLS certificates carrying hardware attestation evidence (profile ratls/1)."""

__version__ = "0.1.0"
