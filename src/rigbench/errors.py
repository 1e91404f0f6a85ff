"""Errors a user can cause. Each message is one line that says what to do."""


class RigbenchError(Exception):
    """Base class: the CLI prints the message without a traceback and exits non-zero."""

    exit_code = 2


class UnknownModelError(RigbenchError):
    pass


class ModelFileError(RigbenchError):
    """A file that is not a GGUF / config.json, or a truncated one."""


class UnknownRigError(RigbenchError):
    pass


class EngineOptionError(RigbenchError):
    """An unknown flag, a bad value, or an option the engine cannot honour on this rig."""


class DoesNotFitError(RigbenchError):
    exit_code = 3


class StoreError(RigbenchError):
    """The store cannot be opened: a database that does not answer, or a driver that is not installed."""


class UsageError(RigbenchError):
    """Options that do not go together, or a missing argument; the CLI shows it with the usage line."""
