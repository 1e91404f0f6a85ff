"""An experiment file: candidates (model, weights or synth, quant, engine, flags, rig), the speed scenarios,
the eval tasks with one agent and limit, and how many times to repeat each."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rigbench.bench import SCENARIOS
from rigbench.errors import RigbenchError


class ExperimentFileError(RigbenchError):
    """An experiment YAML that cannot be read, or names something that does not exist."""


class Synth(BaseModel):
    """Random weights at the model's shapes (`rigbench synth`), scaled down when asked."""
    model_config = ConfigDict(extra="forbid")
    layers: int | None = None
    experts: int | None = None
    seed: int = 0


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    model: str                                  # catalog name, config.json, .gguf, or `embedded`
    weights: str | None = None                  # local .gguf / folder; `embedded` = the packaged model
    synth: Synth | None = None
    quant: str | None = None
    engine: Literal["llama.cpp", "vllm"] = "llama.cpp"
    flags: list[str] = []                       # the engine's own flags, as on its command line
    rig: str | None = None                      # default: the experiment's rig

    @field_validator("flags", mode="before")
    @classmethod
    def _split(cls, v):
        import shlex
        return shlex.split(v) if isinstance(v, str) else v

    @property
    def embedded(self) -> bool:
        return self.model == "embedded" or self.weights == "embedded"


class BenchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenarios: list[str] = ["short_ttft", "decode", "ttft_3500", "long_decode", "concurrency", "kv_capacity"]
    config: dict = {}                           # any BenchConfig field: sweep, long_context, repeats, ...

    @field_validator("scenarios")
    @classmethod
    def _known(cls, v):
        bad = [x for x in v if x not in SCENARIOS]
        if bad:
            raise ValueError(f"unknown scenario(s) {', '.join(bad)}; known: {', '.join(SCENARIOS)}")
        return v


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: str = "starter"                      # a folder of tasks (relative to the file) or `starter`
    names: list[str] | None = None
    tags: list[str] | None = None
    agent: Literal["builtin", "oracle", "noop"] = "builtin"
    time_limit_s: float | None = None
    max_steps: int = 30
    max_response_tokens: int = 2048
    sandbox: Literal["bwrap", "docker"] = "bwrap"


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    rig: str | None = None
    candidates: list[Candidate]
    bench: BenchSpec | None = BenchSpec()
    eval: EvalSpec | None = None
    repeats: int = 1
    base_dir: str = "."                         # where relative paths in the file start (set by load)

    @field_validator("candidates")
    @classmethod
    def _unique(cls, v):
        names = [c.name for c in v]
        if not v:
            raise ValueError("give at least one candidate")
        if len(set(names)) != len(names):
            raise ValueError(f"candidate names must differ: {names}")
        return v

    def path(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else Path(self.base_dir) / q


def load(path: Path) -> ExperimentSpec:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ExperimentFileError(f"no experiment file {path}; see examples/*.yaml") from None
    except yaml.YAMLError as e:
        raise ExperimentFileError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ExperimentFileError(f"{path} must be a mapping with name, candidates, bench, eval")
    data.setdefault("base_dir", str(Path(path).resolve().parent))
    try:
        return ExperimentSpec(**data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ExperimentFileError(f"{path}: {where}: {first['msg']}") from None
