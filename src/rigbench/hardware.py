"""Rig: GPUs (VRAM, bandwidth, FLOPs), system RAM and its bandwidth, the host link.

From a catalog name (`rtx4090`, `2x rtx3090`, `h100`), a YAML file, or detected on this machine
(nvidia-smi when present, /proc/meminfo, the CPU count).
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from pydantic import BaseModel

from rigbench import catalog
from rigbench.errors import RigbenchError, UnknownRigError

GB = 1_000_000_000
GIB = 1024**3
# NVML reports slightly less than the marketed size in GiB (RTX 4090: 24564 MiB, H100 80GB: 81559 MiB,
# RTX 5080: 16303 MiB), so a card's usable total is its marketed GB as GiB times this factor.
NVML_USABLE = 0.995


class GPU(BaseModel):
    name: str
    vram_bytes: int
    bandwidth_gbs: float
    fp16_tflops: float
    int8_tops: float = 0.0          # dense INT8 as mma.sync runs it; 0 = 2x fp16_tflops
    fp32_tflops: float = 0.0        # CUDA cores; 0 = fp16_tflops / 4
    sms: int = 0                    # streaming multiprocessors and boost clock (vendor specs)
    boost_mhz: float = 0.0
    arch: str = ""
    fp8: bool = False
    fp4: bool = False
    p2p: bool = False               # CUDA peer copies over PCIe (datacenter and pro cards; not GeForce)
    unified: bool = False
    tdp_w: float = 0.0              # stock board power (the vendor's TGP/TDP)
    power_limit_w: float = 0.0      # a user's cap (nvidia-smi -pl); 0 = none, the card runs at its stock limit
    source: str = ""

    @property
    def clock_scale(self) -> float:
        """The share of its boost clock the card sustains under its power cap: 1 without a cap or at and above
        stock TDP, else (cap / TDP) ** speed.yaml `power_clock_exponent` (docs/speed-model.md, "Power limit")."""
        if not self.power_limit_w or not self.tdp_w or self.power_limit_w >= self.tdp_w:
            return 1.0
        return (self.power_limit_w / self.tdp_w) ** catalog.speed()["defaults"]["power_clock_exponent"]

    def capped(self, watts: float | None) -> GPU:
        """This card under a power limit: its compute rates (tensor, CUDA-core, the per-SM clock terms) scale with
        the clock it sustains; its memory bandwidth does not (the memory clock holds under a cap)."""
        if watts is None:
            return self
        check_power_limit(self, watts)
        was = self.clock_scale
        g = self.model_copy(update={"power_limit_w": float(watts)})
        f = g.clock_scale / was
        name = self.name.split(" @")[0] + (f" @{watts:g} W" if g.clock_scale < 1 else "")
        return g.model_copy(update={
            "fp16_tflops": self.fp16_tflops * f, "int8_tops": self.int8_tops * f, "fp32_tflops": self.fp32_tflops * f,
            "boost_mhz": self.boost_mhz * f, "name": name})

    @property
    def mma_int8_tops(self) -> float:
        return self.int8_tops or 2 * self.fp16_tflops

    @property
    def mmq_tops(self) -> float:
        """The INT8 rate llama.cpp's quantised matmuls (MMQ) scale with: SMs x clock x the Ampere-class
        mma.sync rate per SM (catalog speed.yaml `mmq_ops_per_sm_clock`). On GeForce Ampere/Ada/Blackwell this is
        the datasheet's dense INT8 figure; on Hopper and A100 the tensor cores do more per clock than MMQ's
        tile loads and dequantisation feed them, so the SM count and clock are what carry over."""
        return self._per_sm_rate("mmq_ops_per_sm_clock", self.mma_int8_tops)

    @property
    def fa_tflops(self) -> float:
        """The FP16 rate llama.cpp's flash attention (warp-level mma.sync) scales with: the datasheet's FP16
        figure with FP32 accumulation, capped at SMs x clock x the Ampere/Ada mma.sync rate per SM
        (`fa_flops_per_sm_clock`); Hopper's datasheet figure assumes wgmma."""
        return self._per_sm_rate("fa_flops_per_sm_clock", self.fp16_tflops)

    def _per_sm_rate(self, per_clock_key: str, peak: float) -> float:
        """SMs x boost clock x a per-SM rate of catalog speed.yaml, capped at `peak`; `peak` when the SM count
        or clock is unknown (a GPU from a user's YAML)."""
        if not self.sms or not self.boost_mhz:
            return peak
        per_clock = catalog.speed()["defaults"][per_clock_key]
        return min(peak, self.sms * self.boost_mhz * 1e6 * per_clock / 1e12)

    @property
    def stream_gbs(self) -> float:
        """The rate llama.cpp's decode kernels can read weights at: the memory bandwidth, capped at what the SMs
        dequantise and dot-multiply per clock (SMs x clock x speed.yaml `stream_bytes_per_sm_clock`). An H200
        has an H100's SMs and clocks and 1.4x its bandwidth, and decodes a 27B no faster: its SMs, not its
        memory, set the pace there."""
        if not self.sms or not self.boost_mhz:
            return self.bandwidth_gbs
        per_clock = catalog.speed()["defaults"]["stream_bytes_per_sm_clock"]
        return min(self.bandwidth_gbs, self.sms * self.boost_mhz * 1e6 * per_clock / 1e9)

    @property
    def cuda_fp32_tflops(self) -> float:
        return self.fp32_tflops or self.fp16_tflops / 4

    def fp32_tflops_on(self, blocks: int) -> float:
        """CUDA-core FP32 rate of a kernel that launches `blocks` thread blocks of one SM each: a kernel with
        fewer blocks than the GPU has SMs leaves the rest idle (llama.cpp's Gated DeltaNet scan: one block per
        head and sequence)."""
        if not self.sms or blocks <= 0:
            return self.cuda_fp32_tflops
        return self.cuda_fp32_tflops * min(1.0, blocks / self.sms)


