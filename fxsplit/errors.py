"""The one user-facing exception type."""

from __future__ import annotations


class FxsplitError(Exception):
    """Every error fxsplit reports to a user.

    The message names what is wrong (module, partition, source line where known)
    and says what to do about it.
    """

    def __init__(self, message: str, *, module: str | None = None, partition: str | None = None,
                 source: str | None = None, hint: str | None = None):
        self.module = module
        self.partition = partition
        self.source = source
        self.hint = hint
        parts = [message]
        if module:
            parts.append(f"  module: {module}")
        if partition:
            parts.append(f"  partition: {partition}")
        if source:
            parts.append(f"  source: {source}")
        if hint:
            parts.append(f"  what to do: {hint}")
        super().__init__("\n".join(parts))
        self.message = message
