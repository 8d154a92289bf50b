"""recplug's on/off environment variables (:data:`FLAGS`), all read by :func:`env_flag`, so ``0`` or ``false``
means off in every one of them and a value that is neither is an error, raised before any command runs
(:func:`check_flags`)."""

from __future__ import annotations

import difflib
import os
import warnings

from recplug.core.errors import ConfigError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")
FLAGS = (
    "RECPLUG_DEBUG",
    "RECPLUG_DISABLE_PLUGIN_AUTOLOAD",
    "RECPLUG_STRICT_CHECKPOINTS",
    "RECPLUG_STRICT_PLUGINS",
    "RECPLUG_TRACE_PLUGINS",
)
"""Every on/off variable recplug reads."""
VARIABLES = (*FLAGS, "RECPLUG_CACHE", "RECPLUG_DATA_MIRROR", "RECPLUG_LOAD_PLUGINS")
"""Every environment variable recplug reads."""


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


def check_flags() -> None:
    """Refuse a value that is no flag in any of :data:`FLAGS` (:func:`env_flag`'s error), in their order: some are
    read only on a rare path (``RECPLUG_STRICT_CHECKPOINTS`` when a checkpoint's data differs), where a typo would
    otherwise go unnoticed until then, or be blamed on what was being done (a plugin being loaded). Warn of a
    ``RECPLUG_*`` variable that is none of :data:`VARIABLES` (``RECPLUG_STRICT_PLUGIN=1`` did nothing)."""
    for name in FLAGS:
        env_flag(name)
    for name in sorted(os.environ):
        if name.startswith("RECPLUG_") and name not in VARIABLES:  # a misspelt one would be ignored silently
            close = difflib.get_close_matches(name, VARIABLES, n=1)
            warnings.warn(f"{name} is no variable recplug reads" + (f"; did you mean {close[0]}?" if close else
                          f" (it reads {', '.join(VARIABLES)})"), stacklevel=2)
