"""Dataset registry: downloads from a local HTTP server started by the test, checksums, truncation, atomic writes,
the processed cache keyed by content, the offline mirror, preparations run once by recplug's own commands, and the
registered sums and statistics of Gowalla, TikTok and Amazon Office (served from ../shared/data as a mirror)."""

from __future__ import annotations

import contextlib
import hashlib
import re
import shlex
import threading
import time
import warnings
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from recplug.core.cli import features
from recplug.core.data import registry, resolve
from recplug.core.data.dataset import DataError
from recplug.core.data.download import download
from recplug.core.data.formats.raw import RawOptions
from recplug.core.data.registry import DatasetSpec, RemoteFile
from recplug.core.data.resolve import load_dataset
from recplug.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
SHARED = ROOT.parent / "shared" / "data"
GOWALLA = SHARED / "gowalla"

TRAIN = "0 0 1\n1 1 2\n2 2 0\n"
TEST = "0 2\n1 0\n2 1\n"


class Handler(SimpleHTTPRequestHandler):
    """Serves the test's folder; ``/truncated/<file>`` announces more bytes than it sends, then hangs up."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.startswith(("/trickle/", "/stall/")):  # a byte every 0.1 s; or half the body, then silence
            body = (Path(self.directory) / self.path.split("/", 2)[2]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gives up first
                if self.path.startswith("/stall/"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    time.sleep(3)
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
            return
        if self.path.startswith("/truncated/"):
            body = (Path(self.directory) / self.path.removeprefix("/truncated/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``(base URL, served folder)`` of an HTTP server on localhost."""
    served = tmp_path / "served"
    (served / "toy").mkdir(parents=True)
    (served / "toy" / "train.txt").write_text(TRAIN)
    (served / "toy" / "test.txt").write_text(TEST)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Handler(*a, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def toy(server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> DatasetSpec:
    url, _ = server
    spec = DatasetSpec(
        name="toy", format="lightgcn",
        files=(RemoteFile("train.txt", f"{url}/toy/train.txt", sha(TRAIN), len(TRAIN)),
               RemoteFile("test.txt", f"{url}/toy/test.txt", sha(TEST), len(TEST))),
        stats={"users": 3, "items": 3, "train_interactions": 6, "test_interactions": 3},
    )
    monkeypatch.setitem(registry.REGISTRY, "toy", spec)
    monkeypatch.delenv(registry.MIRROR_ENV, raising=False)
    return spec


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")] if folder.exists() else []


def test_fetch_downloads_verifies_and_reuses(toy: DatasetSpec, tmp_path: Path) -> None:
    folder = registry.fetch("toy", tmp_path / "cache", progress=False)
    assert (folder / "train.txt").read_text() == TRAIN and leftovers(folder) == []
    (folder / "test.txt").write_text("0 0\n")  # a corrupted cached file is downloaded again
    registry.fetch("toy", tmp_path / "cache", progress=False)
    assert (folder / "test.txt").read_text() == TEST


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    dest = tmp_path / "dl" / "train.txt"
    with pytest.raises(DataError, match=r"^train\.txt: checksum mismatch: sha256 [0-9a-f]{64}, expected 0{64}") as info:
        download(f"{url}/toy/train.txt", dest, "0" * 64, progress=False)
    assert "\n" not in str(info.value)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_truncated_download_is_an_error_and_leaves_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    dest = tmp_path / "dl" / "train.txt"
    with pytest.raises(DataError, match=r"^train\.txt: truncated download") as info:
        download(f"{url}/truncated/toy/train.txt", dest, sha(TRAIN), progress=False)
    assert "\n" not in str(info.value)
    assert not dest.exists() and leftovers(dest.parent) == []


@pytest.mark.parametrize(("route", "message"), [
    ("trickle", r"^train\.txt: download from .* stalled: \d+ bytes in 1 s, under 1024 bytes/s \(after \d+ bytes\)$"),
    ("stall", r"^train\.txt: download from .* timed out after 9 bytes \(no data for 1 s\)$"),
])
def test_a_server_that_trickles_or_stalls_is_given_up_on(server: tuple[str, Path], tmp_path: Path, route: str,
                                                         message: str) -> None:
    """A byte every 0.1 s kept one 1 MiB read waiting forever: each byte reset the socket's timeout."""
    url, _ = server
    dest = tmp_path / "dl" / "train.txt"
    with pytest.raises(DataError, match=message):
        download(f"{url}/{route}/toy/train.txt", dest, sha(TRAIN), progress=False, timeout=1)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_short_file_without_content_length_is_caught_by_the_registered_size(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    _, served = server
    (served / "short.txt").write_text(TRAIN[:5])
    with pytest.raises(DataError, match=r"short\.txt: truncated download .* got 5 of 18 bytes \(registered size\)"):
        download((served / "short.txt").as_uri(), tmp_path / "short.txt", None, size=len(TRAIN), progress=False)


def test_a_body_longer_than_the_registered_size_is_cut_off(server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = server
    (served / "big.txt").write_bytes(b"x" * (3 << 20))  # three chunks: refused at the first one past the size
    dest = tmp_path / "dl" / "big.txt"
    with pytest.raises(DataError, match=r"^big\.txt: download from .* sends more than the registered 18 bytes"):
        download(f"{url}/big.txt", dest, None, size=len(TRAIN), progress=False)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_a_cache_with_something_in_the_way_is_named(toy: DatasetSpec, tmp_path: Path) -> None:
    (tmp_path / "c1" / "datasets").mkdir(parents=True)
    (tmp_path / "c1" / "datasets" / "toy").write_text("not a folder")
    with pytest.raises(DataError, match=r"c1/datasets/toy: a file where the dataset cache needs a folder"):
        registry.fetch("toy", tmp_path / "c1", progress=False)
    (tmp_path / "c2" / "datasets" / "toy" / "train.txt").mkdir(parents=True)
    with pytest.raises(DataError, match=r"toy/train\.txt: a folder where the cache keeps toy's file train\.txt"):
        registry.fetch("toy", tmp_path / "c2", progress=False)


def test_a_cache_root_that_cannot_be_a_folder_is_refused_naming_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RECPLUG_CACHE`` (or ``data.cache_dir``/``--cache-dir``) at a file, a looping or dangling link, or a place
    where no folder can be made: one line naming it, before any OS error of a first write."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    cases = {
        "file": "a file, not a folder",
        "file/sub": "is a file, not a folder",
        "loop_a": "which leads nowhere",
        "dangling": "which leads nowhere",
        "x" * 300: "cannot be created",
    }
    for name, message in cases.items():
        monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / name))
        with pytest.raises(ConfigError, match=f"^RECPLUG_CACHE {re.escape(str(tmp_path / name))}: .*{message}"):
            registry.fetch("gowalla", progress=False)
        with pytest.raises(ConfigError, match=r"^data\.cache_dir \(--cache-dir\) .*" + message):
            registry.cache_root(tmp_path / name)
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / "new" / "cache"))
    assert registry.cache_root() == tmp_path / "new" / "cache" and not (tmp_path / "new").exists()


