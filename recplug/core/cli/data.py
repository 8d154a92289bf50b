"""``recplug data``: dataset statistics, conversion and downloads.

    recplug data stats PATH [--json]          users, items, interactions per split, density, modalities, notes
        [--cold-items F --cold-seed S]        the same with the item cold-start split (F of the items held out)
    recplug data convert SRC OUT              any readable dataset (or a raw log, with filtering/split options)
                                              written as an MMRec folder
    recplug data download NAME                fetch and verify a registered dataset into the cache
    recplug data list                         registered datasets

PATH/SRC is a dataset folder (MMRec or LightGCN), a raw CSV/TSV log, ``default`` or a registered name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from recplug.core.cli.boundary import SEED, CommandParser, number_in
from recplug.core.data.dataset import InteractionData
from recplug.core.data.formats.text import separator_option
from recplug.core.errors import ConfigError, RecplugError

if TYPE_CHECKING:
    from recplug.core.data.formats.raw import RawOptions


def _feature_pairs(values: list[str]) -> dict[str, str]:
    """``{modality: file}`` of the ``--feature MODALITY=FILE`` values; a modality that is not a plain name
    (:func:`~recplug.core.data.formats.features.check_modality`) or is given twice is refused."""
    from recplug.core.data.formats.features import check_modality

    pairs: dict[str, str] = {}
    for value in values:
        modality, sep, file = value.partition("=")
        if not sep or not modality or not file:
            raise ConfigError(f"--feature: expected MODALITY=FILE, got {value!r}")
        check_modality(modality, f"--feature {value}")
        if modality in pairs:
            raise ConfigError(f"--feature: modality {modality!r} is given twice ({pairs[modality]} and {file})")
        pairs[modality] = file
    return pairs


RAW_ONLY_BY_SPLIT = {"ratios": ("random", "temporal"), "seed": ("random",)}
"""Raw-log options that only some ``--split`` rules use."""


def _raw_options(args: argparse.Namespace) -> RawOptions:
    """The :class:`RawOptions` of the raw-log options given (``None``: not given, the default holds); an option
    the chosen ``--split`` does not use is refused."""
    from recplug.core.data.formats.raw import RawOptions

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RawOptions) if getattr(args, f.name) is not None}
    split = given.get("split", RawOptions.split)
    for name, splits in RAW_ONLY_BY_SPLIT.items():
        if name in given and split not in splits:
            raise ConfigError(f"--{name}: not used by --split {split} (only by {' and '.join(splits)})")
    if "sep" in given:
        given["sep"] = separator_option(given["sep"])
    if "columns" in given:
        given["columns"] = tuple(given["columns"].split(","))
    if "ratios" in given:
        given["ratios"] = tuple(given["ratios"])
    return RawOptions(**given)


def _refuse_raw_options(args: argparse.Namespace) -> None:
    """Refuse, naming them, raw-log options given for a source that is not a raw log (they would do nothing)."""
    from recplug.core.data.formats.raw import RawOptions

    names = ["feature", *(f.name for f in dataclasses.fields(RawOptions))]
    given = [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) is not None]
    if given:
        what = "a dataset folder" if Path(args.path).is_dir() else "not read as a raw log"
        raise ConfigError(f"{', '.join(given)}: raw-log option(s), but {args.path} is {what}; they do not apply")


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    from recplug.core.data.formats.raw import RawOptions
    from recplug.core.data.resolve import FORMATS

    defaults = RawOptions()  # raw-log options: dests are RawOptions' fields, default None to tell given ones apart
    parser.add_argument("--format", choices=FORMATS, default="auto", help="dataset format (default: detect)")
    parser.add_argument("--valid-ratio", type=number_in(float, 0, 1, high_open=True), default=0.0,
                        help="carve a validation split from train")
    parser.add_argument("--split-seed", type=SEED, default=0, help="seed of --valid-ratio")
    parser.add_argument("--cache-dir", default=None, help="cache (default $RECPLUG_CACHE or ~/.cache/recplug)")
    raw = parser.add_argument_group("raw logs (CSV/TSV)")
    raw.add_argument("--feature", action="append", default=None, metavar="MODALITY=FILE",
                     help="item features keyed by raw item id (.npz ids/features, or CSV/TSV rows id,f1,...)")
    raw.add_argument("--sep", default=None,
                     help="field separator, one character or '\\t' for a tab (default: ',' for .csv, tab otherwise)")
    raw.add_argument("--columns", default=None, help="comma-separated column names when the log has no header")
    raw.add_argument("--user-col", help=f"default {defaults.user_col!r}")
    raw.add_argument("--item-col", help=f"default {defaults.item_col!r}")
    raw.add_argument("--rating-col", help="default 'rating' when the log has it; a column named must be there")
    raw.add_argument("--time-col", help="default 'timestamp' when the log has it; a column named must be there")
    raw.add_argument("--min-rating", type=number_in(float))
    raw.add_argument("--k-core", type=number_in(int, 0), help=f"default {defaults.k_core} (off)")
    raw.add_argument("--split", choices=("random", "loo", "temporal"), help=f"default {defaults.split!r}")
    raw.add_argument("--ratios", type=number_in(float, 0, 1), nargs=3, metavar=("TRAIN", "VALID", "TEST"),
                     help=f"split shares of random and temporal (default {' '.join(map(str, defaults.ratios))})")
    raw.add_argument("--seed", type=SEED, help=f"seed of the random split (default {defaults.seed})")
    raw.add_argument("--missing-features", choices=("error", "drop"), help=f"default {defaults.missing_features!r}")


def _load(args: argparse.Namespace, cached: bool = True) -> InteractionData:
    """The dataset ``args.path`` names; a raw log is processed with the raw-log options, through the processed
    cache when ``cached`` (``stats``), directly otherwise (``convert`` writes its own copy)."""
    from recplug.core.data.formats.raw import process_raw
    from recplug.core.data.formats.text import check_file
    from recplug.core.data.registry import DEFAULT_DATASET
    from recplug.core.data.resolve import carve_validation, load_dataset

    source = Path(args.path)
    if source.is_file() and args.format in ("auto", "raw"):
        options = _raw_options(args)
        features = _feature_pairs(args.feature or [])
        if cached:  # feature paths as given (load_dataset reads relative ones from the log's folder)
            features = {m: str(Path(f).absolute()) for m, f in features.items()}
            return load_dataset(source, features, "raw", args.valid_ratio, args.split_seed, args.cache_dir,
                                raw_options=options)
        data = process_raw(source, features, options)
        return carve_validation(data, args.valid_ratio, args.split_seed) if args.valid_ratio > 0 else data
    if args.path == DEFAULT_DATASET and args.format not in ("auto", "mmrec"):
        raise ConfigError(f"--format {args.format}: {DEFAULT_DATASET!r} is the embedded MMRec dataset")
    if os.path.lexists(source) and not source.is_dir():  # a link leading nowhere, a FIFO: say what it is
        check_file(source, "dataset")
    if args.format != "raw":  # with --format raw, load_dataset says why this is no log
        _refuse_raw_options(args)
    return load_dataset(args.path, None, args.format, args.valid_ratio, args.split_seed, args.cache_dir)


def _print_stats(data: InteractionData) -> None:
    summary = data.summary()
    rows = [("name", summary["name"]), ("source", summary["source"]), ("users", summary["users"]),
            ("items", summary["items"])]
    total = 0
    for split in ("train", "valid", "test"):
        if f"{split}_interactions" in summary:
            count = int(summary[f"{split}_interactions"])
            total += count
            users = int(data.split(split)[0].unique().numel())
            rows.append((f"{split} interactions", f"{count}  ({users} users)"))
    rows.append(("interactions", total))
    rows.append(("density", f"{summary['density']:.6g}"))
    rows.append(("users w/o train", f"{summary['users_without_train']}  (left out of evaluation)"))
    if data.cold_items is not None:
        rows.append(("cold items", f"{summary['cold_items']}  (no training interaction; evaluated as test_cold/...)"))
    modalities = summary["modalities"]
    rows.append(("modalities", ", ".join(f"{m} {tuple(s)}" for m, s in modalities.items()) or "none"))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    notes = summary["notes"] or ["none: nothing dropped or repaired"]
    print(f"{'notes':<{width}}  {notes[0]}")
    for note in notes[1:]:
        print(f"{'':<{width}}  {note}")


def _stats(args: argparse.Namespace) -> int:
    from recplug.core.data.resolve import hold_out_items

    data = _load(args)
    if args.cold_items > 0:
        data = hold_out_items(data, args.cold_items, args.cold_seed)
    if args.json:
        print(json.dumps(data.summary(), indent=2))
    else:
        _print_stats(data)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from recplug.core.data.formats.mmrec import write_mmrec
    from recplug.core.ops.io import atomic_folder, check_can_create

    check_can_create(args.out, "output folder")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: output folder exists and is not empty")
    if args.name is not None and (not args.name or any(c in args.name for c in "/\\\t\n")):
        raise ConfigError(f"--name: expected a file stem without path separators, got {args.name!r}")
    data = _load(args, cached=False)
    data.name = args.name or data.name
    with atomic_folder(out) as tmp:  # a failed write leaves no half-written folder
        write_mmrec(data, tmp)
    print(f"wrote {out} (MMRec format: {data.name}.inter, {len(data.features)} feature files)")
    return 0


def _download(args: argparse.Namespace) -> int:
    from recplug.core.data import registry

    print(registry.fetch(args.name, args.cache_dir, args.mirror, progress=not args.quiet))
    return 0


def _list(args: argparse.Namespace) -> int:
    from recplug.core.data import registry

    for spec in registry.REGISTRY.values():
        stats = ", ".join(f"{k.replace('_interactions', '')} {v}" for k, v in spec.stats.items())
        where = "" if all(f.url for f in spec.files) else f"; from ${registry.MIRROR_ENV} only"
        prepared = "; prepared once by recplug commands" if spec.prepare else ""
        print(f"{spec.name}  ({spec.format}; {stats}{where}{prepared})\n    {spec.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``recplug data`` argument parser."""
    parser = CommandParser(
        prog="recplug data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    stats = commands.add_parser("stats", help="dataset statistics and everything dropped or repaired")
    stats.add_argument("path", help="dataset folder, raw log, 'default' or registered name")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.add_argument("--cold-items", type=number_in(float, 0, 1, high_open=True), default=0.0,
                       help="hold this share of the items out of training (the item cold-start split; 0: off)")
    stats.add_argument("--cold-seed", type=SEED, default=0, help="seed of --cold-items")
    _add_source_options(stats)
    stats.set_defaults(run=_stats)
    convert = commands.add_parser("convert", help="write any readable dataset as an MMRec folder")
    convert.add_argument("path", help="dataset folder, raw log, 'default' or registered name")
    convert.add_argument("out", help="output folder (new or empty)")
    convert.add_argument("--name", default=None, help="dataset name, the stem of <name>.inter (default: the source's)")
    _add_source_options(convert)
    convert.set_defaults(run=_convert)
    download = commands.add_parser("download", help="fetch and verify a registered dataset")
    download.add_argument("name")
    download.add_argument("--cache-dir", default=None)
    download.add_argument("--mirror", default=None, help="folder or URL laid out as <mirror>/<name>/<file>")
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    download.set_defaults(run=_download)
    listing = commands.add_parser("list", help="registered datasets")
    listing.set_defaults(run=_list)
    return parser


def run(argv: list[str]) -> int:
    """Run ``recplug data <argv>``, raising :class:`RecplugError` on bad input (usage errors exit 2); the
    ``recplug`` command's boundary (:mod:`recplug.core.cli.main`) reports it, and dataset preparations run it."""
    args = build_parser().parse_args(argv)
    return args.run(args)


main = run  # the ``recplug`` command's boundary (recplug.core.cli.main) reports its errors
