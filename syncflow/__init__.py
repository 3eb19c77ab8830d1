"""syncflow's core: the sync store, session book-keeping, source clients.

Nothing in this package imports Prefect; ``flows/``, ``tasks/`` and ``blocks/`` build on it.
"""

__version__ = "0.1.0"
