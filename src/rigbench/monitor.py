"""Watching the machine while rigbench measures: who else used the CPU and the GPU, load, steal, memory
pressure, GPU clocks and throttling. A `Sampler` thread takes a `Sample` every half second; `summarize` turns
the samples of one figure's time window into a `MachineSummary` whose `disturbed` list says why that figure
should not be trusted ("disturbed?")."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol
from urllib.parse import urlparse

import psutil
from pydantic import BaseModel


class Limits(BaseModel):
    """When a figure is marked "disturbed?"."""
    cpu_share: float = 0.25        # others' mean share of all CPUs over the figure's window (steal included)
    gpu_share: float = 0.25        # others' mean SM utilisation of a GPU over the window
    throttle_share: float = 0.2    # share of a window's samples in which a GPU slowed for heat or power brake
    min_mem_available: float = 0.05  # the host's available memory, as a share of all of it
    ratio: float = 2.0             # measured / predicted beyond this, either way


# NVML clock event (throttle) reasons, bit -> name: https://docs.nvidia.com/deploy/nvml-api/group__nvmlClocksEventReasons.html
THROTTLE_BITS = {0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
                 0x10: "sync_boost", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake",
                 0x100: "display_clocks"}
# slowdowns a neighbour or the room causes; a GPU held at its power cap under load is the rig itself
DISTURBING_THROTTLE = {"hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake"}


class GpuProcess(BaseModel):
    pid: int
    mem_mib: float = 0.0
    sm_util: float | None = None   # percent of the GPU, from NVML's per-process samples where it gives them


class GpuReading(BaseModel):
    index: int
    name: str = ""
    util: float = 0.0              # percent, the whole device
    mem_used_mib: float = 0.0
    mem_total_mib: float = 0.0
    sm_clock_mhz: float | None = None
    sm_clock_max_mhz: float | None = None
    throttle: list[str] = []
    foreign: list[GpuProcess] = []  # compute processes that are not the measured ones
    foreign_util: float | None = None  # percent of the device the foreign processes used


class GpuReader(Protocol):
    def read(self, own: set[int]) -> list[GpuReading]: ...


class NvmlReader:
    """NVIDIA GPUs through NVML (nvidia-ml-py). `NvmlReader.open()` is None where there is no driver or GPU."""

    def __init__(self, nvml, handles):
        self.nvml, self.handles = nvml, handles
        self._seen: dict[int, int] = {}

    @classmethod
    def open(cls) -> NvmlReader | None:
        try:
            import pynvml as nvml
            nvml.nvmlInit()
            n = nvml.nvmlDeviceGetCount()
            return cls(nvml, [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]) if n else None
        except Exception:   # no library, no driver, no device: nothing to watch
            return None

    def _try(self, fn, *args, default=None):
        try:
            return fn(*args)
        except Exception:
            return default

    def read(self, own: set[int]) -> list[GpuReading]:
        nv, out = self.nvml, []
        for i, h in enumerate(self.handles):
            util = self._try(nv.nvmlDeviceGetUtilizationRates, h)
            mem = self._try(nv.nvmlDeviceGetMemoryInfo, h)
            reasons_fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                nv.nvmlDeviceGetCurrentClocksThrottleReasons
            bits = self._try(reasons_fn, h, default=0) or 0
            procs = self._try(nv.nvmlDeviceGetComputeRunningProcesses, h, default=[]) or []
            per_pid: dict[int, float] = {}
            samples = self._try(nv.nvmlDeviceGetProcessUtilization, h, self._seen.get(i, 0), default=None)
            if samples:
                self._seen[i] = max(s.timeStamp for s in samples)
                for s in samples:
                    per_pid[s.pid] = max(per_pid.get(s.pid, 0.0), float(s.smUtil))
            foreign = [GpuProcess(pid=p.pid, mem_mib=(p.usedGpuMemory or 0) / 2**20, sm_util=per_pid.get(p.pid))
                       for p in procs if p.pid not in own]
            dev_util = float(util.gpu) if util else 0.0
            if not foreign:
                f_util = 0.0
            elif samples is not None:
                f_util = sum(per_pid.get(p.pid, 0.0) for p in foreign)
            else:   # no per-process samples: others were there, so the device's use cannot be split
                f_util = dev_util
            name = self._try(nv.nvmlDeviceGetName, h, default="")
            out.append(GpuReading(
                index=i, name=name.decode() if isinstance(name, bytes) else name, util=dev_util,
                mem_used_mib=mem.used / 2**20 if mem else 0.0, mem_total_mib=mem.total / 2**20 if mem else 0.0,
                sm_clock_mhz=self._try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
                sm_clock_max_mhz=self._try(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
                throttle=[n for b, n in THROTTLE_BITS.items() if bits & b], foreign=foreign,
                foreign_util=min(100.0, f_util)))
        return out


class Sample(BaseModel):
    t: float                       # wall clock (epoch seconds) at the end of the interval
    dt: float                      # seconds the sample covers
    cpu: float                     # share of all CPUs busy (0-1), steal included
    own_cpu: float                 # share of all CPUs used by the measured processes
    others_cpu: float              # cpu - own_cpu
    steal: float                   # share of all CPUs taken by the hypervisor
    load_per_cpu: float            # 1-minute load average / CPUs
    mem_available: float           # share of memory available
    swap_used: float               # share of swap used
    psi_mem: float | None = None   # Linux PSI: % of time some task waited on memory (avg10)
    gpus: list[GpuReading] = []


def _psi_memory() -> float | None:
    try:
        with open("/proc/pressure/memory") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def _memory() -> tuple[float, float]:
    """(share of memory available, share of swap used): one read of /proc/meminfo on Linux (psutil's
    swap_memory reads /proc/vmstat as well), psutil elsewhere."""
    if _PROC:
        try:
            kb = {}
            with open("/proc/meminfo", "rb") as f:
                for line in f:
                    k, _, v = line.partition(b":")
                    if k in (b"MemTotal", b"MemAvailable", b"SwapTotal", b"SwapFree"):
                        kb[k] = int(v.split()[0])
            swap = kb[b"SwapTotal"]
            return kb[b"MemAvailable"] / kb[b"MemTotal"], (swap - kb[b"SwapFree"]) / swap if swap else 0.0
        except (OSError, KeyError, ValueError, ZeroDivisionError):
            pass
    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    return vm.available / vm.total, sw.percent / 100


def listener_pid(url: str | None) -> int | None:
    """The local process listening on `url`'s port (a server rigbench did not start is still measured)."""
    if not url:
        return None
    u = urlparse(url if "://" in url else "http://" + url)
    if u.hostname not in ("127.0.0.1", "localhost", "0.0.0.0", "::1"):
        return None
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return c.pid
    except (psutil.AccessDenied, OSError):
        pass
    return None


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = os.path.isdir("/proc/self")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and of its children it reaped) from Linux's /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        rest = data[data.rindex(b")") + 2:].split()   # after `pid (comm) `: state, ppid, ..., utime at index 11
        return int(rest[1]), sum(int(x) for x in rest[11:15]) / _TICK   # utime, stime, cutime, cstime
    except (OSError, ValueError, IndexError):
        return None


