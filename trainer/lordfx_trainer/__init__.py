"""lordfx-trainer: LORD stage 1 (latent optimisation), stage 2 (amortisation), datasets,
losses and evaluation. Adds ``train``/``presets`` (and more) to the ``lordfx`` CLI."""

__version__ = "0.1.0"