def test_a_cache_root_is_expanded_refused_when_blank_and_named_when_nothing_can_be_written_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RECPLUG_CACHE='~/c'`` made a folder named ``~`` in the working directory, ``' '`` one named ``' '``; an
    existing folder where nothing can be made (``/proc/self``) ended in a FileNotFoundError naming no variable."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(registry.CACHE_ENV, "~/c")
    assert registry.cache_root() == tmp_path / "home" / "c"
    assert registry.cache_root("~/d") == tmp_path / "home" / "d"
    for blank in (" ", "\t"):
        monkeypatch.setenv(registry.CACHE_ENV, blank)
        with pytest.raises(ConfigError, match=f"^RECPLUG_CACHE {re.escape(repr(blank))}: a blank path; give a folder"):
            registry.cache_root()
        with pytest.raises(ConfigError, match=r"^data\.cache_dir \(--cache-dir\) .*: a blank path"):
            registry.cache_root(blank)
    assert list(tmp_path.iterdir()) == []  # no folder named ~ or ' ' (nor the home's: nothing was written)
    if Path("/proc/self").is_dir():
        monkeypatch.setenv(registry.CACHE_ENV, "/proc/self")
        with pytest.raises(ConfigError, match=r"^RECPLUG_CACHE /proc/self: its folder /proc/self/datasets: cannot be "
                                              r"created in /proc/self \("):
            registry.fetch("gowalla", progress=False)


