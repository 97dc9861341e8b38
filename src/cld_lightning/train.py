"""Deprecated path: moved to :mod:`cld_lightning.app.train` (see :mod:`cld_lightning._moved`)."""

from cld_lightning._moved import moved

if __name__ == "__main__":  # `python -m cld_lightning.train` still runs the command
    moved("train").main()
else:
    moved("train")
