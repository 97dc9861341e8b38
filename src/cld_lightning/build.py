"""Deprecated path: moved to :mod:`cld_lightning.app.build` (see :mod:`cld_lightning._moved`)."""

from cld_lightning._moved import moved

moved("build")
