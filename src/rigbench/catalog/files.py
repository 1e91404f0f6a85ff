"""The catalog's files: the embedded YAML and JSON under data/, with the user's YAML files (RIGBENCH_CATALOG, a path
list, or ~/.config/rigbench/*.yaml) on top where a section allows it."""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DATA = resources.files("rigbench.catalog") / "data"


def _user_files() -> list[Path]:
    paths = [Path(p) for p in os.environ.get("RIGBENCH_CATALOG", "").split(os.pathsep) if p]
    home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "rigbench"
    if home.is_dir():
        paths += sorted(home.glob("*.yaml"))
    return paths


def _load_yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((DATA / name).read_text()) or {}


def _with_user(section: str) -> dict[str, dict[str, Any]]:
    """The embedded `section`.yaml with the user's YAML files' `section` entries on top."""
    data = dict(_load_yaml(f"{section}.yaml"))
    for path in _user_files():
        extra = yaml.safe_load(path.read_text()) or {}
        data.update(extra.get(section, {}))
    return data


@cache
def models() -> dict[str, dict[str, Any]]:
    return _with_user("models")


@cache
def hardware() -> dict[str, Any]:
    data = _load_yaml("hardware.yaml")
    for path in _user_files():
        extra = yaml.safe_load(path.read_text()) or {}
        for section in ("gpus", "memory", "links", "rigs"):
            data.setdefault(section, {}).update(extra.get(section, {}))
    return data


@cache
def quants() -> dict[str, Any]:
    return _load_yaml("quants.yaml")


@cache
def checkpoints() -> dict[str, dict[str, Any]]:
    return _with_user("checkpoints")


@cache
def engines() -> dict[str, Any]:
    return _load_yaml("engines.yaml")


@cache
def speed() -> dict[str, Any]:
    return _load_yaml("speed.yaml")


@cache
def agents() -> dict[str, Any]:
    """Agent profiles (agents.yaml): `default` and `profiles`, the user's YAML `agents` entries on top."""
    data = _load_yaml("agents.yaml")
    for path in _user_files():
        extra = yaml.safe_load(path.read_text()) or {}
        data["profiles"].update(extra.get("agents", {}))
    return data


@cache
def llama_server_flags() -> dict[str, int]:
    return json.loads((DATA / "llama_server_flags.json").read_text())["flags"]


def clear_cache() -> None:
    for fn in (models, hardware, quants, checkpoints, engines, speed, agents, llama_server_flags):
        fn.cache_clear()
