"""recplug's own sub-commands (Lightning's ``fit|validate|test|predict`` aside): for each name, the module whose
``main(argv) -> int`` runs it, imported only when that command runs (Lightning is slow to import), and the one line
``recplug --help`` prints. Imports nothing, so every CLI module may read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One sub-command: ``module`` (its ``main(argv)`` runs it) and a one-line ``summary``."""

    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "plugins": Command(
        "recplug.core.cli.plugins", "list loaded plugins: name, distribution, version, hooks, components"
    ),
    "data": Command("recplug.core.cli.data", "dataset tools: `recplug data stats|convert|download|list ...`"),
    "features": Command(
        "recplug.core.cli.features",
        "encode item text or categories into <modality>_feat.npy: `recplug features text|categories --items T ...`",
    ),
    "report": Command(
        "recplug.core.cli.report", "training curves and metrics table of a run: `recplug report RUN_DIR [--out DIR]`"
    ),
    "ablate": Command(
        "recplug.core.cli.ablate",
        "run variants x seeds, report mean ± std: `recplug ablate --config C --variants V --seeds 0 1`",
    ),
    "export": Command(
        "recplug.core.cli.export",
        "embeddings, id maps, config, provenance, faiss index of a checkpoint: `recplug export --ckpt_path X --out D`",
    ),
    "serve": Command(
        "recplug.core.cli.serve",
        "serve top-K over HTTP with LitServe (extra `serve`): `recplug serve --ckpt_path X [--port P] [--host H]`",
    ),
    "tune": Command(
        "recplug.core.cli.tune",
        "tune hyper-parameters on validation (Optuna): `recplug tune --config C --space S --trials N`",
    ),
    "benchmark": Command(
        "recplug.core.cli.benchmark",
        "bundles x datasets x seeds, leaderboards with significance and GRMF-X: `recplug benchmark --configs C ...`",
    ),
}
