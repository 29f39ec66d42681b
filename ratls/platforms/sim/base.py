"""What both simulators share: simulated, built from the state directory, ``ratls sim`` commands."""

from __future__ import annotations

from typing import Any

from ...registry import PlatformBase, PlatformSettings
from .commands import add_sim_commands


class SimulatorBase(PlatformBase):
    simulated = True
    commands = add_sim_commands

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> Any:
        return cls(state_dir=settings.sim_state_dir)  # type: ignore[call-arg]
