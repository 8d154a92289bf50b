"""The implementation behind the public API (``recplug``); its modules may move between releases. One folder per
layer, each importing only the layers below it (docs/architecture.md):

- ``cli/``: the ``recplug`` command, one module per sub-command; ``main`` is the entry point and ``boundary`` the
  one error boundary.
- ``model/``: ``RecModule`` (the LightningModule skeleton), the component bases and records, the plugin manager,
  checkpoint opening and provenance.
- ``eval/``: the evaluation the module runs (full-ranking search with seen items masked, ``FastMetrics``) and the
  top-k writer.
- ``data/``: ``InteractionData``, the one path resolver (``load_dataset``) and its formats, the dataset registry and
  downloads, the BPR sampler and ``RecDataModule``.
- ``ops/``: sparse propagation, neighbour sampling, kNN graphs, atomic file writes, the YAML reader and the on/off
  environment variables.
- ``errors.py``: the error types and range checks every layer raises.

Nothing here imports ``recplug.plugins``: built-in plugins are loaded through the plugin registry like third-party ones.
"""
