"""A vLLM checkpoint folder as published: exact weight bytes per tensor group from its safetensors headers.

Quantised checkpoints keep some modules in 16 bits (`modules_to_not_convert`, `ignore`): the vision tower,
router and shared-expert gates, Gated DeltaNet projections, the output head. Counting bytes from the config
alone misses those, so vLLM's weight memory (and with it the KV cache that fits) comes from the files:
only each file's header is read (`safetensors.safe_open`: names, dtypes and shapes; no tensor data).
A folder with only `model.safetensors.index.json` gives names and the total size, and the config-derived
estimate is scaled to that total.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from rigbench.errors import ModelFileError

INDEX = "model.safetensors.index.json"
# safetensors dtype -> bytes per element (safetensors format spec); packed int4 arrives as I32 / U8 words
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2,
               "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 0.5}
# HF quantization_config.quant_method -> the vLLM --quantization that serves it (vllm/model_executor/
# layers/quantization: awq -> awq_marlin on Ampere+, gptq -> gptq_marlin, auto-round, fp8, compressed-tensors)
VLLM_QUANT = {"awq": "awq_marlin", "gptq": "gptq_marlin", "auto-round": "auto_round", "intel/auto-round": "auto_round",
              "fp8": "fp8", "compressed-tensors": "compressed-tensors", "mxfp4": "mxfp4", "modelopt": "modelopt"}


class Checkpoint(BaseModel):
    path: str
    bytes_by_group: dict[str, int]       # exact: bytes; from an index only: the groups present, at 0
    total_bytes: int
    exact: bool                          # from tensor headers (True) or an index's total (False)

    def scaled(self, estimate: dict[str, int]) -> dict[str, int]:
        """Bytes per group: the headers' when exact, else `estimate` of the groups present scaled to the total."""
        if self.exact:
            return dict(self.bytes_by_group)
        base = {g: b for g, b in estimate.items() if g in self.bytes_by_group and b}
        k = self.total_bytes / max(1, sum(base.values()))
        return {g: int(b * k) for g, b in base.items()}
    quant_method: str | None = None
    vllm_quantization: str | None = None
    bits: int | None = None
    group_size: int | None = None
    not_converted: list[str] = []        # modules the quantiser left in 16 bits
    files: int = 0


def group_of(name: str) -> str:
    """rigbench's tensor group of an HF checkpoint tensor name (Qwen3 / 3.5 / 3.6 / Next naming)."""
    n = name.lower()
    if "visual" in n or "vision_tower" in n or "vision_model" in n or "mm_projector" in n:
        return "vision"
    if n.startswith("mtp.") or ".mtp." in n:
        return "mtp"
    if "embed_tokens" in n:
        return "embeddings"
    if n.startswith("lm_head") or ".lm_head" in n:
        return "output"
    if ".experts." in n:
        return "routed_experts"
    if "shared_expert" in n:
        return "shared_experts"
    if n.endswith(("mlp.gate.weight", "router.weight")) or ".mlp.gate." in n:
        return "router"
    if "linear_attn" in n or ".mamba" in n or ".mixer." in n:
        return "linear_attention"
    if "self_attn" in n or ".attn." in n:
        return "attention"
    if "norm" in n:
        return "norms"
    if ".mlp." in n:
        return "dense_ffn"
    return "norms"


def _quant_config(folder: Path) -> dict:
    for f in ("config.json", "quantization_config.json", "quant_config.json"):
        p = folder / f
        if p.is_file():
            try:
                d = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            q = d.get("quantization_config") or (d if f != "config.json" else None)
            if q:
                return q
    return {}


def is_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and ((folder / INDEX).is_file() or any(folder.glob("*.safetensors")))


def read(folder: Path) -> Checkpoint:
    """Weight bytes per group of the checkpoint in `folder` (with only an index: the groups it holds, at 0
    bytes each, and the total)."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    q = _quant_config(folder)
    method = (q.get("quant_method") or "").lower() or None
    not_converted = list(q.get("modules_to_not_convert") or q.get("ignore") or q.get("ignored_layers") or [])
    by_group: dict[str, int] = {}
    if files:
        for f in files:
            try:
                with safe_open(str(f), framework="numpy") as st:
                    for key in st.keys():
                        sl = st.get_slice(key)
                        n = 1
                        for d in sl.get_shape():
                            n *= d
                        size = DTYPE_BYTES.get(sl.get_dtype())
                        if size is None:
                            raise ModelFileError(f"{f.name}: tensor {key} has dtype {sl.get_dtype()} rigbench does "
                                                 f"not size; report it with the checkpoint's name")
                        g = group_of(key)
                        by_group[g] = by_group.get(g, 0) + int(n * size)
            except (OSError, SafetensorError) as e:
                raise ModelFileError(f"{f} is not a readable safetensors file ({e}); re-download it") from None
        total, exact = sum(by_group.values()), True
    elif (folder / INDEX).is_file():
        try:
            index = json.loads((folder / INDEX).read_text())
            total = int(index["metadata"]["total_size"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ModelFileError(f"{folder / INDEX} has no metadata.total_size; re-download the index") from None
        # names only: which groups the checkpoint holds; the planner scales its estimate of them to the total
        by_group, exact = {group_of(k): 0 for k in index.get("weight_map", {})}, False
    else:
        raise ModelFileError(f"{folder} has neither *.safetensors files nor {INDEX}; point at the checkpoint folder")
    kept = {g: b for g, b in by_group.items() if b} if exact else by_group
    return Checkpoint(path=str(folder), bytes_by_group=kept, total_bytes=total, exact=exact, quant_method=method,
                      vllm_quantization=VLLM_QUANT.get(method or ""),
                      bits=q.get("bits") or q.get("w_bit"), group_size=q.get("group_size") or q.get("q_group_size"),
                      not_converted=not_converted, files=len(files))


def published(ref: str) -> tuple[str, Checkpoint] | None:
    """(catalog model, checkpoint) of a published checkpoint named by its repo id (catalog checkpoints.yaml),
    as `vllm serve` takes it; a local path ending in the repo's name counts too. None if it is not one."""
    from rigbench import catalog

    key = ref.strip().rstrip("/").lower()
    folder = key.rsplit("/", 1)[-1]
    known = catalog.checkpoints().items()
    # the repo id itself first; a folder named like a repo only when no id matched
    hit = (next(((k, e) for k, e in known if k.lower() == key), None)
           or next(((k, e) for k, e in known if k.lower().rsplit("/", 1)[-1] == folder), None))
    if hit is None:
        return None
    name, e = hit
    method = e.get("quant_method")
    return e["model"], Checkpoint(
        path=name, bytes_by_group=dict.fromkeys(e.get("groups") or [], 0), total_bytes=int(e["total_bytes"]),
        exact=False, quant_method=method, vllm_quantization=e.get("vllm_quantization") or VLLM_QUANT.get(method or ""),
        bits=e.get("bits"), group_size=e.get("group_size"), not_converted=list(e.get("not_converted") or []))
