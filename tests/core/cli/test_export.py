"""`recplug export` (issue 16): embeddings, id maps, config, provenance and a faiss index that reproduce
`recplug predict`'s top-20 of every user, read back with numpy and faiss alone; bad input ends in one line."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
import yaml

from recplug.core.cli.main import main
from recplug.core.data.resolve import load_dataset

ROOT = Path(__file__).resolve().parents[3]


def export(ckpt: Path | str, out: Path, *extra: str) -> int:
    return main(["export", "--ckpt_path", str(ckpt), "--out", str(out), *extra])


def faiss_top_k(folder: Path, k: int, nprobe: int | None = None) -> dict[str, list[str]]:
    """Every user's top-``k`` from the exported files only: search ``k + most seen`` and drop seen items."""
    users = np.load(folder / "users.npy")
    index = faiss.read_index(str(folder / "items.faiss"))
    if nprobe is not None:
        index.nprobe = nprobe
    seen = np.load(folder / "seen.npz")
    indptr, seen_items = seen["indptr"], seen["items"]
    user_ids = (folder / "user_ids.txt").read_text(encoding="utf-8").splitlines()
    item_ids = (folder / "item_ids.txt").read_text(encoding="utf-8").splitlines()
    extra = int(np.diff(indptr).max())
    _, found = index.search(users, k + extra)
    lists = {}
    for row, candidates in enumerate(found):
        excluded = set(seen_items[indptr[row]:indptr[row + 1]].tolist())
        kept = [item_ids[i] for i in candidates.tolist() if i >= 0 and i not in excluded][:k]
        lists[user_ids[row]] = kept
    return lists


@pytest.fixture(scope="module")
def exported(mf_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "mf"
    assert export(mf_run.ckpt, out) == 0
    return out


def test_the_flat_index_gives_predicts_top20_for_every_user(exported, mf_run, tie_swaps) -> None:
    lists = faiss_top_k(exported, 20)
    assert set(lists) == set(mf_run.top20) and len(lists) == load_dataset("default").num_users
    swapped = [user for user, (items, _) in mf_run.top20.items() if tie_swaps(lists[user], items, int(user))]
    assert len(swapped) <= len(lists) // 100  # the rest identical, order included


def test_the_export_holds_the_final_embeddings_ids_config_and_provenance(exported, mf_run) -> None:
    data = load_dataset("default")
    users, items = np.load(exported / "users.npy"), np.load(exported / "items.npy")
    assert users.dtype == items.dtype == np.float32
    assert users.shape == (data.num_users, 64) and items.shape == (data.num_items, 64)
    user_ids = (exported / "user_ids.txt").read_text(encoding="utf-8").splitlines()
    assert user_ids == [str(i) for i in range(data.num_users)]  # the default's files keep no raw ids
    # the scores predict wrote are dot products of the exported rows
    items_of_0, scores_of_0 = mf_run.top20["0"]
    np.testing.assert_allclose(items[[int(i) for i in items_of_0]] @ users[0], scores_of_0, rtol=1e-4, atol=1e-6)
    seen = np.load(exported / "seen.npz")
    indptr, expected = data.user_csr(("train", "valid"))
    assert np.array_equal(seen["indptr"], indptr.numpy()) and np.array_equal(seen["items"], expected.numpy())
    manifest = json.loads((exported / "export.json").read_text())
    assert manifest["exclude"] == ["train", "valid"] and manifest["index"]["type"] == "flat"
    config = yaml.safe_load((exported / "config.yaml").read_text())
    assert config["model"]["encoders"][0]["class_path"].endswith("IdEmbedding") and "ckpt_path" not in config
    record = json.loads((exported / "provenance.json").read_text())
    trained = torch.load(mf_run.ckpt, weights_only=True)["recplug"]
    assert record["checkpoint"]["config_sha256"] == trained["config_sha256"] == record["export"]["config_sha256"]
    assert record["checkpoint"]["data_sha256"] == record["export"]["data_sha256"] == data.content_hash()
    assert len(record["export"]["ckpt_sha256"]) == 64


def test_an_ivf_index_visiting_every_cell_is_exact_and_a_url_checkpoint_works(mf_run, tmp_path, tie_swaps,
                                                                              capsys) -> None:
    out = tmp_path / "ivf"
    url = mf_run.ckpt.resolve().as_uri()
    assert export(url, out, "--index", "ivf", "--nlist", "8", "--nprobe", "8") == 0
    assert (f"note: no --config: the model and data (data.path default) come from the config recorded in {url}"
            in capsys.readouterr().err)  # the record chose which file is read: say so (fuzz round 5)
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["index"] == {"metric": "inner_product", "type": "ivf", "nlist": 8, "nprobe": 8}
    assert isinstance(faiss.read_index(str(out / "items.faiss")), faiss.IndexIVFFlat)
    lists = faiss_top_k(out, 20, nprobe=8)
    swapped = [user for user, (items, _) in mf_run.top20.items() if tie_swaps(lists[user], items, int(user))]
    assert len(swapped) <= len(lists) // 100


def test_a_checkpoint_without_a_recorded_config_needs_one_and_hnsw_keeps_its_settings(mf_run, exported, tmp_path,
                                                                                       capsys) -> None:
    checkpoint = torch.load(mf_run.ckpt, weights_only=True)
    del checkpoint["recplug"]["config"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    assert export(old, tmp_path / "refused") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {old}: the checkpoint records no config (it predates recplug export); give the config it was "
        "trained with (--config)"
    )
    out = tmp_path / "hnsw"
    assert export(old, out, "--config", str(ROOT / "configs" / "mf.yaml"), "--index", "hnsw", "--hnsw_m", "8",
                  "--ef_search", "64") == 0
    index = faiss.read_index(str(out / "items.faiss"))
    assert isinstance(index, faiss.IndexHNSWFlat) and index.hnsw.efSearch == 64
    assert np.array_equal(np.load(out / "items.npy"), np.load(exported / "items.npy"))  # the same model
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["index"] == {"metric": "inner_product", "type": "hnsw", "M": 8, "ef_search": 64,
                                 "ef_construction": 200}


@pytest.mark.parametrize("extra, expected", [
    (["--index", "annoy"], "error: recplug export: argument --index: invalid choice: 'annoy'"),
    (["--index", "ivf", "--nlist", "0"], "error: recplug export: argument --nlist: must be in [1, 100000], got 0"),
    (["--index", "hnsw", "--hnsw_m", "1"], "error: recplug export: argument --hnsw_m: must be in [2, 100000], got 1"),
    (["--nlist", "8", "--hnsw_m", "8"], "error: --nlist, --hnsw_m: not an option of --index flat"),  # were ignored
    (["--exclude", "tests"], "error: exclude: unknown split(s) ['tests']; choose from train, valid, test"),
])
def test_bad_arguments_end_in_one_line(extra, expected, mf_run, tmp_path, capsys) -> None:
    assert export(mf_run.ckpt, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(expected) and not (tmp_path / "out").exists()


def test_a_missing_checkpoint_or_a_used_folder_is_refused(mf_run, tmp_path, capsys) -> None:
    assert export(tmp_path / "none.ckpt", tmp_path / "out") == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.ckpt'}: no such checkpoint file"
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    assert export(mf_run.ckpt, tmp_path / "used") == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --out {tmp_path / 'used'}: exists and is not an empty folder; remove it or give another"
    )
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    url = (tmp_path / "notes.txt").as_uri()  # named as given, not by its downloaded copy (fuzz rounds 4 and 5)
    assert export(url, tmp_path / "out") == 2
    assert capsys.readouterr().err.strip() == (f"error: {url}: not a PyTorch checkpoint (neither a torch.save "
                                               "archive nor a pickle)")


def test_a_recorded_config_of_the_wrong_shape_is_named(mf_run, tmp_path, capsys) -> None:
    checkpoint = torch.load(mf_run.ckpt, weights_only=True)
    checkpoint["recplug"]["config"]["model"] = 5
    torch.save(checkpoint, tmp_path / "shape.ckpt")
    assert export(tmp_path / "shape.ckpt", tmp_path / "out") == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'shape.ckpt'}: its recorded config: model must be a mapping of model options, got 5"
    )


