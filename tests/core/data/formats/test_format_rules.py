"""Rules every format reader and writer shares: numbers are plain decimal numbers, modality names are plain file
names, and a folder recplug wrote lists every id in its maps, so nothing is misread, escapes the folder or is lost."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from recplug.core.data.dataset import DataError, InteractionData
from recplug.core.data.formats.features import read_keyed_features
from recplug.core.data.formats.mmrec import read_mmrec, write_mmrec
from recplug.core.data.formats.raw import RawOptions, process_raw
from recplug.core.data.resolve import load_dataset
from recplug.core.errors import ConfigError


@pytest.mark.parametrize("value", ["1_0", "\u0663", "\uff11", "0x10", "1e", ""])
@pytest.mark.parametrize("column", ["rating", "timestamp"])
def test_raw_numbers_are_plain_decimal_numbers(tmp_path: Path, value: str, column: str) -> None:
    """``float()`` reads ``1_0`` as 10 and ``\\u0663`` as 3: either would pass ``min_rating`` or order by time
    silently wrong."""
    rows = ["user,item,rating,timestamp", "u0,i0, 4 ,\t1", "u0,i1,5,2"]
    rows.append("u1,i0,{},3".format(value) if column == "rating" else "u1,i0,3,{}".format(value))
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        process_raw(tmp_path / "log.csv", options=RawOptions(min_rating=5))
    assert str(info.value) == f"{tmp_path / 'log.csv'}:4: field {column!r} must be a number, got {value!r}"


@pytest.mark.parametrize("value", ["1_0", "\u0663"])
@pytest.mark.parametrize("line", [1, 2])
def test_keyed_feature_values_are_plain_decimal_numbers(tmp_path: Path, value: str, line: int) -> None:
    """Also on the first line, which is a header only when ``float()`` cannot read it either."""
    rows = ["i0,1.5,2", "i1,3,4"]
    rows[line - 1] = rows[line - 1].replace("1.5" if line == 1 else "3", value)
    (tmp_path / "f.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_keyed_features(tmp_path / "f.csv", "text")
    assert str(info.value) == f"{tmp_path / 'f.csv'}:{line}: feature values must be numbers, got {value!r}"
    (tmp_path / "h.csv").write_text("id,f1,f2\ni0, 1 ,2\n")
    assert read_keyed_features(tmp_path / "h.csv", "text")[0] == ["i0"]


def modality_entries(tiny_data: InteractionData, tmp_path: Path, modality: str) -> tuple[Path, Any, Any]:
    """``(an MMRec folder, a call of process_raw, a call of write_mmrec)``, the two calls naming ``modality``."""
    np.savez(tmp_path / "f.npz", ids=np.array(["i0", "i1"]), features=np.ones((2, 3)))
    (tmp_path / "log.csv").write_text("user,item\n" + "".join(f"u{u},i{i}\n" for u in range(3) for i in range(2)))
    bad = dataclasses.replace(tiny_data, features={modality: tiny_data.features["image"]})
    return (write_mmrec(tiny_data, tmp_path / "d"),
            lambda: process_raw(tmp_path / "log.csv", {modality: tmp_path / "f.npz"}),
            lambda: write_mmrec(bad, tmp_path / "out" / "o"))


@pytest.mark.parametrize("modality", ["../escaped", "a/b", "a\\b", "", ".", "..", ".hidden", "tab\there"])
def test_modality_names_are_plain_names_wherever_they_enter(
    tiny_data: InteractionData, tmp_path: Path, modality: str
) -> None:
    """A modality names the file ``<modality>_feat.npy``: a path in it would write outside the folder."""
    folder, from_raw_log, written = modality_entries(tiny_data, tmp_path, modality)
    for call in (from_raw_log, lambda: read_mmrec(folder, {modality: "image_feat.npy"}), written):
        with pytest.raises(ConfigError, match=re.escape(f"modality {modality!r} is not a plain name")):
            call()
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("*_feat.npy"))


@pytest.mark.parametrize("modality", [" ", "  ", " image", "image "])
def test_a_blank_modality_or_one_with_surrounding_space_is_refused(
    tiny_data: InteractionData, tmp_path: Path, modality: str
) -> None:
    """Fuzz round 5, S13: ' ' was accepted (shown as no name in stats), while '' was refused."""
    folder, from_raw_log, written = modality_entries(tiny_data, tmp_path, modality)
    rule = f"modality {modality!r} is blank or starts or ends with whitespace"
    for call, option in (
        (from_raw_log, "feature_files"),
        (lambda: load_dataset(folder, {modality: "image_feat.npy"}), "load_dataset.feature_files"),
        (written, "features"),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value) == f"{option}: {rule}"
    np.save(folder / f"{modality}_feat.npy", tiny_data.features["image"].numpy())
    with pytest.raises(ConfigError) as info:
        read_mmrec(folder)
    assert str(info.value) == f"{folder / (modality + '_feat.npy')}: {rule}"


@pytest.mark.parametrize("name", ["_feat.npy", ".hidden_feat.npy"])
def test_a_feature_file_found_in_a_folder_names_a_plain_modality(
    tiny_data: InteractionData, tmp_path: Path, name: str
) -> None:
    """Fuzz round 4, S3: '_feat.npy' loaded as modality '' (and '.x_feat.npy' as '.x'), which data convert then
    refused to write."""
    folder = write_mmrec(tiny_data, tmp_path / "d")
    np.save(folder / name, tiny_data.features["image"].numpy())
    with pytest.raises(ConfigError) as info:
        read_mmrec(folder)
    modality = name[: -len("_feat.npy")]
    assert str(info.value) == (
        f"{folder / name}: modality {modality!r} is not a plain name (no '/', '\\', leading '.' or control "
        "characters; it names the file <modality>_feat.npy)"
    )
    assert set(read_mmrec(folder, {"image": "image_feat.npy"}).features) == {"image"}


def test_a_text_file_named_like_numpy_is_not_read_as_a_pickle(tiny_data: InteractionData, tmp_path: Path) -> None:
    folder = write_mmrec(tiny_data, tmp_path / "d")
    (folder / "image_feat.npy").write_text("0.1,0.2\n")
    with pytest.raises(DataError, match=r"image_feat\.npy: not a numpy file: it starts like neither an \.npy nor"):
        read_mmrec(folder)


def test_ids_without_interactions_are_kept_by_the_maps(tiny_data: InteractionData, tmp_path: Path) -> None:
    """A user or item with no interaction has no ``.inter`` line: the maps written beside it keep the counts (identity
    maps when the data has no raw ids), and an ``.inter`` id beyond a map is an error naming the line."""
    last = tiny_data.num_items - 1  # user 3 and the last item lose every interaction
    splits = {s: (u[(u != 3) & (i != last)], i[(u != 3) & (i != last)]) for s, (u, i) in tiny_data.splits.items()}
    data = dataclasses.replace(tiny_data, splits=splits)
    back = read_mmrec(write_mmrec(data, tmp_path / "d"))
    assert (back.num_users, back.num_items) == (data.num_users, data.num_items)
    assert back.user_ids == [str(u) for u in range(data.num_users)]
    assert all(torch.equal(a, b) for s in splits for a, b in zip(splits[s], back.splits[s]))
    lines = (tmp_path / "d" / "user_map.tsv").read_text().splitlines()
    (tmp_path / "d" / "user_map.tsv").write_text("\n".join(lines[:3]) + "\n")  # ids 0 and 1 only
    inter = next((tmp_path / "d").glob("*.inter"))
    with pytest.raises(DataError, match=rf"{inter.name}:\d+: userID \d+ is not in user_map\.tsv, which maps ids 0 "
                                        "to 1$"):
        read_mmrec(tmp_path / "d")
    assert not (tmp_path / "e").exists()
    assert read_mmrec(write_mmrec(tiny_data, tmp_path / "e")).user_ids is None  # no gap: no map, as before