# the highest cap rigbench takes, as a multiple of stock TDP: partner boards raise the limit (RTX 3090 cards ship
# with 350-480 W limits against NVIDIA's 350 W), none to 1.5x
MAX_POWER_OVER_TDP = 1.5


class PowerLimitError(RigbenchError):
    """A power limit rigbench cannot apply."""


def check_power_limit(g: GPU, watts: float) -> None:
    if watts <= 0:
        raise PowerLimitError(f"power limit {watts:g} W for {g.name}: give a positive number of watts "
                              f"(its stock TDP is {g.tdp_w:g} W)" if g.tdp_w else
                              f"power limit {watts:g} W for {g.name}: give a positive number of watts")
    if not g.tdp_w:
        raise PowerLimitError(f"power limit {watts:g} W for {g.name}: rigbench does not know this card's stock TDP; "
                              f"add tdp_w to its entry in the rig YAML")
    if watts > MAX_POWER_OVER_TDP * g.tdp_w:
        raise PowerLimitError(f"power limit {watts:g} W for {g.name} is above the most any board allows "
                              f"({MAX_POWER_OVER_TDP:g}x its {g.tdp_w:g} W stock TDP); give the cap nvidia-smi -pl set")


class Rig(BaseModel):
    name: str
    gpus: list[GPU] = []
    ram_bytes: int
    ram_bandwidth_gbs: float
    link_gbs: float = 25.0              # host-to-GPU copies from pinned memory
    link_pageable_gbs: float = 0.0      # from pageable memory (mmap'd weights); 0 = 0.8 x link_gbs
    # from pageable memory in copies of a few MiB (4-32 MiB in benchmarks/gpu/host_link.py): the size llama.cpp
    # copies a CPU-held expert tensor in, one run of consecutive used experts at a time; 0 = link_pageable_gbs
    link_pageable_small_gbs: float = 0.0
    peer_gbs: float = 0.0               # GPU to GPU, what tensor-parallel all-reduces cross; 0 = link_gbs
    # writing a sequence's state into fresh host memory (llama-server's context checkpoints and RAM prompt
    # cache: page faults, zero-fill, copy); 0 = speed.yaml `state_copy_gbs` (benchmarks/state_copy.py)
    state_copy_gbs: float = 0.0
    # ggml-cpu's flash attention per core, where a decoded token's attention runs on the CPU (the layers whose KV
    # cache is in RAM); 0 = speed.yaml `cpu_attn_gflops`
    cpu_attn_gflops: float = 0.0
    cores: int = 8
    source: str = ""

    @property
    def pageable_gbs(self) -> float:
        return self.link_pageable_gbs or 0.8 * self.link_gbs

    @property
    def pageable_small_gbs(self) -> float:
        return self.link_pageable_small_gbs or self.pageable_gbs

    @property
    def collective_gbs(self) -> float:
        return self.peer_gbs or self.link_gbs

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def vram_bytes(self) -> int:
        return sum(g.vram_bytes for g in self.gpus)

    def with_vram(self, gib: float | None) -> Rig:
        """This rig with each GPU's usable memory set to a budget (what a ballast or other apps leave free)."""
        if gib is None or not self.gpus:
            return self
        return self.model_copy(update={"gpus": [g.model_copy(update={"vram_bytes": int(gib * GIB)})
                                                for g in self.gpus]})

    def with_power_limit(self, watts: float | None) -> Rig:
        """This rig with every GPU capped at `watts` (nvidia-smi -pl); None leaves each card as it is."""
        if watts is None:
            return self
        return self.model_copy(update={"gpus": [g.capped(watts) for g in self.gpus]})

    def describe(self) -> str:
        gpus = " + ".join(g.name for g in self.gpus) or "no GPU"
        return f"{gpus}, {self.ram_bytes / GB:.0f} GB RAM @ {self.ram_bandwidth_gbs:.0f} GB/s"


