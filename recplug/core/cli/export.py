"""``recplug export``: a trained model's final embeddings, id maps, config, provenance and a faiss index of items.

    recplug export --ckpt_path runs/mf/version_0/checkpoints/last.ckpt --out exported/mf
    recplug export --ckpt_path URL --out DIR --index hnsw --hnsw_m 32 --ef_search 128   # approximate index
    recplug export --ckpt_path CKPT --config configs/mf.yaml --out DIR   # a checkpoint that records no config

``DIR`` (written whole or not at all; it must not exist or be empty) holds

* ``users.npy`` ``float32 [M, d]``, ``items.npy`` ``float32 [N, d]``: the final embeddings the model ranks
  with (what ``recplug predict`` scores: ``score(u, i) = users[u] . items[i]``);
* ``user_ids.txt``, ``item_ids.txt``: the dataset's own id of each row, one per line (the 0-based index when
  the dataset's files kept no raw ids);
* ``seen.npz``: CSR ``indptr [M+1]``, ``items`` (int64 rows) of the items never recommended to each user (the
  splits in ``export.json``'s ``exclude``, train and valid by default, as ``recplug predict``);
* ``items.faiss``: a faiss inner-product index of ``items.npy`` (``faiss.read_index``): ``flat`` (exact, the
  default), ``ivf`` (``nlist`` cells, ``nprobe`` visited; faiss does not save ``nprobe``: set it after
  reading) or ``hnsw`` (``M``, ``efSearch``, ``efConstruction``);
* ``config.yaml``: the configuration the model was built with; ``provenance.json``: the checkpoint's provenance
  record and the export's own (:mod:`recplug.core.model.provenance`); ``export.json``: sizes, ids, exclusions,
  index settings and file names.

To reproduce ``recplug predict``'s top-``k`` of user ``u``: search ``items.faiss`` for ``users[u]`` with
``k + max seen count`` results and drop the user's ``seen`` items (exact with ``flat``); see docs/serving.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from recplug.core.cli.boundary import CommandParser, number_in
from recplug.core.errors import MAX_COUNT, ConfigError

INDEXES = ("flat", "ivf", "hnsw")
FORMAT_VERSION = 1


def build_parser() -> CommandParser:
    parser = CommandParser(prog="recplug export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="checkpoint of `recplug fit` (path or http(s)/file URL)")
    parser.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    parser.add_argument("--config", help="config to rebuild the model with (default: the one the checkpoint records)")
    parser.add_argument("--exclude", nargs="*", default=None,
                        help="splits never recommended, written to seen.npz (default: the config's topk.exclude)")
    parser.add_argument("--index", choices=INDEXES, default="flat", help="faiss index of the items (default flat)")
    # the index's own options: default None, so one given for another index is refused instead of ignored
    count = number_in(int, 1, MAX_COUNT)
    parser.add_argument("--nlist", type=count, help="ivf: k-means cells (default 1024, capped at the item count)")
    parser.add_argument("--nprobe", type=count, help="ivf: cells visited per query (default 32)")
    parser.add_argument("--hnsw_m", type=number_in(int, 2, MAX_COUNT), help="hnsw: graph degree M (default 32)")
    parser.add_argument("--ef_search", type=count, help="hnsw: efSearch (default 128)")
    parser.add_argument("--ef_construction", type=count, help="hnsw: efConstruction (default 200)")
    return parser


INDEX_OPTIONS = {"flat": {}, "ivf": {"nlist": "nlist", "nprobe": "nprobe"},
                 "hnsw": {"hnsw_m": "M", "ef_search": "ef_search", "ef_construction": "ef_construction"}}
"""Each ``--index``'s options and the argument of its search class they set."""


def index_search(args: Any) -> Any:
    """The evaluation's own faiss search for ``--index`` (its arguments checked before the checkpoint loads); an
    option of another index is refused."""
    from recplug.core.eval.search import FaissFlatSearch, FaissHNSWSearch, FaissIVFSearch

    foreign = [f"--{option}" for index, options in INDEX_OPTIONS.items() if index != args.index for option in options
               if getattr(args, option) is not None]
    if foreign:
        raise ConfigError(f"{', '.join(foreign)}: not an option of --index {args.index}; drop it or choose the index "
                          "it belongs to")
    given = {argument: getattr(args, option) for option, argument in INDEX_OPTIONS[args.index].items()
             if getattr(args, option) is not None}
    search = {"flat": FaissFlatSearch, "ivf": FaissIVFSearch, "hnsw": FaissHNSWSearch}[args.index]
    return search(**given)


