"""Plugin discovery and the per-model plugin manager.

Two kinds of plugin, loaded through one path:

* *plugin modules*: recplug's built-ins (``BUILTIN_PLUGINS``) and third-party modules named by entry points in
  the ``recplug`` group. Importing one makes its component classes resolvable by short name in YAML/CLI
  (jsonargparse only resolves classes already imported), and its module-level ``recplug_*`` functions are
  registered on every model's manager.
* *components*: the ``nn.Module`` instances the config chose (fusion, encoders, combiner, aux losses),
  registered on the model's own :class:`RecplugPluginManager` under their config key.

Environment: ``RECPLUG_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry points; ``RECPLUG_LOAD_PLUGINS=a,b`` loads only
the named entry points (a name no installed entry point has is warned about); ``RECPLUG_STRICT_PLUGINS=1`` turns a
broken plugin, or such a name, into an error; ``RECPLUG_TRACE_PLUGINS=1`` prints every hook call. The on/off ones
take ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (:func:`~recplug.core.ops.environment.env_flag`).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterator

import pluggy

from recplug import hookspecs
from recplug.core.errors import ConfigError, PluginError, one_line
from recplug.core.ops.environment import env_flag

BUILTIN_PLUGINS: tuple[str, ...] = (
    "recplug.plugins.combine",
    "recplug.plugins.embedding",
    "recplug.plugins.fusion.concat",
    "recplug.plugins.fusion.sum",
    "recplug.plugins.fusion.rca",
    "recplug.plugins.fusion.gmu",
    "recplug.plugins.fusion.tokens",
    "recplug.plugins.graphs.user_item",
    "recplug.plugins.graphs.item_item",
    "recplug.plugins.graphs.ngcf",
    "recplug.plugins.losses.infonce",
    "recplug.plugins.losses.l2",
    "recplug.plugins.losses.content_bpr",
    "recplug.plugins.losses.ultragcn",
)
ENTRY_POINT_GROUP = "recplug"
HOOK_PREFIX = "recplug_"
AUTOLOAD_OFF_ENV = "RECPLUG_DISABLE_PLUGIN_AUTOLOAD"
ALLOW_ENV = "RECPLUG_LOAD_PLUGINS"
STRICT_ENV = "RECPLUG_STRICT_PLUGINS"
TRACE_ENV = "RECPLUG_TRACE_PLUGINS"


class RecplugPluginManager(pluggy.PluginManager):
    """A pluggy manager that only looks at ``recplug_*`` attributes.

    Components are ``nn.Module``s with large ``dir()``s and properties that must not be read (pytest filters by
    prefix for the same reason). Any ``recplug_*`` callable is a hook implementation, decorated or not.
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs.RecplugSpecs)
        if env_flag(TRACE_ENV):
            self.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
            self.enable_tracing()

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        if not name.startswith(HOOK_PREFIX):
            return None
        method = inspect.getattr_static(plugin, name, None)
        if isinstance(method, (staticmethod, classmethod)):
            method = method.__func__
        if not callable(method):
            return None
        opts = getattr(method, hookspecs.PROJECT + "_impl", None)
        if opts is not None:
            return opts
        return pluggy.HookimplOpts(
            wrapper=False, hookwrapper=False, optionalhook=False, tryfirst=False, trylast=False, specname=None
        )

    def providers(self, hook_name: str) -> list[str]:
        """Names of the registered plugins implementing ``hook_name``, in registration order."""
        return [self.get_name(impl.plugin) for impl in getattr(self.hook, hook_name).get_hookimpls()]

    def check_pending(self) -> None:
        """Refuse a ``recplug_*`` attribute that names no hook (a typo such as ``recplug_set_up`` would silently
        never run): :class:`PluginError` naming the plugin (config key and class, or module), the name and the
        closest hook."""
        callers = {name: caller for name, caller in vars(self.hook).items() if not name.startswith("_")}
        known = sorted(name for name, caller in callers.items() if caller.has_spec())
        for name, caller in callers.items():
            if caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                plugin = impl.plugin
                owner = impl.plugin_name if isinstance(plugin, (ModuleType, type)) else (
                    f"{impl.plugin_name} ({type(plugin).__name__})"
                )
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise PluginError(
                    f"{owner} defines {name}, which is no recplug hook{hint}; rename it "
                    f"(the hooks are {', '.join(known)})"
                )


def hooks_implemented(obj: Any) -> list[str]:
    """Names of the hooks a module, class or instance implements (by the same rule the manager uses)."""
    pm = RecplugPluginManager()
    names = []
    for attr in dir(obj):
        if attr.startswith(HOOK_PREFIX) and pm.parse_hookimpl_opts(obj, attr) is not None:
            if hasattr(pm.hook, attr):
                names.append(attr)
    return sorted(names)


# ---------------------------------------------------------------------------- discovery
@dataclass
class LoadedPlugin:
    """One plugin module: where it came from and what it contributes (``recplug plugins`` prints these)."""

    name: str
    module_name: str
    distribution: str
    version: str
    status: str  # "active", "skipped", "disabled"
    hooks: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    error: str = ""
    module: ModuleType | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "module"}


