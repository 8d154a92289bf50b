"""recplug's on/off environment variables (``RECPLUG_DEBUG``, ``RECPLUG_STRICT_PLUGINS``, ...), all read by
:func:`env_flag`, so ``0`` or ``false`` means off in every one of them and a value that is neither is an error."""

from __future__ import annotations

import os

from recplug.core.errors import ConfigError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` is on: ``1``/``true``/``yes``/``on`` (any case) is on; unset, empty,
    ``0``/``false``/``no``/``off`` is off; any other value is a :class:`ConfigError` naming the variable."""
    value = os.environ.get(name, "")
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {value!r}")
