"""The trainer's command-line layer: the ``lordfx`` entry point (``plugin``) and the typer
commands it registers. The engine (config, models, steps, loop, run, losses, data,
evaluation) lives one level up in ``lordfx_trainer`` and never imports from here."""
