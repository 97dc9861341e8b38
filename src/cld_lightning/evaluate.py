"""Deprecated path: moved to :mod:`cld_lightning.app.evaluate` (see :mod:`cld_lightning._moved`)."""

from cld_lightning._moved import moved

if __name__ == "__main__":  # `python -m cld_lightning.evaluate` still runs the command
    moved("evaluate").main()
else:
    moved("evaluate")
