"""Aggregated Discovery Service (state of the world) for the gateway's Envoy."""
