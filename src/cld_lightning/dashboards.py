"""Deprecated path: moved to :mod:`cld_lightning.app.dashboards` (see :mod:`cld_lightning._moved`)."""

from cld_lightning._moved import moved

moved("dashboards")
