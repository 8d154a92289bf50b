"""recplug's error types. Each message is one line naming the file, row, config key or plugin at fault;
the CLI prints it as ``error: <message>`` without a traceback."""


class RecplugError(Exception):
    """Base of every error recplug reports to users as a one-line message."""


class DataError(RecplugError, ValueError):
    """Bad input data: names the file and line, or the split/modality/field at fault."""


class ConfigError(RecplugError, ValueError):
    """A configuration that cannot work: names the config key to change."""


class PluginError(RecplugError, RuntimeError):
    """A plugin could not be loaded or wired: names the plugin and its distribution."""


class CardinalityError(PluginError):
    """A hook has the wrong number of providers for its stated cardinality."""
