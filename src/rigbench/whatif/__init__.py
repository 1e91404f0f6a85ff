"""What-if: a stored eval run's tasks under another rig or placement.

`trace` reads each task's turns from the store (prompt, cached and output tokens, the time the model and the
tools took); `predict` replays them through `plan.speed` for a target placement (prefill of the tokens the
target's prefix cache does not hold, decode of the output, tool time as recorded) and says which tasks would
finish inside their time limit; `replay` sends the same turns, shape for shape, to a live server and measures.
"""

from rigbench.whatif.predict import StoredRunTimes, Target, WhatIf, predict
from rigbench.whatif.trace import RunTrace, TaskTrace, Turn, load

__all__ = ["RunTrace", "StoredRunTimes", "TaskTrace", "Target", "Turn", "WhatIf", "load", "predict"]
