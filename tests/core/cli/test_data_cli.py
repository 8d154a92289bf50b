"""``recplug data``: stats (text and JSON), convert, download, list; errors are one ``error:`` line, exit 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from recplug.core.cli.main import main
from recplug.core.data.formats.mmrec import read_mmrec, write_mmrec

GOWALLA = Path(__file__).resolve().parents[4] / "shared" / "data" / "gowalla"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["data", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.skipif(not GOWALLA.is_dir(), reason="../shared/data/gowalla not present")
def test_stats_on_gowalla(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats", str(GOWALLA))
    assert code == 0
    assert "users               29858\n" in out and "items               40981\n" in out
    assert "train interactions  810128  (29858 users)" in out and "test interactions   217242  (29858 users)" in out
    assert "density             0.000839622\n" in out and "notes               none" in out


def test_stats_json_reports_modalities_and_notes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "train.txt").write_text("0 0 1\n1 1 2\n2 2\n")
    (folder / "test.txt").write_text("0 2\n1 0\n2\n")
    np.save(folder / "image_feat.npy", np.zeros((3, 5), dtype=np.float32))
    code, out, _ = run(capsys, "stats", str(folder), "--json")
    summary = json.loads(out)
    assert code == 0 and summary["users"] == 3 and summary["items"] == 3
    assert summary["train_interactions"] == 5 and summary["test_interactions"] == 2
    assert summary["modalities"] == {"image": [3, 5]}
    assert any("line(s) 3" in note for note in summary["notes"])
    code, out, _ = run(capsys, "stats", str(folder), "--valid-ratio", "0.5")
    assert code == 0 and "valid interactions  2" in out and "valid: carved" in out


def test_convert_raw_log_then_stats(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "ratings.tsv"
    rows = [f"A{u}\tB{i}\t{1 + (u * i) % 5}\t{u * 100 + i}" for u in range(20) for i in range(8)]
    log.write_text("\n".join(rows) + "\n")
    (tmp_path / "text.csv").write_text("\n".join(f"B{i},{i},0.5" for i in range(8)) + "\n")
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "convert", str(log), str(out_dir), "--columns", "user,item,rating,timestamp",
                         "--split", "loo", "--k-core", "2", "--feature", "text=" + str(tmp_path / "text.csv"),
                         "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    assert {"ratings.inter", "text_feat.npy", "user_map.tsv", "item_map.tsv"} <= {p.name for p in out_dir.iterdir()}
    data = read_mmrec(out_dir)
    assert data.num_users == 20 and data.num_interactions("test") == 20 and data.item_ids[0] == "B0"
    code, out, _ = run(capsys, "stats", str(out_dir))
    assert code == 0 and "modalities          text (8, 2)" in out
    code, _, err = run(capsys, "convert", "default", str(out_dir))
    assert code == 2 and err.startswith("error: ") and "not empty" in err


def test_convert_names_the_dataset_and_keeps_no_copy_in_the_cache(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = tmp_path / "interactions.tsv"
    rows = "".join(f"{u}\t{(u + k) % 7}\t{k}\n" for u in range(9) for k in range(5))
    log.write_text("user_id\titem_id\torder\n" + rows)
    code, out, err = run(capsys, "convert", str(log), str(tmp_path / "out"), "--name", "shop", "--user-col", "user_id",
                         "--item-col", "item_id", "--time-col", "order", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    assert out == f"wrote {tmp_path / 'out'} (MMRec format: shop.inter, 0 feature files)\n"
    assert read_mmrec(tmp_path / "out").name == "shop" and not (tmp_path / "cache").exists()
    code, _, err = run(capsys, "convert", str(log), str(tmp_path / "out2"), "--name", "a/b")
    assert code == 2 and err == "error: --name: expected a file stem without path separators, got 'a/b'\n"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["stats", "/no/such/dataset"], "/no/such/dataset: no such dataset folder"),
        (["stats", "no-such-name"], "no-such-name: no such dataset folder or file, nor a registered dataset"),
        (["stats"], "the following arguments are required: path"),
        (["frobnicate"], "invalid choice"),
        (["stats", "TMP", "--format", "lightgcn"], "train.txt: train file not found"),
        (["convert", "x.csv", "out", "--feature", "image"], "--feature: expected MODALITY=FILE"),
        (["convert", "x.csv", "x" * 300], "cannot be created (File name too long)"),
        (["convert", "x.csv", "loop/sub"], "loop is a symbolic link to loop, which leads nowhere (a loop or a"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], fragment: str
) -> None:
    if argv[0] == "convert":
        (tmp_path / "x.csv").write_text("user,item\n0,0\n")
        (tmp_path / "loop").symlink_to("loop")
        argv = ["convert", str(tmp_path / "x.csv"), str(tmp_path / argv[2]), *argv[3:]]
    argv = [str(tmp_path) if a == "TMP" else a for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err


def test_bad_data_is_reported_by_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("0 0 1\n1 x\n")
    (tmp_path / "test.txt").write_text("0 1\n")
    code, _, err = run(capsys, "stats", str(tmp_path))
    assert code == 2 and err == f"error: {tmp_path / 'train.txt'}:2: item id must be a non-negative integer, got 'x'\n"


@pytest.mark.skipif(not GOWALLA.is_dir(), reason="../shared/data/gowalla not present")
def test_download_from_a_mirror_and_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    mirror = str(GOWALLA.parent)
    code, out, _ = run(capsys, "download", "gowalla", "--cache-dir", str(tmp_path), "--mirror", mirror, "--quiet")
    assert code == 0 and Path(out.strip()) == tmp_path / "datasets" / "gowalla"
    assert (tmp_path / "datasets" / "gowalla" / "train.txt").stat().st_size == (GOWALLA / "train.txt").stat().st_size
    code, out, _ = run(capsys, "list")
    assert code == 0 and out.startswith("gowalla  (lightgcn; users 29858, items 40981, train 810128, test 217242)")
    assert "\ntiktok  (mmrec; users 9308, items 6710, train 59541, valid 3046, test 6125; from " \
           "$RECPLUG_DATA_MIRROR only)\n" in out
    assert "\namazon_office  (mmrec; users 4905, items 2420, train 40877, valid 5880, test 6501; from " \
           "$RECPLUG_DATA_MIRROR only; prepared once by recplug commands)\n" in out


LOG = "user,item,rating,timestamp\n" + "".join(f"u{u},i{i},{1 + (u + i) % 5},{u * 100 + i}\n"
                                               for u in range(12) for i in range(6))


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--sep", ";;"], "sep: expected one character, got ';;'"),
        (["--sep", ""], "sep: expected one character, got ''"),
        (["--valid-ratio", "nan"], "argument --valid-ratio: must be in [0, 1), got nan"),
        (["--valid-ratio", "-0.5"], "argument --valid-ratio: must be in [0, 1), got -0.5"),
        (["--min-rating", "nan"], "argument --min-rating: must be a finite number, got nan"),
        (["--ratios", "0.8", "nan", "0.2"], "argument --ratios: must be in [0, 1], got nan"),
        (["--seed", "-1"], "argument --seed: must be in [0, 4294967295], got -1"),
        (["--split-seed", "x"], "argument --split-seed: expected an integer, got 'x'"),
        (["--split-seed", "١"], "argument --split-seed: expected an integer, got '١'"),  # int() reads it as 1
        (["--k-core", "1_0"], "argument --k-core: expected an integer, got '1_0'"),  # int() reads it as 10
        (["--k-core", "-2"], "argument --k-core: must be >= 0, got -2"),
        (["--user-col", "item"], "user_col and item_col both name column 'item'"),
        (["--columns", "user,item,user,x"], "--columns: column 'user' appears twice in the header"),
        (["--columns", "user,item,rating,timestamp"], "log.csv:1: this row is a header (it repeats --columns)"),
        (["--feature", "image=TMP/none.csv"], "none.csv: feature file of modality 'image' not found"),
        (["--feature", "image=TMP/matrix.npy"], "matrix.npy: features keyed by raw item id are an .npz"),
        (["--feature", "image=TMP/text.npz"], "text.npz: not a numpy file: it starts like neither an .npy nor"),
        (["--feature", "../escaped=TMP/f.npz"], "--feature ../escaped=TMP/f.npz: modality '../escaped' is not a "
                                                "plain name"),
        (["--feature", "a/b=TMP/f.npz"], "modality 'a/b' is not a plain name"),
        (["--feature", ".hidden=TMP/f.npz"], "modality '.hidden' is not a plain name"),
        (["--feature", "image=TMP/f.npz", "--feature", "image=TMP/f.npz"], "--feature: modality 'image' is given "
                                                                           "twice"),
        (["--ratios", "1", "0", "0"], "ratios: the test share is 0, but evaluation needs a test split"),
        (["--ratios", "0.9", "0.1", "0"], "ratios: the test share is 0, but evaluation needs a test split"),
        (["--split", "loo", "--ratios", "0.5", "0.25", "0.25"], "--ratios: not used by --split loo"),
        (["--split", "temporal", "--seed", "3"], "--seed: not used by --split temporal (only by random)"),
        (["--time-col", "when"], "log.csv:1: no column 'when' (time_col) in the header 'user,item,rating,timestamp'"),
        (["--rating-col", "stars"], "log.csv:1: no column 'stars' (rating_col) in the header 'user,item,rating,"),
    ],
)
def test_bad_raw_log_options_name_the_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, options: list[str], fragment: str
) -> None:
    """Every refusal is one line, before anything is written: no output folder, no feature file anywhere."""
    (tmp_path / "log.csv").write_text(LOG)
    np.save(tmp_path / "matrix.npy", np.zeros((6, 2)))
    np.savez(tmp_path / "f.npz", ids=np.array([f"i{i}" for i in range(6)]), features=np.ones((6, 2)))
    (tmp_path / "text.npz").write_text("i0,1\n")
    options = [o.replace("TMP", str(tmp_path)) for o in options]
    fragment = fragment.replace("TMP", str(tmp_path))
    for command in (["stats", str(tmp_path / "log.csv")], ["convert", str(tmp_path / "log.csv"), str(tmp_path / "o")]):
        code, out, err = run(capsys, *command, "--cache-dir", str(tmp_path / "cache"), *options)
        assert code == 2 and out == "" and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "o").exists() and not list(tmp_path.rglob("*_feat.npy"))


@pytest.mark.parametrize("source", ["mmrec", "lightgcn", "default"])
@pytest.mark.parametrize(
    "options, named",
    [
        (["--k-core", "5", "--split", "loo", "--feature", "img=f.npz", "--sep", ";"], "--feature, --sep, --k-core, "
                                                                                    "--split: raw-log option(s)"),
        (["--split", "random"], "--split: raw-log option(s)"),
        (["--rating-col", "rating", "--missing-features", "error"], "--rating-col, --missing-features: raw-log"),
    ],
)
def test_raw_log_options_are_refused_for_other_sources(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str, options: list[str], named: str
) -> None:
    """Raw-log options would do nothing to a dataset folder or a registered name: refused by name, even when
    they repeat a default."""
    folder = tmp_path / source
    folder.mkdir()
    (folder / "d.inter").write_text("userID\titemID\tx_label\n0\t0\t0\n0\t1\t2\n")
    (folder / "train.txt").write_text("0 0\n")
    (folder / "test.txt").write_text("0 1\n")
    if source == "lightgcn":
        (folder / "d.inter").unlink()
    path = "default" if source == "default" else str(folder)
    for command in (["stats", path], ["convert", path, str(tmp_path / "o")]):
        code, out, err = run(capsys, *command, *options)
        assert code == 2 and out == "" and err.count("\n") == 1 and named in err, err
        assert "they do not apply" in err
    assert not (tmp_path / "o").exists()


TEMPORAL_LOG = "user,item,timestamp\n" + "".join(  # user 5 has only late (valid/test) interactions
    f"{u},{(u + i) % 12},{u * 10 + i if i < 8 else 2000 + u * 10 + i}\n" for u in range(10) if u != 5 for i in range(10)
) + "5,0,5000\n5,1,5001\n"


@pytest.mark.parametrize(
    "files, options",
    [
        ({"train.txt": "0 0 1\n1\n2 1 2\n", "test.txt": "0 2\n2 0\n"}, []),  # user 1: a line without items
        ({"train.txt": "0 0 1\n1 2\n2\n", "test.txt": "0 2\n1 0\n"}, []),  # the highest user id has no items
        ({"d.inter": "userID\titemID\tx_label\n0\t0\t0\n0\t1\t0\n0\t2\t2\n1\t3\t2\n2\t0\t0\n2\t2\t0\n2\t1\t2\n"},
         []),  # user 1 and item 3 only in a test row MMRec's rule drops
        ({"log.csv": TEMPORAL_LOG}, ["--split", "temporal"]),  # user 5 only in valid/test: dropped by that rule
    ],
    ids=["lightgcn-middle-user-without-items", "lightgcn-last-user-without-items", "mmrec-cold-user",
         "raw-temporal-cold-user"],
)
def test_convert_then_read_gives_the_same_data(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, files: dict[str, str], options: list[str]
) -> None:
    """Users and items left without interactions survive conversion (in the id maps), so the folder written is
    read back with the same counts, splits and notes, by ``read_mmrec`` and by ``data stats``."""
    source = tmp_path / "src"
    source.mkdir()
    for name, text in files.items():
        (source / name).write_text(text)
    path = source / "log.csv" if "log.csv" in files else source
    code, stats, err = run(capsys, "stats", str(path), "--cache-dir", str(tmp_path / "cache"), *options)
    assert code == 0, err
    code, _, err = run(capsys, "convert", str(path), str(tmp_path / "out"), *options)
    assert code == 0, err
    code, again, err = run(capsys, "stats", str(tmp_path / "out"))
    assert code == 0, err
    assert "users w/o train     1" in stats
    drop = ("name", "source")
    assert [r for r in again.splitlines() if not r.startswith(drop)] == \
           [r for r in stats.splitlines() if not r.startswith(drop)]
    written = read_mmrec(tmp_path / "out")
    rewritten = read_mmrec(write_mmrec(written, tmp_path / "again"))
    for field in ("num_users", "num_items", "user_ids", "item_ids", "notes"):
        assert getattr(rewritten, field) == getattr(written, field), field
    assert all(torch.equal(a, b) for s in written.splits for a, b in zip(written.splits[s], rewritten.splits[s]))


def test_a_raw_log_is_read_as_written(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A tab given as the two characters backslash-t, quoted feature ids; a repeated header column, a quote never
    closed or one closed lines later (named at the line it opens), paths of the wrong kind and a non-regular file
    are errors."""
    (tmp_path / "log.tsv").write_text(LOG.replace(",", "\t"))
    (tmp_path / "text.csv").write_text("".join(f'"i{i}",{i},0.5\n' for i in range(6)))
    code, out, err = run(capsys, "stats", str(tmp_path / "log.tsv"), "--sep", "\\t", "--feature",
                         f"text={tmp_path / 'text.csv'}", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0 and "items               6\n" in out and "text (6, 2)" in out, err
    (tmp_path / "dup.csv").write_text(LOG.replace("timestamp", "user", 1))
    code, _, err = run(capsys, "stats", str(tmp_path / "dup.csv"))
    assert code == 2 and "dup.csv:1: column 'user' appears twice in the header" in err
    lines = LOG.splitlines(keepends=True)
    (tmp_path / "quote.csv").write_text("".join(lines[:5]) + '"' + "".join(lines[5:]))
    code, _, err = run(capsys, "stats", str(tmp_path / "quote.csv"))
    assert code == 2 and "quote.csv:6: a quote opened on this line is never closed" in err, err
    inner = "".join(lines[:5]) + '"' + lines[5] + lines[6].rstrip("\n") + '"\n' + "".join(lines[7:])
    (tmp_path / "inner.csv").write_text(inner)
    code, _, err = run(capsys, "stats", str(tmp_path / "inner.csv"))  # closed, but two rows in one field
    assert code == 2 and "inner.csv:6: expected 4 ','-separated fields, got 1 (its quoted field runs on to line 7" \
        in err, err
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "d.inter").write_text("userID\titemID\tx_label\n0\t0\t0\n")
    code, _, err = run(capsys, "stats", str(tmp_path / "default" / "d.inter"), "--format", "mmrec")
    assert code == 2 and "d.inter: a file, not a dataset folder" in err
    code, _, err = run(capsys, "stats", str(tmp_path / "default"), "--format", "raw")
    assert code == 2 and "default: a folder, not a log file" in err
    code, _, err = run(capsys, "stats", "default", "--format", "lightgcn")
    assert code == 2 and "--format lightgcn: 'default' is the embedded MMRec dataset" in err
    os.mkfifo(tmp_path / "default" / "image_feat.npy")
    code, _, err = run(capsys, "stats", str(tmp_path / "default"))
    assert code == 2 and "image_feat.npy: feature file of modality 'image' is not a regular file" in err


def test_a_dangling_link_given_with_raw_options_is_named_as_such(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    """It was told the raw-log options "do not apply", as if it were a dataset folder."""
    link = tmp_path / "log.csv"
    link.symlink_to(tmp_path / "gone.csv")
    code, _, err = run(capsys, "stats", str(link), "--time-col", "t")
    assert code == 2 and err.strip() == (f"error: {link}: dataset is a symbolic link to {tmp_path / 'gone.csv'}, "
                                         "which leads nowhere (a loop or a missing target)")