def gpu_from_catalog(key: str) -> GPU:
    gpus = catalog.hardware()["gpus"]
    k = _norm(key)
    for name, e in gpus.items():
        if k in (name, _norm(e["name"])):
            return GPU(name=e["name"], vram_bytes=int(e["vram_gb"] * GIB * NVML_USABLE),
                       bandwidth_gbs=e["bandwidth_gbs"], fp16_tflops=e["fp16_tflops"], arch=e.get("arch", ""),
                       int8_tops=e.get("int8_tops", 0.0), fp32_tflops=e.get("fp32_tflops", 0.0),
                       sms=e.get("sms", 0), boost_mhz=e.get("boost_mhz", 0.0), fp8=e.get("fp8", False),
                       fp4=e.get("fp4", False), p2p=e.get("p2p", False), unified=e.get("unified", False),
                       tdp_w=e.get("tdp_w", 0.0), source=e.get("source", ""))
    close = difflib.get_close_matches(k, list(gpus), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownRigError(
        f"unknown GPU {key!r}{hint}; give its memory and bandwidth in a rig YAML (gpus: [{{name, vram_gb, "
        f"bandwidth_gbs, fp16_tflops}}]) or see `rigbench rigs`")


def _norm(s: str) -> str:
    return re.sub(r"[\s_]+", "-", s.strip().lower())


def _build(name: str, e: dict) -> Rig:
    hw = catalog.hardware()
    mem = hw["memory"].get(e.get("memory", "ddr5-dual"), {"bandwidth_gbs": 70})
    link = hw["links"].get(e.get("link", "pcie4x16"), {"bandwidth_gbs": 25})
    gpus = []
    for g in e.get("gpus", []):
        if isinstance(g, dict) and "gpu" in g:      # a catalog card with its own cap {gpu: rtx3090, power_limit_w: 230}
            gpu = gpu_from_catalog(g["gpu"])
        elif isinstance(g, str):
            gpu = gpu_from_catalog(g)
        else:
            gpu = GPU(name=g["name"], vram_bytes=int(g["vram_gb"] * GIB * NVML_USABLE),
                      bandwidth_gbs=g["bandwidth_gbs"],
                      fp16_tflops=g.get("fp16_tflops", 50), int8_tops=g.get("int8_tops", 0.0),
                      fp32_tflops=g.get("fp32_tflops", 0.0), sms=g.get("sms", 0), boost_mhz=g.get("boost_mhz", 0.0),
                      tdp_w=g.get("tdp_w", 0.0), source=g.get("source", "user YAML"))
        cap = g.get("power_limit_w") if isinstance(g, dict) else None
        gpus.append(gpu.capped(cap if cap is not None else e.get("power_limit_w")))
    ram = int(e.get("ram_gb", 64) * GIB)
    if e.get("unified") and gpus:
        ram = 0  # unified memory: the GPU entry holds it all
    link_gbs = e.get("link_gbs", link["bandwidth_gbs"])
    return Rig(name=name, gpus=gpus, ram_bytes=ram, ram_bandwidth_gbs=e.get("ram_bandwidth_gbs", mem["bandwidth_gbs"]),
               link_gbs=link_gbs, link_pageable_gbs=e.get("link_pageable_gbs", link.get("pageable_gbs", 0.0)),
               link_pageable_small_gbs=e.get("link_pageable_small_gbs", 0.0),
               peer_gbs=_peer_gbs(e, gpus, link_gbs), state_copy_gbs=e.get("state_copy_gbs", 0.0),
               cpu_attn_gflops=e.get("cpu_attn_gflops", 0.0), cores=e.get("cores", 8), source=e.get("source", ""))


def _peer_gbs(e: dict, gpus: list[GPU], link_gbs: float) -> float:
    """GPU-to-GPU bandwidth of a rig entry: its `peer_link` (NVLink) when it names one; else PCIe, direct where
    the cards (or the rig's `p2p: true`, a patched driver) allow peer copies, and staged through host memory at
    half the link's rate where they do not (hardware.yaml, `p2p`)."""
    if "peer_gbs" in e:
        return e["peer_gbs"]
    if e.get("peer_link"):
        return catalog.hardware()["links"][e["peer_link"]]["bandwidth_gbs"]
    if len(gpus) < 2:
        return link_gbs
    direct = e.get("p2p", all(g.p2p for g in gpus))
    return link_gbs if direct else link_gbs / 2


def from_catalog(ref: str) -> Rig:
    rigs = catalog.hardware()["rigs"]
    k = _norm(ref)
    if k in rigs:
        return _build(k, rigs[k])
    m = re.fullmatch(r"(\d+)\s*x\s*-?(.+)", k)
    count, gpu_key = (int(m.group(1)), m.group(2).strip("-")) if m else (1, k)
    if gpu_key in rigs and rigs[gpu_key].get("gpus"):
        base = dict(rigs[gpu_key])
        base["gpus"] = base["gpus"] * count
        return _build(k, base)
    try:
        gpu_from_catalog(gpu_key)
    except UnknownRigError:
        close = difflib.get_close_matches(k, list(rigs), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownRigError(f"unknown rig {ref!r}{hint}; `rigbench rigs` lists them, or pass a rig YAML") from None
    return _build(k, {"gpus": [gpu_key] * count, "ram_gb": 64, "memory": "ddr5-dual", "link": "pcie4x16"})


_LINKS = {"pcie3": "pcie3x16", "pcie4": "pcie4x16", "pcie5": "pcie5x16"}


def described_entry(gpu: str, count: int = 1, cpu: str = "", link: str = "", p2p: bool | None = None,
                    peer_link: str = "", power_limit_w: float | None = None) -> dict:
    """A rig entry (the rig-YAML mapping) for a machine known only from a post: its GPUs, what it says of the CPU
    and its memory, the PCIe link its cards sit on (the narrowest, e.g. pcie4x4), whether a patched driver
    engages P2P, an NVLink bridge; unknown parts take the catalog's defaults (a dual-channel DDR5 desktop on
    PCIe 4.0 x16, 16 cores, the cards' own P2P rule)."""
    c = cpu.lower()
    memory = ("ddr4-dual" if "ddr4" in c else
              "ddr5-8ch" if re.search(r"epyc|xeon|threadripper|8.channel|12.channel", c) else "ddr5-dual")
    cores = re.search(r"(\d+)[- ]?(?:core|c\b|cores)", c)
    links = catalog.hardware()["links"]
    e = {"name": f"{count}x-{gpu}", "gpus": [gpu] * count, "ram_gb": 128, "memory": memory,
         "link": link if link in links else _LINKS.get(link, "pcie4x16"), "cores": int(cores.group(1)) if cores else 16}
    if p2p is not None:
        e["p2p"] = p2p
    if peer_link:
        e["peer_link"] = peer_link
    if power_limit_w:
        e["power_limit_w"] = power_limit_w
    return e


def described(gpu: str, count: int = 1, cpu: str = "", link: str = "", p2p: bool | None = None,
              peer_link: str = "", power_limit_w: float | None = None) -> Rig:
    e = described_entry(gpu, count, cpu, link, p2p, peer_link, power_limit_w)
    return _build(e["name"], e)


def from_yaml(path: Path) -> Rig:
    try:
        e = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UnknownRigError(f"cannot read rig YAML {path}: {err}") from None
    if not isinstance(e, dict):
        raise UnknownRigError(f"{path}: a rig YAML is a mapping with gpus, ram_gb, memory")
    return _build(e.get("name", path.stem), e)


def detect() -> Rig:
    """This machine: GPUs from nvidia-smi, RAM from /proc/meminfo, cores from the OS."""
    gpus: list[GPU] = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        for line in out.strip().splitlines():
            name, mib = (s.strip() for s in line.split(",")[:2])
            try:
                known = gpu_from_catalog(_match_gpu(name))
                known.vram_bytes = int(float(mib) * 2**20)
            except UnknownRigError:
                known = GPU(name=name, vram_bytes=int(float(mib) * 2**20), bandwidth_gbs=500, fp16_tflops=50,
                            source="detected; bandwidth unknown (500 GB/s assumed) - add it to a rig YAML")
            gpus.append(known)
    ram = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        ram = 16 * GB
    return Rig(name="detected", gpus=gpus, ram_bytes=ram, ram_bandwidth_gbs=catalog.hardware()["memory"]["ddr5-dual"]
               ["bandwidth_gbs"], cores=os.cpu_count() or 1, source="detected on this machine")


def _match_gpu(smi_name: str) -> str:
    n = smi_name.lower()
    for key, e in catalog.hardware()["gpus"].items():
        if e["name"].lower().replace(" sxm", "") in n or key in n.replace(" ", ""):
            return key
    return smi_name


def load(ref: str | None) -> Rig:
    if ref in (None, "", "detect", "local"):
        return detect()
    p = Path(ref).expanduser()
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return from_yaml(p)
    return from_catalog(ref)
