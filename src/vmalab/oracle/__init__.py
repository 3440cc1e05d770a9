"""The live-kernel oracle: run a scenario on this machine's kernel and produce a result object.

See :func:`vmalab.oracle.kernel.run_on_kernel`.
"""

from __future__ import annotations

from .kernel import KernelRunnerError, ensure_runner, run_on_kernel

__all__ = ["KernelRunnerError", "ensure_runner", "run_on_kernel"]
