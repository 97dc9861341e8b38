"""Errors of the application layer: each is one line for the user, naming the key or the file."""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """A configuration problem, named by its key (or a checkpoint problem, named by its path)."""


class NonFiniteTrainingError(RuntimeError):
    """Training stopped: the loss was non-finite too many steps in a row (one line: how many
    times, the likely causes and the last good checkpoint)."""


def one_line(err: BaseException) -> str:
    """``err``'s message as one line: its ``summary`` when it has one, the worker's own message
    for an error re-raised from a DataLoader worker (the last line of the wrapped traceback,
    without the exception's name), else the lines of the message joined."""
    summary = getattr(err, "summary", None)
    if isinstance(summary, str) and summary:
        return summary
    text = str(err).strip()
    if "\nOriginal Traceback" in text:  # the worker's "module.ErrorName: message" line
        raised = [ln for ln in text.splitlines() if re.match(r"[A-Za-z_][\w.]*: ", ln)]
        if raised:
            text = raised[-1].split(": ", 1)[1]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
