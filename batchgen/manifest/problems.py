"""What validation finds, collected as it goes: every error in the order found, each distinct
warning once. Each step reports here and carries on, so one run names every mistake."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from batchgen.errors import Problem
from batchgen.manifest.catalog import Origin


class Problems:
    """The errors and warnings found in the manifest ``file``."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[Problem] = []
        self._warnings: dict[str, tuple[Problem, int]] = {}  # "field: message": first one, count

    def error(self, message: str, field: str | None = None, where: Origin | None = None) -> None:
        self.errors.append(self._problem(message, field, where))

    def warn(self, message: str, field: str | None = None, where: Origin | None = None) -> None:
        # One line per distinct warning, not one per item of a 5,000-item catalog.
        key = f"{field}: {message}"
        first, count = self._warnings.get(key, (self._problem(message, field, where), 0))
        self._warnings[key] = (first, count + 1)

    def warnings(self) -> tuple[Problem, ...]:
        """Each distinct warning as first found, with how many more there were."""
        return tuple(
            dataclasses.replace(p, message=p.message + (f" (and {n - 1} more)" if n > 1 else ""))
            for p, n in self._warnings.values()
        )

    def unknown_keys(
        self, data: dict[str, Any], known: tuple[str, ...], prefix: str, where: Origin | None = None
    ) -> None:
        """An error for each key of ``data`` not in ``known``, naming the closest known one."""
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
                self.error(f"unknown field {key!r}{hint}", f"{prefix}{key}" if prefix else str(key), where)

    def _problem(self, message: str, field: str | None, where: Origin | None) -> Problem:
        if where is None:
            return Problem(self.file, message, field=field)
        return Problem(
            where.file or self.file, message, where.position, where.id or None, field, where.line, where.label
        )