def test_a_local_mirror_that_is_no_folder_is_refused_naming_it(
    toy: DatasetSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "file").write_text("x")
    for name, message in {"loop_a": "a symbolic link that leads nowhere", "file": "a file, not a folder",
                          "missing": "no such folder"}.items():
        monkeypatch.setenv(registry.MIRROR_ENV, str(tmp_path / name))
        with pytest.raises(ConfigError, match=f"^RECPLUG_DATA_MIRROR {re.escape(str(tmp_path / name))}: {message}"):
            registry.fetch("toy", tmp_path / "cache", progress=False)
        with pytest.raises(ConfigError, match=f"^mirror \\(--mirror\\) .*: {message}"):
            registry.fetch("toy", tmp_path / "cache", mirror=str(tmp_path / name), progress=False)
    monkeypatch.setenv(registry.MIRROR_ENV, "x" * 5000)  # [Errno 36] File name too long, naming no variable
    with pytest.raises(ConfigError, match=r"^RECPLUG_DATA_MIRROR 'x+'\.\.\. \(5000 characters\): File name too long$"):
        registry.fetch("toy", tmp_path / "cache", progress=False)


def test_a_tilde_of_no_user_names_the_variable_or_option(
    toy: DatasetSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fuzz round 5, M3: '~nobodyxyz/c' ended in 'Could not determine home directory. (RuntimeError in pathlib)'."""
    nobody = "~recplug-no-such-user/c"
    monkeypatch.setenv(registry.CACHE_ENV, nobody)
    with pytest.raises(ConfigError) as info:
        registry.cache_root()
    assert str(info.value) == f"RECPLUG_CACHE {nobody}: no user 'recplug-no-such-user' to expand ~ for"
    (tmp_path / "log.csv").write_text("user,item\n0,1\n")
    with pytest.raises(ConfigError) as info:
        load_dataset(tmp_path / "log.csv", cache_dir=nobody)
    assert str(info.value) == f"data.cache_dir (--cache-dir) {nobody}: no user 'recplug-no-such-user' to expand ~ for"
    monkeypatch.setenv(registry.MIRROR_ENV, nobody)
    with pytest.raises(ConfigError) as info:
        registry.fetch("toy", tmp_path / "cache", progress=False)
    assert str(info.value) == f"RECPLUG_DATA_MIRROR {nobody}: no user 'recplug-no-such-user' to expand ~ for"
    with pytest.raises(ConfigError, match=r"^mirror \(--mirror\) ~recplug-no-such-user/c: no user"):
        registry.fetch("toy", tmp_path / "cache", mirror=nobody, progress=False)


def test_a_blank_mirror_is_refused_and_a_path_object_is_read(
    toy: DatasetSpec, server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fuzz round 5, M8: mirror=' ' was '--mirror  : no such folder' (a CLI option in the API), mirror='' was taken
    for no mirror; a Path mirror ended in TypeError."""
    for blank in ("", " "):
        with pytest.raises(ConfigError) as info:
            load_dataset("toy", cache_dir=tmp_path / "cache", mirror=blank, progress=False)
        assert str(info.value) == f"mirror (--mirror) {blank!r}: a blank path; give a folder or URL, or none for no " \
            "mirror"
    monkeypatch.setenv(registry.MIRROR_ENV, " ")
    with pytest.raises(ConfigError, match=r"^RECPLUG_DATA_MIRROR ' ': a blank path"):
        registry.fetch("toy", tmp_path / "cache", progress=False)
    monkeypatch.setenv(registry.MIRROR_ENV, "")  # unset
    _, served = server
    assert load_dataset("toy", cache_dir=tmp_path / "cache", mirror=served, progress=False).num_users == 3


def test_missing_file_is_an_error(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(DataError, match=r"^nope\.txt: download from .* failed"):
        download(f"{url}/toy/nope.txt", tmp_path / "nope.txt", None, progress=False)


def test_load_checks_statistics_and_caches_the_processed_dataset(
    toy: DatasetSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load_dataset("toy", cache_dir=tmp_path / "cache", progress=False)
    assert (data.name, data.num_users, data.num_interactions("test")) == ("toy", 3, 3)
    cached = list((tmp_path / "cache" / "processed").glob("toy-*.pt"))
    assert len(cached) == 1
    monkeypatch.setitem(registry.READERS, "lightgcn", lambda folder: pytest.fail("processed cache not used"))
    again = load_dataset("toy", cache_dir=tmp_path / "cache", progress=False)
    assert again.content_hash() == data.content_hash()


def test_a_registered_name_with_a_format_is_the_registered_dataset(toy: DatasetSpec, tmp_path: Path) -> None:
    """``format`` sent a registered name to a folder reader ("toy: dataset folder not found"); the registered
    format is loaded, and another is refused."""
    data = load_dataset("toy", format="lightgcn", cache_dir=tmp_path / "cache", progress=False)
    assert data.name == "toy"
    with pytest.raises(DataError, match=r"^toy: a registered dataset in lightgcn format, not mmrec; leave format auto$"):
        load_dataset("toy", format="mmrec", cache_dir=tmp_path / "cache", progress=False)


@pytest.mark.parametrize("damage", [b"", b"\x80\x02garbage", b"PK\x03\x04truncated"])
def test_a_corrupted_processed_cache_is_reported_and_rebuilt(damage: bytes, toy: DatasetSpec, tmp_path: Path) -> None:
    data = load_dataset("toy", cache_dir=tmp_path / "cache", progress=False)
    (cached,) = (tmp_path / "cache" / "processed").glob("toy-*.pt")
    cached.write_bytes(damage)
    with pytest.warns(UserWarning, match="corrupted processed-dataset cache.*rebuilding it"):
        again = load_dataset("toy", cache_dir=tmp_path / "cache", progress=False)
    assert again.content_hash() == data.content_hash() and cached.stat().st_size > len(damage)


def test_a_stale_processed_cache_is_rebuilt(toy: DatasetSpec, tmp_path: Path) -> None:
    data = load_dataset("toy", cache_dir=tmp_path / "cache", progress=False)
    (cached,) = (tmp_path / "cache" / "processed").glob("toy-*.pt")
    state = torch.load(cached, weights_only=True)
    users, items = state["splits"]["train"]
    state["splits"]["train"] = [users[:2], items[:2]]  # a readable copy that is no longer this dataset
    torch.save(state, cached)
    with pytest.warns(UserWarning, match=r"expected 6 train interactions, read 2 .*rebuilding it"):
        again = load_dataset("toy", cache_dir=tmp_path / "cache", progress=False)
    assert again.content_hash() == data.content_hash()


def test_unexpected_statistics_are_an_error(toy: DatasetSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = DatasetSpec(toy.name, toy.format, toy.files, {**toy.stats, "items": 4})
    monkeypatch.setitem(registry.REGISTRY, "toy", wrong)
    with pytest.raises(DataError, match=r"toy: expected 4 items, read 3 \(field items\)"):
        load_dataset("toy", cache_dir=tmp_path / "cache", progress=False)


def test_mirror_folder_serves_registered_files(toy: DatasetSpec, server: tuple[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _, served = server
    monkeypatch.setenv(registry.MIRROR_ENV, str(served))
    unreachable = tuple(RemoteFile(f.name, "http://127.0.0.1:9/unreachable", f.sha256) for f in toy.files)
    broken = DatasetSpec("toy", "lightgcn", unreachable)
    monkeypatch.setitem(registry.REGISTRY, "toy", broken)
    assert load_dataset("toy", cache_dir=tmp_path / "cache").num_interactions("train") == 6


def test_unknown_name_lists_the_registered_datasets(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no-such-set: no such .* nor a registered dataset \(registered: .*gowalla"):
        load_dataset("no-such-set", cache_dir=tmp_path)
    for name in (str(tmp_path), "default"):  # Fuzz round 5, M8: an existing folder was 'no such dataset folder'
        with pytest.raises(DataError) as info:
            registry.fetch(name, tmp_path / "cache", progress=False)
        assert re.fullmatch(f"{re.escape(name)}: not a registered dataset; only those are downloaded \\(registered: "
                            ".*gowalla.*\\)", str(info.value))


@pytest.mark.parametrize("name", ["gowalla", "tiktok", "amazon_office"])
def test_registered_sums_match_the_shipped_sha256sums(name: str) -> None:
    folder = SHARED / name
    if not (folder / "SHA256SUMS").is_file():
        pytest.skip(f"../shared/data/{name} not present")
    shipped = dict(line.split()[::-1] for line in (folder / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert {f.name: f.sha256 for f in registry.get_spec(name).files} == shipped
    sizes = {n: (folder / n).stat().st_size for n in shipped}
    assert {f.name: f.size for f in registry.get_spec(name).files} == sizes


def test_a_file_without_a_public_url_needs_a_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.MIRROR_ENV, raising=False)
    with pytest.raises(DataError) as info:
        load_dataset("tiktok", cache_dir=tmp_path)
    assert str(info.value) == (
        f"tiktok: tiktok.inter is served by no public URL; set {registry.MIRROR_ENV} to a folder or URL holding "
        "tiktok/tiktok.inter (see docs/data.md)"
    )


@pytest.mark.skipif(not GOWALLA.is_dir(), reason="../shared/data/gowalla not present")
def test_gowalla_through_a_local_mirror(tmp_path: Path) -> None:
    data = load_dataset("gowalla", cache_dir=tmp_path / "cache", mirror=str(GOWALLA.parent), progress=False)
    assert (data.num_users, data.num_items) == (29858, 40981)
    assert (data.num_interactions("train"), data.num_interactions("test")) == (810128, 217242)


def test_raw_log_cache_is_keyed_by_content_and_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "log.csv"
    log.write_text("user,item\n" + "\n".join(f"u{u},i{i}" for u in range(6) for i in range(5)) + "\n")
    data = load_dataset(log, cache_dir=tmp_path / "cache")
    (folder,) = (tmp_path / "cache" / "processed").glob("log-*")
    assert {"log.inter", "user_map.tsv", "item_map.tsv", registry.COMPLETE_MARKER} <= {p.name for p in folder.iterdir()}
    assert (folder / "user_map.tsv").read_text().splitlines()[:2] == ["raw_id\tuser_id", "u0\t0"]
    assert data.user_ids == [f"u{u}" for u in range(6)] and data.source == str(folder)
    monkeypatch.setattr(resolve, "process_raw", lambda *a, **k: pytest.fail("processed cache not used"))
    assert load_dataset(log, cache_dir=tmp_path / "cache").content_hash() == data.content_hash()
    monkeypatch.undo()
    load_dataset(log, raw_options=RawOptions(seed=1), cache_dir=tmp_path / "cache")
    log.write_text(log.read_text() + "u0,i9\n")
    load_dataset(log, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "processed").glob("log-*"))) == 3


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda f: (f / "log.inter").write_text((f / "log.inter").read_text()[:-20]), "log.inter changed since it was"),
    (lambda f: (f / "item_map.tsv").unlink(), "item_map.tsv is missing since it was written"),
    (lambda f: np.save(f / "image_feat.npy", np.zeros((5, 2))), "image_feat.npy is new since it was written"),
    (lambda f: (f / registry.COMPLETE_MARKER).write_text("{"), "JSONDecodeError"),
    (lambda f: (f / registry.COMPLETE_MARKER).write_text(""), "JSONDecodeError"),
])
def test_a_damaged_raw_log_cache_is_reported_once_and_rebuilt(tmp_path: Path, damage, reason: str) -> None:
    """Fuzz round 5, S12: an edited processed copy of a raw log was read as it was (fewer interactions, no word)."""
    log = tmp_path / "log.csv"
    log.write_text("user,item\n" + "\n".join(f"u{u},i{i}" for u in range(6) for i in range(5)) + "\n")
    data = load_dataset(log, cache_dir=tmp_path / "cache")
    (folder,) = (tmp_path / "cache" / "processed").glob("log-*")
    damage(folder)
    with pytest.warns(UserWarning, match=f"^{re.escape(str(folder))}: corrupted processed-dataset cache \\(.*"
                                         f"{re.escape(reason)}.*\\); rebuilding it$"):
        again = load_dataset(log, cache_dir=tmp_path / "cache")
    assert again.content_hash() == data.content_hash() and again.user_ids == data.user_ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset(log, cache_dir=tmp_path / "cache").content_hash() == data.content_hash()


def test_datamodule_loads_registered_names_and_carves_validation(
    toy: DatasetSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recplug.core.data.datamodule import RecDataModule

    dm = RecDataModule(path="toy", cache_dir=str(tmp_path / "cache"), valid_ratio=0.5, batch_size=4)
    assert dm.num_users == 3 and dm.validation_split == "valid"
    assert dm.data.num_interactions("valid") == 3 and dm.data.num_interactions("train") == 3
    assert torch.equal(dm.eval_task("valid").users, torch.arange(3))


LOG = "u\ti\tn\n" + "".join(f"U{u}\tI{(u + k) % 6}\t{k}\n" for u in range(8) for k in range(4))
ITEMS = "item_id\tcategories\n" + "".join(f"I{i}\tShelf {i % 2}, Box {i % 3}\n" for i in range(6))


@pytest.fixture
def prepared(server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> DatasetSpec:
    """A raw log and an item table served over HTTP, prepared by ``data convert`` and ``features categories``."""
    url, served = server
    (served / "shop").mkdir()
    (served / "shop" / "log.tsv").write_text(LOG)
    (served / "shop" / "items.tsv").write_text(ITEMS)
    spec = DatasetSpec(
        name="shop", format="mmrec",
        files=(RemoteFile("log.tsv", f"{url}/shop/log.tsv", sha(LOG)), RemoteFile("items.tsv", None, sha(ITEMS))),
        stats={"users": 8, "items": 6, "test_interactions": 8},
        prepare=(
            ("data", "convert", "{raw}/log.tsv", "{out}", "--name", "shop", "--user-col", "u", "--item-col", "i",
             "--time-col", "n", "--split", "loo"),
            ("features", "categories", "--items", "{raw}/items.tsv", "--id-column", "item_id", "--column",
             "categories", "--dataset", "{out}"),
        ),
    )
    monkeypatch.setitem(registry.REGISTRY, "shop", spec)
    monkeypatch.setenv(registry.MIRROR_ENV, str(served))
    return spec


def test_preparation_runs_the_commands_once_and_keeps_stdout_clean(
    prepared: DatasetSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = load_dataset("shop", cache_dir=tmp_path / "cache")
    captured = capsys.readouterr()
    assert captured.out == ""  # `recplug data stats shop --json` must print JSON only
    assert "shop: recplug data convert " in captured.err and "shop: recplug features categories " in captured.err
    assert (data.name, data.num_users, data.num_items) == ("shop", 8, 6)
    (folder,) = [p for p in (tmp_path / "cache" / "processed").iterdir() if p.is_dir()]
    assert folder.name.startswith("shop-") and (folder / registry.COMPLETE_MARKER).exists()
    assert {"shop.inter", "categories_feat.npy", "item_map.tsv"} <= {p.name for p in folder.iterdir()}
    # row i is item i of the converted id map: item I<k> is in shelf k % 2 and box k % 3
    vocabulary = ["Box 0", "Box 1", "Box 2", "Shelf 0", "Shelf 1"]
    for index, raw in enumerate(data.item_ids):
        k = int(raw[1:])
        expected = [float(v in (f"Shelf {k % 2}", f"Box {k % 3}")) for v in vocabulary]
        assert data.features["categories"][index].tolist() == expected
    monkeypatch.setattr(registry, "_run_command", lambda *a: pytest.fail("prepared folder not reused"))
    assert load_dataset("shop", cache_dir=tmp_path / "cache").content_hash() == data.content_hash()


def test_a_failing_preparation_is_one_line_and_leaves_no_folder(
    prepared: DatasetSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = DatasetSpec("shop", "mmrec", prepared.files, prepare=(("data", "convert", "{raw}/log.tsv", "{out}"),))
    monkeypatch.setitem(registry.REGISTRY, "shop", broken)
    with pytest.raises(DataError) as info:
        load_dataset("shop", cache_dir=tmp_path / "cache", progress=False)
    assert re.fullmatch(r"shop: preparation `recplug data convert` failed: .*log\.tsv:1: no column 'user' .*",
                        str(info.value))
    assert not [p for p in (tmp_path / "cache" / "processed").iterdir() if p.is_dir()]


def test_a_preparation_failing_on_an_argument_is_one_data_error(
    prepared: DatasetSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error built from several arguments (:class:`InvalidArgument`) could not be re-raised as its own type:
    a TypeError, a traceback."""
    from recplug.core.cli import data as data_command
    from recplug.core.errors import InvalidArgument

    def refuse(argv: list[str]) -> None:
        raise InvalidArgument("data convert", "k_core", -1, ">= 0")

    monkeypatch.setattr(data_command, "run", refuse)
    with pytest.raises(DataError, match=r"^shop: preparation `recplug data convert` failed: data convert.k_core must be >= 0, got -1$"):
        load_dataset("shop", cache_dir=tmp_path / "cache", progress=False)


def test_registered_feature_files_choose_the_modalities(prepared: DatasetSpec, tmp_path: Path) -> None:
    data = load_dataset("shop", feature_files={"cat": "categories_feat.npy"}, cache_dir=tmp_path / "cache")
    assert list(data.features) == ["cat"] and data.features["cat"].shape == (6, 5)
    assert load_dataset("shop", feature_files={}, cache_dir=tmp_path / "cache").features == {}


def test_docs_list_the_exact_amazon_office_preparation() -> None:
    text = re.sub(r"\\\n\s*", "", (ROOT / "docs" / "data.md").read_text(encoding="utf-8"))
    for step in registry.AMAZON_OFFICE_PREPARATION:
        words = [w.format(raw="../shared/data/amazon_office", out="data/amazon_office") for w in step]
        assert f"recplug {shlex.join(words)}" in text


@pytest.mark.skipif(not (SHARED / "tiktok").is_dir(), reason="../shared/data/tiktok not present")
def test_tiktok_through_the_shared_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry.MIRROR_ENV, str(SHARED))
    data = load_dataset("tiktok", cache_dir=tmp_path / "cache")
    assert {m: tuple(f.shape) for m, f in data.features.items()} == {"audio": (6710, 128), "image": (6710, 128)}
    assert data.summary()["valid_interactions"] == 3046 and len(data.notes) == 2  # MMRec's cold-start rule


def length_encoder(texts: list[str]) -> np.ndarray:
    """(characters, words) of each text: a stand-in for all-MiniLM-L6-v2 that tells which text is in which row."""
    return np.array([[len(t), len(t.split())] for t in texts], dtype=np.float32)


@pytest.mark.skipif(not (SHARED / "amazon_office").is_dir(), reason="../shared/data/amazon_office not present")
def test_amazon_office_is_prepared_from_the_shared_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Convert + text + categories through the registered name, the text encoder replaced by ``length_encoder``
    (the real one: tests/core/cli/test_features.py): row i of each modality is item i of the converted item map."""
    import csv

    monkeypatch.setenv(registry.MIRROR_ENV, str(SHARED))
    monkeypatch.setattr(features, "load_text_encoder", lambda model=None, device=None: length_encoder)
    data = load_dataset("amazon_office", cache_dir=tmp_path / "cache", progress=False)
    assert {m: tuple(f.shape) for m, f in data.features.items()} == {"categories": (2420, 366), "text": (2420, 2)}
    with open(SHARED / "amazon_office" / "items.tsv", encoding="utf-8", newline="") as handle:
        rows = {row["item_id"]: row for row in csv.DictReader(handle, delimiter="\t")}
    vocabulary = sorted({t.strip() for row in rows.values() for t in row["categories"].split(",")} - {""})
    categories, text = data.features["categories"].numpy(), data.features["text"].numpy()
    for index in (0, 1, 777, 2419):
        row = rows[data.item_ids[index]]
        joined = " ".join(v for k in ("title", "brand", "categories", "description") if (v := row[k].strip()))
        assert text[index].tolist() == [len(joined), len(joined.split())]
        tokens = {t.strip() for t in row["categories"].split(",")} - {""}
        assert [vocabulary[j] for j in np.flatnonzero(categories[index])] == sorted(tokens)
