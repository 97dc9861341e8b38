"""Deprecated path: moved to :mod:`cld_lightning.app.config_check` (see :mod:`cld_lightning._moved`)."""

from cld_lightning._moved import moved

moved("config_check")
