"""Embedded data: model architectures, quantisation formats, hardware, engine flags.

Every entry carries a `source`. Users add their own models and rigs in YAML files named by
RIGBENCH_CATALOG (a path list) or placed in ~/.config/rigbench/.

The names below are the package's face; the reading is in `files`.
"""

from rigbench.catalog.files import (
    DATA,
    agents,
    checkpoints,
    clear_cache,
    engines,
    hardware,
    llama_server_flags,
    models,
    quants,
    speed,
)

__all__ = ["DATA", "agents", "checkpoints", "clear_cache", "engines", "hardware", "llama_server_flags", "models",
           "quants", "speed"]
