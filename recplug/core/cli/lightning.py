"""LightningCLI for ``recplug fit|validate|test|predict``: data->model links, the model's evaluation (``--eval.*``),
best-checkpoint testing and one-line config errors. Imported only for those sub-commands (Lightning is slow to import)."""

from __future__ import annotations

import argparse
import atexit
import json
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from jsonargparse import ArgumentError, DefaultHelpFormatter, Namespace
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from recplug.core.cli.boundary import debugging
from recplug.core.cli.commands import COMMANDS
from recplug.core.errors import (
    MAX_SEED, ConfigError, InvalidArgument, ParserError, RecplugError, check_number, one_line,
)
from recplug.core.ops.io import check_can_create
from recplug.core.ops.yaml_file import guard_jsonargparse_yaml, read_yaml, yaml_location


LINKED_MODEL_KEYS = ("num_users", "num_items", "feature_dims")
"""Model arguments the data sets (``add_arguments_to_parser``'s links), never a user's setting."""
COMPONENT_KEYS = {
    "model.fusion": "FusionModule",
    "model.encoders": "GraphEncoder",
    "model.combiner": "Combiner",
    "model.aux_losses": "AuxLoss",
}


def component_choices(base_name: str) -> list[str]:
    """Short names of every loaded, concrete subclass of a component base class (not those of a skipped plugin)."""
    import inspect

    from recplug.core.model import components
    from recplug.core.model.plugins import skipped_modules

    found, stack, skipped = set(), [getattr(components, base_name)], skipped_modules()
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if not inspect.isabstract(cls) and cls.__module__ not in skipped:
            found.add(cls.__name__)
    return sorted(found)


PARSER_KEY = r'Parser key "([^"]+)":?'
"""How jsonargparse names the key at fault, at every level of a nested message."""


def _list_items(text: str) -> list[str]:
    """Top-level items of a printed Python list (``[a, f(b, c), {'d': e}]`` -> 3 items), quotes respected."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return []
    items, depth, quote, start = [], 0, "", 1
    for position, char in enumerate(text[1:-1], 1):
        if quote:
            quote = "" if char == quote and text[position - 1] != "\\" else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:position].strip())
            start = position + 1
    return items + [text[start:-1].strip()]


def _component_key(key: str, message: str) -> str:
    """``model.encoders[1]`` for the item of a component list that failed to parse (the items jsonargparse had
    accepted print as ``Namespace(...)``), else ``key`` itself."""
    given = re.findall(r"^\s*Given value: (.+)$", message, flags=re.MULTILINE)
    items = _list_items(given[-1]) if given else []
    failed = next((i for i, item in enumerate(items) if not item.startswith("Namespace(")), None)
    return f"{key}[{failed}]" if failed is not None else key


def summarize_parser_error(message: str) -> str:
    """One line out of jsonargparse's (often nested, multi-line) message, naming the full key
    (``model.encoders[1].init_args.num_layers``), what was expected and the valid choices."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    summary = lines[0] if lines else "invalid arguments"
    match = re.search(PARSER_KEY, summary)
    key = match.group(1) if match else ""
    base = next((b for k, b in COMPONENT_KEYS.items() if key == k or key.startswith(k + ".")), None)
    nested = re.search(r"Problem with given class_path '([^']+)':\n(.*)", message, flags=re.DOTALL)
    missing = re.search(r"No module named '([^']+)'", message)
    if key and nested and missing:  # nothing to import
        return f"{_component_key(key, message)}: class_path {nested.group(1)!r}: no module named {missing.group(1)!r}"
    requirement = re.search(r"Requirement '([^']+)' not met", message)
    if nested and requirement:  # a Lightning class whose optional package is missing (WandbLogger without wandb)
        where = f"{_component_key(key, message)}: " if key else ""
        return (f"{where}class_path {nested.group(1)!r} needs {requirement.group(1)!r}, which is not installed "
                f"(pip install '{requirement.group(1)}')")
    if key and nested:  # the class resolved; one of its arguments is bad: name it under init_args
        key = f"{_component_key(key, message)}.init_args"
        class_path, message = nested.groups()
        unknown = re.search(r"Option '([^']+)' is not accepted", message)
        if unknown:
            return f"{key}: {class_path.rsplit('.', 1)[-1]} has no argument {unknown.group(1)!r}"
        key = ".".join([key, *re.findall(PARSER_KEY, message)])
    elif base is not None:
        ambiguous = re.search(r"Multiple subclasses with name (\w+)\. Give the full class path to avoid ambiguity: "
                              r"([\w., ]+?)\.?$", message, flags=re.MULTILINE)
        if ambiguous:
            name, paths = ambiguous.groups()
            return f"{key}: {name} is defined by more than one loaded plugin ({paths}); give its full class_path"
        value = re.search(r"Given value: (.+)", message)
        shown = f" {value.group(1).strip()!r}" if value else ""
        return f"{key}: unknown or invalid plugin class{shown}; choose one of: {', '.join(component_choices(base))}"
    expected = re.search(r"Expected an? (.+?)\. Got value: (.+)", message)
    if key and expected:  # e.g. 'Parser key "data.positives":' with the reason on the next line
        wanted, given = expected.groups()
        choices = re.fullmatch(r"typing\.Literal\[(.+)\]", wanted)
        wanted = f"one of {choices.group(1)}" if choices else re.sub(r"<class '(\w+)'>", r"\1", wanted)
        return f"{key}: expected {wanted}, got {given.strip()!r}"
    union = re.search(r"Subtypes: \[(.+?)\]\n.*?Given value: (.+?)$", message, flags=re.DOTALL | re.MULTILINE)
    if key and union:  # e.g. a list[str] | None given 5
        subtypes, given = union.groups()
        named = [re.sub(r"<class '(\w+)'>", r"\1", t).replace("NoneType", "null") for t in _list_items(f"[{subtypes}]")]
        wanted = " or ".join(named)
        return f"{key}: expected {wanted}, got {given.strip()!r}"
    if key and nested:
        return f"{key}: {one_line(re.sub(PARSER_KEY, '', message))}"
    if key and summary == match.group(0) and len(lines) > 1:  # 'Parser key "eval":' with the reason below it
        why = [line.lstrip("- ") for line in lines[2:] if not re.match(r"-? ?Parser key", line)]
        return f"{key}: {lines[1].lstrip('- ')}" + (f" ({why[0]})" if why else "")
    return summary


