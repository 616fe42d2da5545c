"""The one error type highboot raises for bad input, and how it is shown."""

from __future__ import annotations

from pathlib import Path


class HighbootError(Exception):
    """A problem with the user's input: names the file, the field and what was expected."""

    def __init__(self, message: str, *, file: str | Path | None = None, field: str | None = None) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.field = field
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.file:
            where += f"{self.file}: "
        if self.field:
            where += f"{self.field}: "
        return f"{where}{self.message}"
