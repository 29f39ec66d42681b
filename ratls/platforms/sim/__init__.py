"""The simulated platform: real SEV-SNP-format reports signed by a locally generated
ARK -> ASK -> VCEK chain (RSA-4096 PSS and ECDSA P-384, like AMD's), so the real SNP
verifier runs unchanged. Only ever accepted when a policy allows simulation *and* pins
this chain's root. Everything it produces is labelled SIMULATED.
"""
