"""The model layer: component bases, typed records, the LightningModule skeleton and its plugin manager."""