class ProcessTree:
    """Which processes descend from the measured ones. On Linux a map pid -> parent is kept up to date by
    listing /proc and reading only the new processes' stat file (a full scan of every process, as
    psutil.Process.children does, costs milliseconds on a busy machine, every half second); elsewhere psutil."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def descendants(self, roots: set[int]) -> set[int]:
        if not _PROC:
            return self._psutil(roots)
        pids = {int(d) for d in os.listdir("/proc") if d.isdigit()}
        for gone in self.parent.keys() - pids:
            del self.parent[gone]
        for pid in pids - self.parent.keys():
            if (st := _proc_stat(pid)) is not None:
                self.parent[pid] = st[0]
        kids: dict[int, list[int]] = {}
        for pid, pp in self.parent.items():
            kids.setdefault(pp, []).append(pid)
        out, todo = set(), [r for r in roots if r in self.parent]
        while todo:
            p = todo.pop()
            if p not in out:
                out.add(p)
                todo.extend(kids.get(p, ()))
        return out

    @staticmethod
    def _psutil(roots: set[int]) -> set[int]:
        pids = set()
        for root in roots:
            try:
                p = psutil.Process(root)
                pids.add(root)
                pids.update(c.pid for c in p.children(recursive=True))
            except psutil.Error:
                continue
        return pids


def _cpu_seconds(pid: int, procs: dict[int, psutil.Process]) -> float | None:
    """CPU seconds a process used, with those of the children it waited for (whose own samples may have
    missed them: a compiler that lived a quarter of a second)."""
    if _PROC:
        st = _proc_stat(pid)
        return st[1] if st else None
    try:
        p = procs.get(pid) or procs.setdefault(pid, psutil.Process(pid))
        ct = p.cpu_times()
    except psutil.Error:
        return None
    return ct.user + ct.system + getattr(ct, "children_user", 0.0) + getattr(ct, "children_system", 0.0)


class Sampler:
    """A background thread sampling the machine every `interval` seconds. The measured processes are this one
    and its descendants, plus `pids` (a server found on the URL's port) and theirs."""

    def __init__(self, interval: float = 0.5, pids: Iterable[int] = (), gpu: GpuReader | None | bool = True,
                 limits: Limits | None = None):
        self.interval = interval
        self.roots = {os.getpid(), *pids}
        self.gpu = NvmlReader.open() if gpu is True else (gpu or None)
        self.limits = limits or Limits()
        self.samples: list[Sample] = []
        self.ncpu = psutil.cpu_count() or 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tree = ProcessTree()
        self._procs: dict[int, psutil.Process] = {}
        self._proc_cpu: dict[int, float] = {}
        self._last: tuple[float, object] | None = None
        self.cost_s = 0.0              # CPU seconds the sampler itself spent (thread time)

    def own(self) -> set[int]:
        return self._tree.descendants(self.roots)

    def _own_cpu_seconds(self, pids: set[int]) -> float:
        """CPU seconds the measured processes used since the last call. A process first seen after the first
        sample was born in the interval: all of its CPU counts. One that ended had its CPU counted up to its
        last sample; its parent's count of reaped children then grows by all of it, so that part is taken
        off again."""
        used, counted = 0.0, 0.0
        for pid in pids:
            total = _cpu_seconds(pid, self._procs)
            if total is None:
                continue
            if pid in self._proc_cpu:
                used += max(0.0, total - self._proc_cpu[pid])
            elif self._last is not None:
                used += total
            self._proc_cpu[pid] = total
        for gone in set(self._proc_cpu) - pids:
            self._procs.pop(gone, None)
            counted += self._proc_cpu.pop(gone)
        return max(0.0, used - counted)

    def sample(self) -> Sample | None:
        """Take one sample (the first call only sets the baseline and returns None)."""
        t0 = time.thread_time()
        now = time.time()
        ct = psutil.cpu_times()
        own_pids = self.own()
        own_s = self._own_cpu_seconds(own_pids)
        last, self._last = self._last, (now, ct)
        if last is None:
            self.cost_s += time.thread_time() - t0
            return None
        t_prev, ct_prev = last
        d = {k: getattr(ct, k) - getattr(ct_prev, k) for k in ct._fields}
        total = sum(d.values()) or 1e-9
        idle = d.get("idle", 0.0) + d.get("iowait", 0.0)
        cpu = max(0.0, min(1.0, (total - idle) / total))
        wall = max(1e-6, now - t_prev)
        own = min(cpu, own_s / (wall * self.ncpu))
        mem_available, swap_used = _memory()
        s = Sample(t=now, dt=wall, cpu=round(cpu, 4), own_cpu=round(own, 4), others_cpu=round(max(0.0, cpu - own), 4),
                   steal=round(d.get("steal", 0.0) / total, 4), load_per_cpu=round(os.getloadavg()[0] / self.ncpu, 3),
                   mem_available=round(mem_available, 4), swap_used=round(swap_used, 4),
                   psi_mem=_psi_memory(), gpus=self.gpu.read(own_pids) if self.gpu else [])
        self.samples.append(s)
        self.cost_s += time.thread_time() - t0
        return s

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
        self.sample()   # the tail of the last interval

    def start(self) -> Sampler:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="rigbench-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def take(self, since: int = 0) -> list[Sample]:
        return self.samples[since:]

    def window(self, start: float, end: float) -> MachineSummary:
        return summarize(self.samples, start, end, self.limits)


@contextmanager
def watching(url: str | None = None, interval: float = 0.5, gpu: GpuReader | None | bool = True,
             limits: Limits | None = None) -> Iterator[Sampler]:
    pid = listener_pid(url)
    s = Sampler(interval, [pid] if pid else [], gpu, limits).start()
    try:
        yield s
    finally:
        s.stop()


class GpuSummary(BaseModel):
    index: int
    name: str = ""
    util: float = 0.0                 # mean percent
    others_util: float = 0.0          # mean percent used by foreign processes
    foreign_pids: list[int] = []
    foreign_mem_mib: float = 0.0      # the most they held at once
    sm_clock_mhz: float | None = None  # mean
    sm_clock_max_mhz: float | None = None
    throttled: dict[str, float] = {}  # reason -> share of samples


class MachineSummary(BaseModel):
    samples: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    own_cpu: float = 0.0
    others_cpu: float = 0.0           # mean share of all CPUs
    others_cpu_max: float = 0.0
    steal: float = 0.0
    load_per_cpu_max: float = 0.0
    mem_available_min: float = 1.0
    swap_used_max: float = 0.0
    psi_mem_max: float | None = None
    gpus: list[GpuSummary] = []
    disturbed: list[str] = []         # why a figure measured in this window should not be trusted


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def summarize(samples: list[Sample], start: float, end: float, limits: Limits | None = None) -> MachineSummary:
    """The samples whose interval overlaps [start, end], summarised, with the marks the limits give."""
    lim = limits or Limits()
    w = [s for s in samples if s.t > start and s.t - s.dt < end]
    if not w:
        return MachineSummary()
    m = MachineSummary(samples=len(w), seconds=round(end - start, 3), cpu=round(_mean([s.cpu for s in w]), 4),
                       own_cpu=round(_mean([s.own_cpu for s in w]), 4),
                       others_cpu=round(_mean([s.others_cpu for s in w]), 4),
                       others_cpu_max=max(s.others_cpu for s in w), steal=round(_mean([s.steal for s in w]), 4),
                       load_per_cpu_max=max(s.load_per_cpu for s in w),
                       mem_available_min=min(s.mem_available for s in w), swap_used_max=max(s.swap_used for s in w))
    psi = [s.psi_mem for s in w if s.psi_mem is not None]
    m.psi_mem_max = max(psi) if psi else None
    by_gpu: dict[int, list[GpuReading]] = {}
    for s in w:
        for g in s.gpus:
            by_gpu.setdefault(g.index, []).append(g)
    for i, rs in sorted(by_gpu.items()):
        reasons: dict[str, float] = {}
        for r in rs:
            for t in r.throttle:
                reasons[t] = reasons.get(t, 0.0) + 1 / len(rs)
        clocks = [r.sm_clock_mhz for r in rs if r.sm_clock_mhz is not None]
        m.gpus.append(GpuSummary(
            index=i, name=rs[0].name, util=round(_mean([r.util for r in rs]), 1),
            others_util=round(_mean([r.foreign_util or 0.0 for r in rs]), 1),
            foreign_pids=sorted({p.pid for r in rs for p in r.foreign}),
            foreign_mem_mib=round(max(sum(p.mem_mib for p in r.foreign) for r in rs), 1),
            sm_clock_mhz=round(_mean(clocks), 0) if clocks else None, sm_clock_max_mhz=rs[0].sm_clock_max_mhz,
            throttled={k: round(v, 3) for k, v in sorted(reasons.items())}))
    m.disturbed = marks(m, lim)
    return m


def marks(m: MachineSummary, lim: Limits) -> list[str]:
    out = []
    if m.others_cpu > lim.cpu_share:
        out.append(f"others used {m.others_cpu:.0%} of the CPU (limit {lim.cpu_share:.0%})"
                   + (f", steal {m.steal:.0%}" if m.steal >= 0.01 else ""))
    if m.mem_available_min < lim.min_mem_available:
        out.append(f"memory nearly exhausted ({m.mem_available_min:.0%} available)")
    for g in m.gpus:
        if g.others_util > lim.gpu_share * 100:
            out.append(f"others used {g.others_util:.0f}% of GPU {g.index} (limit {lim.gpu_share:.0%}; "
                       f"pids {', '.join(map(str, g.foreign_pids[:5]))})")
        slow = {k: v for k, v in g.throttled.items() if k in DISTURBING_THROTTLE and v > lim.throttle_share}
        if slow:
            out.append(f"GPU {g.index} throttled: " + ", ".join(f"{k} in {v:.0%} of samples" for k, v in slow.items()))
    return out


def ratio_mark(measured: float | None, predicted: float | None, lim: Limits | None = None) -> str | None:
    """A figure this far from its prediction is more likely disturbed (or mispredicted) than news."""
    lim = lim or Limits()
    if not measured or not predicted or measured <= 0 or predicted <= 0:
        return None
    r = measured / predicted
    if r > lim.ratio or r < 1 / lim.ratio:
        return f"measured/predicted {r:.2f}x (beyond {lim.ratio:g}x)"
    return None


def _epoch(t) -> float | None:
    import datetime as dt
    return t.replace(tzinfo=dt.UTC).timestamp() if t is not None else None


@contextmanager
def recorded(db, run_id: int, url: str | None = None, gpu: GpuReader | None | bool = True) -> Iterator[Sampler]:
    """Watch the machine through a stored eval or replay run: at the end its samples are stored with the run,
    with a `machine` summary of the whole run and of each task's window (a task's wall time is its figure)."""
    from rigbench import store

    t0 = time.time()
    with watching(url, gpu=gpu) as s:
        try:
            yield s
        finally:
            s.stop()
            store.add_samples(db, run_id, s.samples)
            tasks = {}
            for row in store.task_rows(db, run_id):
                a, b = _epoch(row.get("started_at")), _epoch(row.get("finished_at"))
                if a and b:
                    w = s.window(a, b)
                    tasks[row["task"]] = {"others_cpu": w.others_cpu, "samples": w.samples, "disturbed": w.disturbed}
            whole = s.window(t0, time.time())
            store.set_summary(db, run_id, "machine", {**whole.model_dump(), "tasks": tasks,
                                                      "sampler_cpu_s": round(s.cost_s, 3)})


def one_line(summary: dict | MachineSummary | None) -> str | None:
    """`machine: others used 3% of the CPU` or the marks, for the end of a command's output."""
    if summary is None:
        return None
    m = summary if isinstance(summary, MachineSummary) else MachineSummary.model_validate(summary)
    if not m.samples:
        return None
    if m.disturbed:
        return "disturbed? " + "; ".join(m.disturbed)
    return f"machine: quiet (others used {m.others_cpu:.0%} of the CPU over {m.samples} samples)"


def stored_summary(db, run_id: int) -> dict | None:
    """The `machine` summary stored with a run (None for a run from before the sampler)."""
    from rigbench import store
    return next((s["summary"] for s in store.run_summaries(db, run_id) if s["scenario"] == "machine"), None)
