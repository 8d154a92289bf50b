"""The data layer: the dataset, one path resolver and its formats, the registry, sampler and datamodule."""