_LOADED: dict[str, LoadedPlugin] | None = None


def _components_of(module: ModuleType) -> list[type]:
    from recplug.core.model.components import RecComponent

    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, RecComponent)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]


def _validate(module: ModuleType) -> tuple[list[str], list[str]]:
    """Register the module and its component classes on a scratch manager, so signature errors surface now."""
    pm = RecplugPluginManager()
    pm.register(module, name=module.__name__)
    hooks = set(hooks_implemented(module))
    classes = _components_of(module)
    for cls in classes:
        pm.register(cls, name=f"{module.__name__}.{cls.__name__}")
        hooks.update(hooks_implemented(cls))
    pm.check_pending()
    return sorted(hooks), [cls.__name__ for cls in classes]


def _load_one(name: str, import_target: Any, distribution: str, version: str, strict: bool) -> LoadedPlugin:
    record = LoadedPlugin(name, "", distribution, version, "active")
    try:
        module = import_target()
        if not isinstance(module, ModuleType):  # its methods would be registered unbound on every model
            record.module_name = getattr(module, "__module__", "")
            named = "the class" if inspect.isclass(module) else f"a {type(module).__name__}"
            raise PluginError(f"its entry point names {named} {getattr(module, '__name__', module)!r}, not a module; "
                              "name the module that defines the components (package.module)")
        record.module, record.module_name = module, module.__name__
        record.hooks, record.components = _validate(module)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a broken third-party plugin must not take the CLI down, even by sys.exit()
        record.status = "skipped"
        detail = f"it called sys.exit({exc.code!r}) at import" if isinstance(exc, SystemExit) else one_line(exc)
        record.error = f"{type(exc).__name__}: {detail}"
        message = f"recplug: plugin {name!r} from distribution {distribution} {version} failed to load: {record.error}"
        if strict:
            raise PluginError(message) from exc
        warnings.warn(message + f" (skipped; set {STRICT_ENV}=1 to make this an error)", stacklevel=2)
    return record


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> Any:
    """``ep.load()``, refusing first a value that is not ``module`` or ``module:attribute`` (``empty =``), on which
    ``load`` fails with ``'NoneType' object has no attribute 'group'``."""
    if importlib.metadata.EntryPoint.pattern.match(ep.value) is None:
        raise PluginError(f"its entry point value {ep.value!r} names no module (expected package.module)")
    return ep.load()


def _entry_points() -> Iterator[tuple[importlib.metadata.EntryPoint, importlib.metadata.Distribution]]:
    """The ``recplug`` entry points with their distributions. A distribution found twice on ``sys.path`` (an
    editable install run from its source folder) counts once, the first found, as ``importlib.metadata.entry_points``
    counts it: its entry points are not a second plugin of the same name."""
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()  # PEP 503's normalised name
        if name in seen:
            continue
        seen.add(name)
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                yield ep, dist


def load_plugins(strict: bool | None = None, reload: bool = False) -> dict[str, LoadedPlugin]:
    """Import the built-in and entry-point plugin modules, once; return them by plugin name.

    A plugin that fails to import, or whose hook implementations do not match the specs, is reported with its
    distribution and skipped (or raises :class:`PluginError` when ``strict``). A second plugin with a name
    already taken, or naming a module another plugin loaded, is rejected the same way, and so is a name in
    ``RECPLUG_LOAD_PLUGINS`` that no installed entry point has (:class:`ConfigError` when ``strict``).
    ``strict=None``: ``RECPLUG_STRICT_PLUGINS``.
    """
    global _LOADED
    if _LOADED is not None and not reload:
        return _LOADED
    if strict is None:
        strict = env_flag(STRICT_ENV)
    env_flag(TRACE_ENV)  # read by each plugin's scratch manager: a bad value must not fail the first plugin
    from recplug import __version__

    loaded: dict[str, LoadedPlugin] = {}
    for module_name in BUILTIN_PLUGINS:
        # built-ins must load: a failure here is a bug in recplug, so it always raises
        loaded[module_name] = _load_one(
            module_name, lambda m=module_name: importlib.import_module(m), "recplug", __version__, strict=True
        )
    allow = os.environ.get(ALLOW_ENV)
    if env_flag(AUTOLOAD_OFF_ENV):
        if allow is not None:
            warnings.warn(f"recplug: {ALLOW_ENV}={allow!r} is ignored: {AUTOLOAD_OFF_ENV} turns every entry-point "
                          "plugin off", stacklevel=2)
    else:
        allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
        installed: list[str] = []
        for ep, dist in _entry_points():
            installed.append(ep.name)
            dist_name, dist_version = dist.metadata["Name"], dist.version
            if allowed is not None and ep.name not in allowed:
                loaded.setdefault(ep.name, LoadedPlugin(ep.name, ep.value, dist_name, dist_version, "disabled"))
                continue
            if ep.name in loaded:
                other = loaded[ep.name]
                message = (
                    f"recplug: plugin name {ep.name!r} from {dist_name} {dist_version} conflicts with "
                    f"{other.distribution} {other.version}; rename one entry point"
                )
                if strict:
                    raise PluginError(message)
                warnings.warn(message + " (the second one is skipped)", stacklevel=2)
                continue
            record = _load_one(ep.name, lambda ep=ep: _load_entry_point(ep), dist_name, dist_version, strict)
            _skip_a_module_loaded_twice(record, loaded, strict)
            loaded[ep.name] = record
            _warn_of_taken_names(record, loaded, strict)
        if allowed is not None:
            _check_allow_list(allowed, installed, strict)
    _LOADED = loaded
    return loaded