def item_index(search: Any, items: np.ndarray) -> tuple[object, dict[str, Any]]:
    """``(faiss index of items, its settings)``, built by ``search``."""
    import torch

    index: Any = search.build(torch.from_numpy(items)).index
    settings: dict[str, Any] = {"metric": "inner_product"}
    if hasattr(index, "nprobe"):
        settings.update(type="ivf", nlist=int(index.nlist), nprobe=int(index.nprobe))
    elif hasattr(index, "hnsw"):
        index.hnsw.efSearch = search.ef_search
        settings.update(type="hnsw", M=search.M, ef_search=search.ef_search, ef_construction=search.ef_construction)
    else:
        settings.update(type="flat", exact=True)
    return index, settings


def write_ids(path: Path, ids: list[Any]) -> None:
    text = "".join(f"{raw}\n" for raw in ids)
    if any("\n" in str(raw) or "\r" in str(raw) for raw in ids):  # readers tokenise lines: never happens
        raise ConfigError(f"{path.name}: an id holds a line break; it cannot be written one per line")
    path.write_text(text, encoding="utf-8")


def export(args: Any) -> Path:
    """Write the export folder ``args.out``; returns it."""
    import faiss
    import yaml

    from recplug.core.cli.lightning import RUN_ONLY_KEYS
    from recplug.core.cli.recommender import Recommender, note_recorded_data
    from recplug.core.data.download import sha256sum
    from recplug.core.model.checkpoint import local_checkpoint
    from recplug.core.model.provenance import provenance
    from recplug.core.ops.io import atomic_folder, check_can_create

    check_can_create(args.out, "--out")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder; remove it or give another")
    search = index_search(args)
    ckpt = local_checkpoint(args.ckpt_path, keep_for_next=True)  # a URL: from_checkpoint takes this download
    rec = Recommender.from_checkpoint(args.ckpt_path, args.config, args.exclude)  # its errors name the URL
    note_recorded_data(rec, args.ckpt_path, args.config)
    users, items = rec.users.numpy().astype(np.float32), rec.items.numpy().astype(np.float32)
    index, settings = item_index(search, items)
    seen_indptr, seen_items = rec.seen if rec.seen is not None else (np.zeros(rec.num_users + 1, np.int64), [])
    exported = provenance(rec.config, rec.data, rec.provenance.get("seed", 0))
    exported.update(ckpt_path=str(args.ckpt_path), ckpt_sha256=sha256sum(ckpt))
    manifest = {
        "format": FORMAT_VERSION, "num_users": rec.num_users, "num_items": rec.num_items, "dim": users.shape[1],
        "score": "inner product of users.npy and items.npy rows", "raw_ids": rec.data.user_ids is not None and rec.data.item_ids is not None,
        "exclude": list(rec.exclude), "index": settings,
        "files": {"users": "users.npy", "items": "items.npy", "user_ids": "user_ids.txt", "item_ids": "item_ids.txt",
                  "seen": "seen.npz", "index": "items.faiss", "config": "config.yaml", "provenance": "provenance.json"},
    }
    with atomic_folder(out) as folder:
        np.save(folder / "users.npy", users)
        np.save(folder / "items.npy", items)
        write_ids(folder / "user_ids.txt", rec.user_ids)
        write_ids(folder / "item_ids.txt", rec.item_ids)
        np.savez(folder / "seen.npz", indptr=np.asarray(seen_indptr, np.int64), items=np.asarray(seen_items, np.int64))
        faiss.write_index(index, str(folder / "items.faiss"))
        config = {key: value for key, value in rec.config.items() if key not in RUN_ONLY_KEYS}
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        (folder / "provenance.json").write_text(
            json.dumps({"checkpoint": rec.provenance, "export": exported}, indent=2) + "\n", encoding="utf-8")
        (folder / "export.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    out = export(args)
    print(f"exported {out}: users.npy, items.npy, id maps, seen.npz, items.faiss ({args.index}), config, provenance")
    return 0
