"""The simulator's configfs-tsm tree, for tests (it lives with the simulator)."""

from ..platforms.sim.fake_tsm import FakeTsm, Responder, sim_snp_responder

__all__ = ["FakeTsm", "Responder", "sim_snp_responder"]