def test_a_diverged_checkpoint_is_refused(mf_run, tmp_path, capsys) -> None:
    checkpoint = torch.load(mf_run.ckpt, weights_only=True)
    checkpoint["state_dict"]["item_embedding.weight"][3, 0] = float("nan")
    torch.save(checkpoint, tmp_path / "nan.ckpt")
    assert export(tmp_path / "nan.ckpt", tmp_path / "out") == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'nan.ckpt'}: weight item_embedding.weight holds NaN or inf (the run diverged); "
        "use a checkpoint from before it did"
    )
    assert not (tmp_path / "out").exists()


def test_a_raw_logs_own_ids_go_through_predict_export_and_the_api(tmp_path) -> None:
    """Ids are the log's strings everywhere (the embedded default has none, so this is where raw ids show)."""
    import csv

    import recplug

    rng = np.random.default_rng(3)
    log = tmp_path / "log.csv"
    with open(log, "w", encoding="utf-8") as handle:
        handle.write("user,item\n")
        for user in range(120):
            for item in rng.choice(90, size=12, replace=False):
                handle.write(f"user-{user},sku/{item:03d}\n")
    common = ["--config", str(ROOT / "configs" / "mf.yaml"), "--data.path", str(log), "--trainer.logger=false",
              "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar=false",
              "--trainer.enable_model_summary=false"]
    assert main(["fit", *common, "--trainer.max_epochs=1"]) == 0
    ckpt = next(tmp_path.rglob("last.ckpt"))
    assert main(["predict", *common, "--ckpt_path", str(ckpt), "--topk.output_path", str(tmp_path / "top.tsv"),
                 "--topk.k=10"]) == 0
    rows = {r["user"]: r["items"].split(",") for r in csv.DictReader(open(tmp_path / "top.tsv"), delimiter="\t")}
    assert export(ckpt, tmp_path / "out") == 0
    user_ids = (tmp_path / "out" / "user_ids.txt").read_text().splitlines()
    item_ids = (tmp_path / "out" / "item_ids.txt").read_text().splitlines()
    assert sorted(user_ids) == sorted(f"user-{u}" for u in range(120)) and set(rows) == set(user_ids)
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert all(i.startswith("sku/") for i in item_ids) and manifest["raw_ids"]
    rec = recplug.Recommender.from_checkpoint(ckpt)
    ranked = rec.recommend(user_ids, k=10)
    assert all(r.items == rows[u] for u, r in zip(user_ids, ranked))
    from_files = faiss_top_k(tmp_path / "out", 10)
    assert sum(r.items == from_files[u] for u, r in zip(user_ids, ranked)) >= 0.95 * len(user_ids)  # float32 ties
    assert rec.recommend_profile(["sku/001", "sku/002"], k=3).items[0].startswith("sku/")
    with pytest.raises(recplug.InvalidArgument, match=r"^recommend.user_ids must be user ids of the dataset"):
        rec.recommend([0])  # an index is no id when the dataset has raw ids
