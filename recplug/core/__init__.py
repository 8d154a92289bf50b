"""The skeleton: plugin manager, LightningModule, data module, CLI, evaluation and sparse ops."""
