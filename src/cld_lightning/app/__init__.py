"""The application layer: ``cld-train`` (:mod:`.train`), ``cld-eval`` (:mod:`.evaluate`), model
building, config and checkpoint checks, exact resume, faults, ``last.ckpt``, loggers and
dashboards. It may import every library package; no library package imports it."""