def _check_allow_list(allowed: set[str], installed: list[str], strict: bool) -> None:
    """Warn (``strict``: raise) when ``RECPLUG_LOAD_PLUGINS`` names no plugin, or a name no installed entry point
    has (a typo would otherwise silently turn every entry-point plugin off)."""
    unknown = sorted(allowed - set(installed))
    if allowed and not unknown:
        return
    available = f"installed: {', '.join(sorted(set(installed)))}" if installed else "none is installed"
    if unknown:
        message = f"{ALLOW_ENV} names {', '.join(map(repr, unknown))}, which no installed entry-point plugin has"
    else:
        message = (f"{ALLOW_ENV} is empty, so no entry-point plugin is loaded; unset it to load them all, or set "
                   f"{AUTOLOAD_OFF_ENV}=1 to load none")
    message = f"{message} ({available})"
    if strict:
        raise ConfigError(message)
    warnings.warn(f"recplug: {message}", stacklevel=3)


def _skip_a_module_loaded_twice(record: LoadedPlugin, loaded: dict[str, LoadedPlugin], strict: bool) -> None:
    """Skip with a warning (``strict``: raise) a plugin whose module another active plugin already loaded (a
    built-in, or one module behind two entry points): a manager registers a module once, so every model's would
    refuse the second."""
    if record.status != "active":
        return
    other = next((p for p in loaded.values() if p.status == "active" and p.module is record.module), None)
    if other is None:
        return
    message = (
        f"recplug: plugin {record.name!r} from {record.distribution} {record.version} names module "
        f"{record.module_name}, which plugin {other.name!r} from {other.distribution} {other.version} already loaded; "
        "remove one entry point"
    )
    if strict:
        raise PluginError(message)
    warnings.warn(message + " (the second one is skipped)", stacklevel=3)
    record.status, record.error = "skipped", f"module {record.module_name} is already loaded as plugin {other.name!r}"


def _warn_of_taken_names(record: LoadedPlugin, loaded: dict[str, LoadedPlugin], strict: bool) -> None:
    """Warn (``strict``: raise) when a plugin's component has the class name of another loaded plugin's: configs
    name components by class name, and that name, in a shipped bundle too, is then ambiguous."""
    for other in loaded.values():
        if other is record or other.status != "active" or record.status != "active":
            continue
        for taken in sorted(set(record.components) & set(other.components)):
            paths = dict.fromkeys(f"{module}.{taken}" for module in (record.module_name, other.module_name))
            message = (
                f"recplug: plugin {record.name!r} from {record.distribution} {record.version} defines {taken}, as "
                f"{other.module_name} ({other.distribution} {other.version}) does: a config naming {taken} must now "
                f"give its full class_path ({' or '.join(paths)}); rename the plugin's class"
            )
            if strict:
                raise PluginError(message)
            warnings.warn(message, stacklevel=3)


def skipped_modules() -> set[str]:
    """The modules of plugins that imported but were skipped (their classes are importable, not usable), less
    those another plugin loaded (a second entry point of an active module)."""
    plugins = load_plugins().values()
    active = {p.module_name for p in plugins if p.status == "active"}
    return {p.module_name for p in plugins if p.status == "skipped" and p.module_name} - active


def component_class(base: type, name: str, key: str) -> type:
    """The concrete ``base`` subclass called ``name`` that exactly one loaded plugin module provides.

    How the core names a default component (``RecModule``'s ``IdEmbedding`` and ``SumCombiner``) without importing
    the plugin that defines it; :class:`PluginError` naming the config ``key`` to set when none or several match.
    """
    found = [
        getattr(p.module, name)
        for p in load_plugins().values()
        if p.status == "active" and p.module is not None and name in p.components
    ]
    found = [cls for cls in found if issubclass(cls, base)]
    if len(found) != 1:
        where = ", ".join(f"{cls.__module__}.{cls.__qualname__}" for cls in found) or "none"
        raise PluginError(
            f"{key}: its default, the {base.__name__} {name!r}, must come from exactly one loaded plugin "
            f"(found: {where}); set {key}"
        )
    return found[0]


def active_plugin_modules() -> list[tuple[str, ModuleType]]:
    """(name, module) of every successfully loaded plugin module."""
    return [(p.name, p.module) for p in load_plugins().values() if p.status == "active" and p.module is not None]


def plugin_provenance() -> list[str]:
    """``"distribution version"`` of every active plugin module (recplug itself included), for logs and checkpoints."""
    seen = sorted(
        {f"{p.distribution} {p.version}" for p in load_plugins().values() if p.status == "active"}
    )
    return seen