def _class_entries(value: Any, key: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """``(config key, {"class_path": ..., "init_args": ...})`` of every class entry in a config dict."""
    if isinstance(value, dict):
        if "class_path" in value:
            yield key, value
        for name, item in value.items():
            yield from _class_entries(item, f"{key}.{name}" if key else name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _class_entries(item, f"{key}[{i}]")


def _imported_class(class_path: str) -> object:
    """The object ``class_path`` names in an already imported module (jsonargparse resolved it), else ``None``.
    The path may be a re-export (``recplug.plugins.graphs.UserItemGraph``), not the defining module."""
    module, _, name = class_path.rpartition(".")
    return getattr(sys.modules.get(module), name, None)


def component_key(config: dict[str, Any], error: InvalidArgument) -> str | None:
    """Config key (``model.encoders[1]``) of the component that raised ``error``: the first entry of its class
    whose value for the argument is the one refused."""
    cls = type(error.owner)
    for key, entry in _class_entries(config):
        value: Any = entry.get("init_args") or {}
        for part in error.argument.split("."):  # ``weights.image``: the image weight of ``weights``
            value = value.get(part) if isinstance(value, dict) else None
        same = value == error.value or (value != value and error.value != error.value)  # NaN is NaN
        if _imported_class(entry["class_path"]) is cls and same:
            return key
    return None


def trainer_error(exc: Exception) -> ConfigError:
    """Lightning's message with the Trainer arguments it names in backticks as their config keys
    (```max_epochs` must be ...`` -> ``trainer.max_epochs must be ...``, ```Trainer(devices='0')``` ->
    ``trainer.devices='0'``); prefixed with ``trainer:`` when it names none."""
    import inspect

    arguments = set(inspect.signature(Trainer.__init__).parameters)
    named = re.sub(r"`Trainer\((\w+)=([^`]*)\)`", lambda m: f"trainer.{m.group(1)}={m.group(2)}", str(exc))
    named = re.sub(r"`(\w+)`", lambda m: f"trainer.{m.group(1)}" if m.group(1) in arguments else m.group(0), named)
    return ConfigError(one_line(named if named != str(exc) else f"trainer: {exc}"))


def component_classes(config: dict[str, Any]) -> dict[str, list[str]]:
    """``{key: class names}`` of the model components a config dict builds (``model.encoders`` etc.)."""
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    classes = {}
    for key in COMPONENT_KEYS:
        value = model.get(key.split(".", 1)[1])
        entries = value if isinstance(value, list) else [value] if value else []
        classes[key] = [str(e.get("class_path", "?")).rpartition(".")[2] if isinstance(e, dict) else str(e)
                        for e in entries]
    return classes


def check_same_components(shown: str, checkpoint: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse a checkpoint whose recorded config builds other components than ``config`` (LightGCN weights
    evaluated as MF have the same shapes, so the weights alone cannot tell); a checkpoint without a record passes."""
    recorded = (checkpoint.get("recplug") or {}).get("config")
    if not isinstance(recorded, dict):
        return
    trained, configured = component_classes(recorded), component_classes(config)
    for key in COMPONENT_KEYS:
        if trained[key] != configured[key]:
            raise ConfigError(
                f"ckpt_path {shown}: trained with {key} {trained[key] or 'none'}, but the config has "
                f"{configured[key] or 'none'}; use the config it was trained with (its run's config.yaml)"
            )


def note_checkpoint_settings(shown: str, checkpoint: dict[str, Any], config: dict[str, Any]) -> None:
    """Say on stderr which model settings the checkpoint's ``hyper_parameters`` replace (LightningCLI rebuilds
    the model with the checkpoint's, whatever the config says), so that no given value is dropped silently."""
    model = config.get("model") or {}
    for key, value in (checkpoint.get("hyper_parameters") or {}).items():
        if key in model and key not in LINKED_MODEL_KEYS and model[key] != value:
            print(f"note: model.{key} is {value!r} from ckpt_path {shown} (the config's {model[key]!r} is not "
                  "used)", file=sys.stderr)
    note_component_settings(shown, checkpoint, config)


def note_component_settings(shown: str, checkpoint: dict[str, Any], config: dict[str, Any]) -> None:
    """Say on stderr which components' settings differ from those the checkpoint trained with (its recorded
    config): the weights are used with this config's values (a LightGCN trained with 4 layers propagated over 3),
    which may be meant, so it is a note, not an error."""
    recorded = (checkpoint.get("recplug") or {}).get("config")
    if not isinstance(recorded, dict):
        return
    trained = {key: entry for key, entry in _class_entries(recorded.get("model"), "model")}
    for key, entry in _class_entries(config.get("model"), "model"):
        before = (trained.get(key) or {}).get("init_args") or {}
        for name, value in (entry.get("init_args") or {}).items():
            if name in before and before[name] != value:
                print(f"note: {key}.init_args.{name} is {value!r} here; ckpt_path {shown} trained with "
                      f"{before[name]!r}", file=sys.stderr)


CONFIG_SECTIONS = ("model", "data", "trainer", "checkpoint", "eval", "topk")
"""The top-level keys of a config that hold a mapping of options."""


def check_config_file(path: str) -> None:
    """Refuse, naming the file, what jsonargparse would take silently or crash on: bytes that are not UTF-8, a key
    given twice (the last one would win), a section that is not a mapping (``model: 5``) and a component list
    given as one class name (``encoders: IdEmbedding``), besides YAML syntax errors (file, line and column)."""
    content = read_yaml(path, "config file")
    if isinstance(content, dict):
        odd = [key for key in content if not isinstance(key, str)]
        if odd:
            raise ConfigError(f"{path}: top-level key {odd[0]!r} is not a name (a config key is text, like model:)")
        check_config_sections(content, path)


def dropped_empty_mappings(content: Any, parsed: Any, key: str = "") -> Iterator[str]:
    """Keys of ``content`` (a config file's YAML) whose value holds only empty mappings and that the parsed config
    lacks. jsonargparse flattens a mapping into its keys, so ``bogus: {}`` adds none and is dropped without an
    error at any depth (``trainer.bogus``, a component's ``init_args.bogus``), where ``bogus: 1`` is refused.
    A list is compared item by item where the parsed one has the same length."""
    if isinstance(content, list) and isinstance(parsed, list) and len(content) == len(parsed):
        for index, (item, parsed_item) in enumerate(zip(content, parsed)):
            yield from dropped_empty_mappings(item, parsed_item, f"{key}[{index}]")
    if not isinstance(content, dict) or not isinstance(parsed, (dict, Namespace)):
        return
    for name, value in content.items():
        full = f"{key}.{name}" if key else str(name)
        if name not in parsed:
            if _holds_nothing(value):
                yield full
            continue
        yield from dropped_empty_mappings(value, parsed[name], full)


def option_values(argv: list[str]) -> Iterator[tuple[str, str]]:
    """``(option, value)`` of each ``--option value`` or ``--option=value`` of a command line (an option followed
    by another option has no value)."""
    for index, token in enumerate(argv):
        if not token.startswith("--"):
            continue
        option, equals, value = token.partition("=")
        if equals:
            yield option, value
        elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            yield option, argv[index + 1]


def given_containers(argv: list[str], config: Namespace) -> Iterator[tuple[str, str, str, Any]]:
    """``(option, key, value, content)`` of each command-line option (``--model '{...}'``, ``--model m.yaml``,
    ``--model.encoders '[...]'``) whose value is a mapping or list, or a file holding one, for a key whose parsed
    value is a section or list (``key``: the option's config key, ``trainer.callbacks`` for
    ``--trainer.callbacks+``): what :func:`dropped_empty_mappings` checks as it checks ``--config`` files."""
    for option, value in option_values(argv):
        key = option[2:].removesuffix("+")  # `--trainer.callbacks+={...}` appends to the list
        if option == "--config" or not isinstance(config.get(key), (Namespace, dict, list)):
            continue
        try:
            is_file = Path(value).is_file()
        except OSError:  # a value too long to be a path: a YAML value
            is_file = False
        if is_file:
            content = read_yaml(value, f"file given to {option}")
        else:
            try:
                content = yaml.safe_load(value)
            except yaml.YAMLError:  # jsonargparse took it as text
                continue
        if isinstance(content, (dict, list)):
            yield option, key, value, content


def _holds_nothing(value: Any) -> bool:
    """Is ``value`` a mapping with no value but empty mappings (``{}``, ``{a: {}}``), which jsonargparse drops?"""
    return isinstance(value, dict) and all(_holds_nothing(item) for item in value.values())


def check_config_sections(content: dict[str, Any], where: str) -> None:
    """Refuse, naming ``where`` (a file, or a checkpoint's recorded config), a section that is not a mapping
    (``model: 5``) and a component list given as one class name (``encoders: IdEmbedding``)."""
    for section in CONFIG_SECTIONS:
        if section in content and not isinstance(content[section], dict):
            shown = one_line(repr(content[section]), 80)
            raise ConfigError(f"{where}: {section} must be a mapping of {section} options, got {shown}")
    for key in ("encoders", "aux_losses"):
        value = content.get("model", {}).get(key)
        if isinstance(value, str):
            raise ConfigError(f"{where}: model.{key} must be a list of components (- class_path: {value}), "
                              f"got the string {value!r}")


def output_folders(config: Any, subcommand: str | None) -> Iterator[tuple[str, str]]:
    """``(config key, path)`` of what a run writes: the trainer's root, each logger's ``save_dir``, the checkpoint
    folder, and ``predict``'s top-K file."""
    loggers = config.get("trainer.logger")
    for index, logger in enumerate(loggers if isinstance(loggers, list) else [loggers]):
        save_dir = logger.get("init_args", {}).get("save_dir") if hasattr(logger, "get") else None
        if save_dir is not None:  # '' too: check_can_create refuses it (Path('') is the current folder)
            yield f"trainer.logger{f'[{index}]' if isinstance(loggers, list) else ''}.init_args.save_dir", str(save_dir)
    for key in ("trainer.default_root_dir", "checkpoint.dirpath") + (("topk.output_path",) if subcommand == "predict"
                                                                     else ()):
        if config.get(key) is not None and (config[key] or key != "topk.output_path"):  # TopKWriter names ''
            yield key, str(config[key])


class CommandListFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the description's lines (the list of recplug's own commands) kept as written."""


class RecplugArgumentParser(LightningArgumentParser):
    """Raises a bad config as :class:`ParserError`, one line naming the key (and the valid choices), or the file
    and line of a YAML syntax error, where jsonargparse would print its usage and exit (``RECPLUG_DEBUG=1``:
    jsonargparse's own ``ArgumentError`` with the traceback). Options are given in full."""

    _reading: str | None = None  # the config file being parsed, for YAML syntax errors

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # no abbreviated options: `--seed_ev 3` would set seed_everything past ablate's and benchmark's checks of
        # the overrides they pass on, and a plugin's new option can make an abbreviation mean another key
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_path(self, path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        check_config_file(str(path))
        previous, self._reading = self._reading, str(path)
        try:
            return super().parse_path(path, *args, **kwargs)
        finally:
            self._reading = previous

    def error(self, message: str, ex: Exception | None = None) -> None:  # type: ignore[override]
        if not self.exit_on_error:  # a nested parser: the outer one reports, with the full key
            super().error(message, ex)
        if debugging():
            raise ArgumentError(None, message) from ex
        raise ParserError(self._config_file_problem(message, ex) or summarize_parser_error(message)) from None

    def _config_file_problem(self, message: str, ex: Exception | None) -> str | None:
        """The config file's name with its YAML syntax error's line, or with its wrong top-level shape."""
        if self._reading is None:
            return None
        if message.startswith("Unexpected config"):
            return f"{self._reading}: expected a mapping of config keys (model:, data:, trainer:, ...)"
        cause = ex.__cause__ if ex is not None else None
        return yaml_location(self._reading, cause) if cause is not None else None


def check_nothing_ignored(config: Namespace, given_args: list[str]) -> None:
    """Refuse a config file's or a command-line value's unknown key holding only ``{}``
    (:func:`dropped_empty_mappings`: jsonargparse drops it silently), and a command-line mapping that sets nothing
    (``--model {}``, merged into the value)."""
    for path in config.get("config") or []:
        dropped = next(dropped_empty_mappings(read_yaml(str(path), "config file"), config), None) if path else None
        if dropped is not None:
            raise ConfigError(f"{path}: unknown key {dropped} (holding only empty mappings, it would have been "
                              "ignored)")
    for option, key, value, content in given_containers(given_args, config):
        dropped = next(dropped_empty_mappings(content, config.get(key), key), None)
        if dropped is not None:
            raise ConfigError(f"{option} {value}: unknown key {dropped} (holding only empty mappings, it would "
                              "have been ignored)")
        if any(_holds_nothing(item) for item in (content if isinstance(content, list) else [content])):
            raise ConfigError(f"{option} {value}: sets nothing (an empty mapping, merged into the value); give "
                              "the settings to change, or leave the option out")


def _is_zero(value: Any) -> bool:
    """Is ``value`` a zero count or duration: ``0``, ``"00:00:00:00"`` or ``{"seconds": 0}`` (``trainer.max_time``)?"""
    if isinstance(value, str):
        parts = value.split(":")
        return all(part.strip().isdigit() and int(part) == 0 for part in parts)
    if isinstance(value, dict):
        return bool(value) and all(isinstance(v, (int, float)) and v == 0 for v in value.values())
    return value == 0 and not isinstance(value, bool)


def check_monitors(config: Namespace, subcommand: str | None) -> None:
    """Refuse a monitor (of ``checkpoint`` or of any callback, e.g. ``EarlyStopping``) the evaluator never logs,
    a test metric or an unvalidated one monitored in training, a ``fit`` that would train nothing, keep no
    best-validation checkpoint (``save_top_k: 0``) or validate never, and a callback's negative ``patience`` or
    unknown ``mode``."""
    from recplug.core.eval.metrics import check_metric_args

    ks, metrics = check_metric_args(config["eval.ks"], config["eval.metrics"], "eval.")
    logged = {f"{stage}/{m}@{k}" for stage in ("val", "test") for m in metrics for k in ks}
    monitors = {"checkpoint.monitor": config.get("checkpoint.monitor")}
    training = subcommand in ("fit", None)  # None: built to be fit by ablate, tune or benchmark
    if subcommand == "fit" and monitors["checkpoint.monitor"] and config.get("checkpoint.save_top_k") == 0:
        raise ConfigError("checkpoint.save_top_k is 0: no best-validation checkpoint would be kept, so the test "
                          "after fit would read the last epoch's weights; keep it >= 1 (or -1 for all)")
    every = config.get("trainer.check_val_every_n_epoch")
    if every is not None:  # Lightning divides by it mid-training
        check_number("trainer", "check_val_every_n_epoch", every, 1)
    if subcommand == "fit" and not config.get("trainer.fast_dev_run"):
        for key in ("trainer.max_epochs", "trainer.max_steps", "trainer.limit_train_batches", "trainer.max_time"):
            if _is_zero(config.get(key)):
                raise ConfigError(f"{key} is 0: fit would train nothing and test the initial, untrained weights")
        epochs = config.get("trainer.max_epochs")
        if monitors["checkpoint.monitor"] and every is not None and epochs is not None and 0 < epochs < every:
            raise ConfigError(f"trainer.check_val_every_n_epoch is {every} but trainer.max_epochs {epochs}: no "
                              "validation would run, so no best-validation checkpoint would be kept for the test")
    for i, callback in enumerate(config.get("trainer.callbacks") or []):
        init_args = callback.get("init_args") if hasattr(callback, "get") else None
        if init_args is None:
            continue
        key = f"trainer.callbacks[{i}].init_args"
        if init_args.get("monitor"):
            monitors[f"{key}.monitor"] = init_args.get("monitor")
        if init_args.get("patience") is not None:  # EarlyStopping takes any int, and a negative one stops at once
            check_number(key, "patience", init_args.get("patience"), 0)
        if init_args.get("mode") is not None and init_args.get("mode") not in ("min", "max"):
            raise ConfigError(f"{key}.mode must be 'min' or 'max', got {init_args.get('mode')!r}")
    no_validation = config.get("trainer.limit_val_batches") == 0
    for key, monitor in monitors.items():
        if monitor and monitor.split("/")[0] in ("val", "test") and monitor not in logged:
            raise ConfigError(
                f"{key} is {monitor!r}, which the evaluator never logs "
                f"(eval.ks={config['eval.ks']}, eval.metrics={config['eval.metrics']}); change one of them"
            )
        if training and monitor and monitor.startswith("test/"):
            raise ConfigError(f"{key} is {monitor!r}: training never evaluates the test split, and choosing an "
                              "epoch on it would select on test; monitor a val/ metric")
        if training and monitor and monitor.startswith("val/") and no_validation:
            raise ConfigError(f"trainer.limit_val_batches is 0: no validation would run, so {key} {monitor!r} "
                              "is never logged")


class RecplugCLI(LightningCLI):
    """LightningCLI with the data->model links, the model's evaluation at ``eval`` and best-checkpoint testing."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        from recplug.core.eval.evaluator import RankingEvaluation, TopKWriter

        parser.link_arguments("data.num_users", "model.num_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.num_items", apply_on="instantiate")
        parser.link_arguments("data.feature_dims", "model.feature_dims", apply_on="instantiate")
        parser.add_class_arguments(RankingEvaluation, "eval")  # the user-facing keys --eval.ks/metrics/search
        parser.link_arguments("eval", "model.evaluation", apply_on="instantiate")
        parser.add_lightning_class_args(TopKWriter, "topk")  # acts only in `recplug predict`
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/recall@20",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}",
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, keeping the command line for :meth:`before_instantiate_classes`' check of its values."""
        self.given_args = [str(arg) for arg in (sys.argv[1:] if args is None else args)] if (
            args is None or isinstance(args, list)) else []
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Open ``ckpt_path`` through recplug's checkpoint opener before Lightning's own pre-check (which reads
        local files only, with a traceback for a broken one): a URL is downloaded into a temporary file, a broken,
        foreign or unsafe file is refused in one line, and ``weights_only: false`` is refused. A checkpoint of other
        components than the config's is refused; the model settings Lightning then takes from the checkpoint are
        noted where they differ from the config's; ``last`` outside ``fit`` needs a last checkpoint to exist."""
        from recplug.core.model.checkpoint import (
            TRAINER_KEYWORDS, local_checkpoint, open_checkpoint, refuse_unsafe_loading,
        )

        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        shown = ""
        if config is not None:
            refuse_unsafe_loading(config.get("weights_only"))
            ckpt_path = config.get("ckpt_path")
            shown = str(ckpt_path)  # a URL stays named as given, not by its downloaded copy
            if ckpt_path is not None and not str(ckpt_path).strip():
                raise ConfigError("ckpt_path is empty; give a checkpoint's path or URL, or leave it out")
            if ckpt_path is None and subcommand in EVALUATING_COMMANDS:
                print(f"note: no --ckpt_path: recplug {subcommand} uses the model's initial weights, untrained",
                      file=sys.stderr)
            if ckpt_path in ("best", "hpc", "registry") and subcommand != "fit":
                raise ConfigError(f"ckpt_path {ckpt_path}: `recplug {subcommand}` trains nothing, so there is no "
                                  f"{ckpt_path} checkpoint of this run; give the checkpoint's path")
            if ckpt_path == "last" and subcommand != "fit":
                folder = config.get("checkpoint.dirpath")
                if not folder or not any(Path(folder).glob("last*.ckpt")):
                    raise ConfigError(
                        f"ckpt_path last: no last checkpoint in checkpoint.dirpath ({folder or 'not set'}), and "
                        f"`recplug {subcommand}` trains none; give the checkpoint's path"
                    )
            if ckpt_path and str(ckpt_path) not in TRAINER_KEYWORDS:
                config["ckpt_path"] = str(local_checkpoint(ckpt_path))
                # Lightning's pre-check below loads it again, unguarded
                checkpoint = open_checkpoint(config["ckpt_path"], shown=shown)
                if "pytorch-lightning_version" not in checkpoint:  # Lightning's loader reads it unguarded
                    raise ConfigError(f"ckpt_path {shown}: malformed checkpoint: no 'pytorch-lightning_version' "
                                      "(not written by a Lightning Trainer)")
                settings = config.as_dict()
                check_same_components(shown, checkpoint, settings)
                note_checkpoint_settings(shown, checkpoint, settings)
        try:
            super()._parse_ckpt_path()
        except ParserError as exc:
            raise ConfigError(f"ckpt_path {shown}: its hyper_parameters do not fit this config: {exc}") from None

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """LightningCLI's optimiser and scheduler sections; a ``lr_scheduler`` without an ``optimizer`` section
        schedules the model's own optimiser (Adam, or LazyAdam when sampled; Lightning ignored it without a word)."""
        super()._add_configure_optimizers_method_to_model(subcommand)
        config = self.config_init.get(subcommand) if subcommand else self.config_init
        scheduler = config.get("lr_scheduler") if config is not None else None
        if not scheduler or config.get("optimizer"):
            return
        from types import MethodType

        from pytorch_lightning.cli import instantiate_class

        own = self.model.configure_optimizers

        def configure(model: Any) -> Any:
            optimizer = own()
            return LightningCLI.configure_optimizers(model, optimizer, instantiate_class(optimizer, scheduler))

        self.model.configure_optimizers = MethodType(configure, self.model)

    def _set_seed(self) -> None:
        """Lightning's seeding, with a seed numpy would refuse named by its key."""
        seed = self._get(self.config, "seed_everything")
        if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed_everything must be true, false or in [0, {MAX_SEED}], got {seed}")
        super()._set_seed()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with checkpoint loading routed through :class:`WeightsOnlyCheckpointIO`."""
        from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

        from recplug.core.model.checkpoint import WeightsOnlyCheckpointIO

        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is not TorchCheckpointIO:
            raise ConfigError(
                f"trainer.plugins: a custom CheckpointIO ({type(trainer.strategy.checkpoint_io).__name__}) is not "
                "supported: recplug opens checkpoints weights-only (docs/security.md)"
            )
        trainer.strategy.checkpoint_io = WeightsOnlyCheckpointIO()
        return trainer

    def instantiate_classes(self) -> None:
        """LightningCLI's instantiation, with recplug's errors taken out of jsonargparse's wrappers and named by
        their config key: a component's :class:`InvalidArgument` by where the config puts it
        (``model.encoders[1].init_args.num_layers``), a Trainer misconfiguration by ``trainer.<argument>``."""
        try:
            super().instantiate_classes()
        except Exception as exc:
            named = self._named_error(exc)
            if named is None:
                raise
            raise named from exc

    def _named_error(self, exc: Exception) -> Exception | None:
        """The error to report instead of ``exc`` (``None``: ``exc`` itself)."""
        from lightning_fabric.utilities.exceptions import MisconfigurationException

        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, RecplugError):
            cause = cause.__cause__
        if isinstance(cause, InvalidArgument) and not isinstance(cause.owner, str):
            config = self.config.get(self.subcommand) if self.subcommand else self.config
            key = component_key(config.as_dict(), cause)
            return cause.at(key) if key else cause
        if cause is not None:
            return None if cause is exc else cause
        if isinstance(exc, MisconfigurationException):
            return trainer_error(exc)
        if isinstance(exc, ValueError) and "Requirement '" in str(exc) and "Problem with given class_path" in str(exc):
            return ConfigError(summarize_parser_error(str(exc)))  # a class whose optional package is missing
        return None

    def before_instantiate_classes(self) -> None:
        """Refuse a setting that would be ignored (:func:`check_nothing_ignored`) and a monitor the evaluator never
        logs (:func:`check_monitors`); check the output folders; and resuming (``fit --ckpt_path
        .../checkpoints/last.ckpt``) keeps checkpointing in that folder, so the restored best-validation tracking
        stays valid."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        check_nothing_ignored(config, self.given_args)
        check_monitors(config, self.subcommand)
        for key, path in output_folders(config, self.subcommand):  # before any work, not at the first write
            check_can_create(path, key)
        ckpt_path = config.get("ckpt_path") if self.subcommand == "fit" else None
        if ckpt_path and not config.get("checkpoint.dirpath") and Path(ckpt_path).parent.name == "checkpoints":
            config["checkpoint.dirpath"] = str(Path(ckpt_path).parent)

    def before_fit(self) -> None:
        from recplug.core.model.provenance import provenance

        config = self.config[self.subcommand].as_dict()
        record = provenance(config, self.datamodule.data, config.get("seed_everything") or 0)
        # saved in every checkpoint; `recplug export|serve` and `Recommender` rebuild the model from its config
        self.model.run_provenance = {**record, "config": json.loads(json.dumps(config, default=str))}
        print("plugins: " + ", ".join(record["plugins"]), file=sys.stderr)

    def after_fit(self) -> None:
        """Report test metrics at the best-validation epoch (the field's protocol)."""
        trainer = self.trainer
        if trainer.interrupted:
            return
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, weights_only=True)


# Lightning advice that does not apply: batches are slices of in-memory tensors (no worker processes needed),
# and the BPR iterable's __len__ is exact per process (it shards itself).
HARMLESS_WARNINGS = (
    r".*args parameter is intended to run from within Python.*",  # main() passes the command line, rewritten
    r".*does not have many workers.*",
    r".*`IterableDataset` has `__len__` defined.*",
    r".*smaller than the logging interval.*",
)


EVALUATING_COMMANDS = ("validate", "test", "predict")
RUN_ONLY_KEYS = ("config", "ckpt_path", "weights_only")
"""Keys of a recorded ``fit`` config that belong to the sub-command, not to the model, data or trainer."""
RECORDED_SECTIONS = ("seed_everything", "model", "data", "eval", "topk", "optimizer", "lr_scheduler")
"""What a command that rebuilds a run from a checkpoint's recorded config takes from it: the model, its data and
evaluation, and the seed. Not ``trainer`` or ``checkpoint``, which say how and where that run ran and wrote (its
logger, callbacks, profiler, root folder, devices): a crafted record would choose where the command writes. The
defaults, or the command line, apply."""
RECORDED_OUTPUT_KEYS = ("topk.output_path", "data.cache_dir")
"""Places in :data:`RECORDED_SECTIONS` a run wrote to, also left out."""


def recorded_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's recorded ``fit`` config as settings to rebuild its model and data with: its
    :data:`RECORDED_SECTIONS` without :data:`RECORDED_OUTPUT_KEYS`."""
    from recplug.core.model.provenance import without_keys

    return without_keys({key: value for key, value in config.items() if key in RECORDED_SECTIONS},
                        RECORDED_OUTPUT_KEYS)


def with_recorded_config(args: list[str]) -> list[str]:
    """``args`` of ``recplug validate|test|predict --ckpt_path X`` without a ``--config``, given the config recorded
    in X as the first ``--config`` (as ``recplug export``, ``serve`` and ``Recommender`` rebuild a model; a note
    says so on stderr; a URL is downloaded once, for this and for the weights). Any other ``args`` as
    they are; a checkpoint that records no config too (the parser then names what differs)."""
    if not args or args[0] not in EVALUATING_COMMANDS:
        return args
    if any(arg in ("-c", "--config") or arg.startswith("--config=") for arg in args):
        return args
    given = [value for option, value in option_values(args) if option == "--ckpt_path"]
    location = given[-1] if given else None  # the one the parser keeps: the last
    from recplug.core.model.checkpoint import TRAINER_KEYWORDS, local_checkpoint, open_checkpoint

    if not location or not location.strip() or location in TRAINER_KEYWORDS:
        return args
    local = local_checkpoint(location, keep_for_next=True)  # the parser's `_parse_ckpt_path` takes this download
    recorded = (open_checkpoint(local, shown=location).get("recplug") or {}).get("config")
    if not isinstance(recorded, dict):
        return args
    check_config_sections(recorded, f"{location}: its recorded config")
    folder = Path(tempfile.mkdtemp(prefix="recplug-config-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    config = folder / f"{Path(location.split('?')[0]).name}.config.yaml"
    config.write_text(yaml.safe_dump(recorded_settings(recorded), sort_keys=False))
    data_path = (recorded.get("data") or {}).get("path")  # check_config_sections: a mapping when given
    print(f"note: no --config: recplug {args[0]} uses the model, data (data.path {data_path}) and evaluation "
          f"settings recorded in {location}; not its trainer, logger, checkpoint, top-k file or cache settings (the "
          "defaults apply)", file=sys.stderr)
    return [args[0], "--config", str(config), *args[1:]]


def run_cli(args: list[str] | None, **kwargs: Any) -> RecplugCLI:
    """Build the LightningCLI on ``args`` (plugins are loaded first, so short class names resolve)."""
    from recplug.core.data.datamodule import RecDataModule
    from recplug.core.model.module import RecModule
    from recplug.core.model.plugins import load_plugins

    load_plugins()
    guard_jsonargparse_yaml()
    # deterministic kernels, but no NaN-fill of every torch.empty (a debugging aid for ops that read memory they
    # never wrote; it cost 9% of a sampled step at bench/scale.py's l size, docs/scaling.md)
    torch.utils.deterministic.fill_uninitialized_memory = False
    for harmless in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=harmless)
    return RecplugCLI(
        RecModule,
        RecDataModule,
        parser_class=RecplugArgumentParser,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            "max_epochs": 100,
            "num_sanity_val_steps": 0,
            # same seed -> same weights, metrics and top-K on CPU; on GPU, ops without a deterministic kernel warn
            "deterministic": "warn",
        },
        parser_kwargs={
            "description": "recplug: plugin-based recommendation.\n\nfit, validate, test and predict train and "
            "evaluate (`recplug fit --help`). recplug's own commands (each with --help):\n"
            + "\n".join(f"  {name:<10} {command.summary}" for name, command in COMMANDS.items()),
            "formatter_class": CommandListFormatter,
        },
        args=args,
        **kwargs,
    )
