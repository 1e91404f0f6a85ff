"""The router's upstreams: fixed URLs, and planned llama-servers started on first use and swapped when the
planner says two of them do not fit on the rig side by side (what llama-swap does, with the plan deciding)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from rigbench import hardware
from rigbench import model as model_mod
from rigbench.errors import DoesNotFitError
from rigbench.plan import memory
from rigbench.route.config import PlannedUpstream, RouteConfig, RouteConfigError, Upstream

log = logging.getLogger("rigbench.route")
EMBEDDED = "embedded"   # `model: embedded` = the packaged small model (rigbench.packaged)


def v1_base(url: str) -> str:
    return url.rstrip("/").removesuffix("/v1")


@dataclass
class Managed:
    name: str
    cfg: Upstream
    plan: memory.Plan | None = None
    launch: object | None = None       # engines.process.LaunchSpec of a planned upstream
    server: object | None = None       # engines.process.Server while it runs
    base: str | None = None            # http://host:port (no /v1) while reachable
    active: int = 0                    # requests in flight
    last_used: float = 0.0
    leaving: bool = False              # chosen to be swapped out: new requests wait for the swap
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def planned(self) -> bool:
        return self.cfg.plan is not None


def plan_upstream(name: str, p: PlannedUpstream, rig: hardware.Rig):
    """(plan, launch spec) of a planned upstream; raises DoesNotFitError when it does not fit alone."""
    from rigbench.engines import llamacpp
    from rigbench.engines.options import parse_llama_args

    weights = p.weights or p.model
    if p.model == EMBEDDED:
        from rigbench import packaged
        weights = str(packaged.qwen_coder_05b())
    if not Path(weights).is_file():
        raise RouteConfigError(f"upstream {name}: {weights!r} is not a .gguf file; give `weights: PATH` "
                               f"(a planned upstream runs llama-server)")
    spec = model_mod.load(weights if p.model == EMBEDDED else p.model)
    options = parse_llama_args(["-m", weights, *p.args])
    plan = memory.plan(spec, rig, options)
    if not plan.fits:
        raise DoesNotFitError(f"upstream {name} does not fit on {rig.name} even alone: {plan.reason}; "
                              f"cheapest change: {plan.suggestion}")
    if options.ctx is None:
        options.ctx = plan.context
    launch = llamacpp.launch_spec(options, llamacpp.find_binary(p.server_bin), gpu=rig.has_gpu, alias=name)
    return plan, launch


class Upstreams:
    def __init__(self, cfg: RouteConfig, log_dir: Path = Path(".rigbench/logs")):
        self.cfg = cfg
        self.log_dir = log_dir
        self.up = {n: Managed(n, u) for n, u in cfg.upstreams.items()}
        self.rig = None
        self._lock: asyncio.Lock | None = None
        for m in self.up.values():
            m.idle.set()
            if m.cfg.url:
                m.base = v1_base(m.cfg.url)
        planned = [m for m in self.up.values() if m.planned]
        if planned:
            self.rig = hardware.load(cfg.rig or "detect")
            for m in planned:
                m.plan, m.launch = plan_upstream(m.name, m.cfg.plan, self.rig)

    def fit_note(self) -> list[str]:
        """One line per pair of planned upstreams that cannot run side by side (they will be swapped)."""
        planned = [m for m in self.up.values() if m.planned]
        notes = []
        for i, a in enumerate(planned):
            for b in planned[i + 1:]:
                ok, why = memory.fits_together([a.plan, b.plan], self.rig)
                if not ok:
                    notes.append(f"{a.name} and {b.name} do not fit side by side ({why}): swapped on demand")
        return notes

    async def acquire(self, name: str) -> tuple[Managed, str | None]:
        """The upstream, reachable and counted in flight, and a note when it had to be started or swapped in."""
        m = self.up[name]
        if m.base is not None and not m.leaving:   # a URL, or a planned server that is up and not being swapped out
            m.active += 1
            m.idle.clear()
            m.last_used = time.monotonic()
            return m, None
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            note = None
            if m.server is None:
                note = await self._bring_up(m)
            m.active += 1
            m.idle.clear()
            m.last_used = time.monotonic()
            return m, note

    def release(self, m: Managed) -> None:
        m.active -= 1
        if m.active <= 0:
            m.active = 0
            m.idle.set()

    async def _bring_up(self, m: Managed) -> str:
        from rigbench.engines import llamacpp

        running = sorted((x for x in self.up.values() if x.planned and x.server is not None),
                         key=lambda x: x.last_used)
        stopped = []
        while running and not memory.fits_together([x.plan for x in running] + [m.plan], self.rig)[0]:
            victim = running.pop(0)   # least recently used first
            victim.leaving = True
            why = memory.fits_together([victim.plan, m.plan], self.rig)[1]
            log.warning("route: swap: stopping %s for %s (%s); waiting for its %d requests in flight",
                        victim.name, m.name, why, victim.active)
            await victim.idle.wait()
            await asyncio.to_thread(self._stop, victim)
            stopped.append(victim.name)
        t0 = time.monotonic()
        log_path = self.log_dir / f"route-{m.name}.log"
        m.server = await asyncio.to_thread(llamacpp.start, m.launch, log_path, m.cfg.plan.start_timeout_s)
        m.base = m.server.url
        took = time.monotonic() - t0
        note = (f"swapped: stopped {', '.join(stopped)}, started {m.name} in {took:.1f} s" if stopped
                else f"started {m.name} in {took:.1f} s")
        log.warning("route: %s (log %s)", note, log_path)
        return note

    @staticmethod
    def _stop(m: Managed) -> None:
        if m.server is not None:
            m.server.stop()
        m.server, m.base, m.leaving = None, None, False

    def running(self) -> list[str]:
        return [m.name for m in self.up.values() if m.base is not None]

    def close(self) -> None:
        for m in self.up.values():
            if m.planned:
                self._stop(m)
