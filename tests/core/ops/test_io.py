"""Atomic writes: the destination holds the old content or the whole new one, never a part, and nothing is left
beside it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from recplug.core.ops.io import atomic_folder, atomic_write


def test_a_finished_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "result.json"
    with atomic_write(path) as handle:
        handle.write("first")
        assert not path.exists()  # nothing at the destination until the block ends
    with atomic_write(path, "wb") as handle:
        handle.write(b"second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_a_failed_write_leaves_the_old_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "feat.npy"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_write(path) as handle:
            handle.write("half of the new")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["feat.npy"]


def test_the_file_gets_the_permissions_of_an_ordinary_write(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "atomic") as handle:
        handle.write("x")
    (tmp_path / "plain").write_text("x")
    mode = lambda name: stat.S_IMODE(os.stat(tmp_path / name).st_mode)  # noqa: E731
    assert mode("atomic") == mode("plain")


def test_only_whole_new_files_are_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic_write(tmp_path / "f", "a"):
            pass


def test_a_folder_takes_its_place_only_when_complete_and_the_first_one_wins(tmp_path: Path) -> None:
    target = tmp_path / "processed"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError
    assert not target.exists() and not list(tmp_path.iterdir())
    with atomic_folder(target) as first:
        with atomic_folder(target) as second:
            (second / "from").write_text("second")
        (first / "from").write_text("first")  # finishes after the other: discarded
    assert (target / "from").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["processed"]


def test_a_link_to_an_empty_folder_is_followed(tmp_path: Path) -> None:
    """`recplug export --out link` (a link to an empty folder) ended in NotADirectoryError (fuzz round 5)."""
    (tmp_path / "storage").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "storage")
    with atomic_folder(tmp_path / "link") as folder:
        (folder / "users.npy").write_text("x")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "storage" / "users.npy").read_text() == "x"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_a_folder_gets_the_permissions_of_an_ordinary_mkdir(tmp_path: Path, umask: int) -> None:
    """Fuzz round 5, S5: mkdtemp's 0700 was renamed into place, so exports, converted datasets and a shared cache
    could be read by their owner only, whatever the umask."""
    old = os.umask(umask)
    try:
        with atomic_folder(tmp_path / "atomic"):
            pass
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    mode = lambda name: stat.S_IMODE(os.stat(tmp_path / name).st_mode)  # noqa: E731
    assert mode("atomic") == mode("plain") == 0o777 & ~umask


def test_check_can_create_names_the_option_and_what_is_in_the_way(tmp_path: Path) -> None:
    from recplug.core.errors import ConfigError
    from recplug.core.ops.io import check_can_create

    check_can_create(tmp_path / "new" / "deeper", "--out")  # creatable: nothing is made
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"^--out .*file/sub: cannot be created: .*file is a file, not a folder$"):
        check_can_create(tmp_path / "file" / "sub", "--out")
    with pytest.raises(ConfigError, match=r"^--out /proc/recplug-x: cannot be created in /proc \("):
        check_can_create("/proc/recplug-x", "--out")
    with pytest.raises(ConfigError, match=r"^--out .*/x{300}/y: cannot be created \(File name too long\)$"):
        check_can_create(Path("/tmp") / ("x" * 300) / "y", "--out")
    with pytest.raises(ConfigError, match=r"^--out /tmp/x{495}\.\.\.: cannot be created \(File name too long\)$"):
        check_can_create(Path("/tmp") / ("x" * 5000), "--out")  # cut: the reason stays within an error line
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    (tmp_path / "dangling").symlink_to("nowhere")
    for link, target in (("a", "b"), ("dangling", "nowhere")):
        with pytest.raises(ConfigError, match=rf"^--out .*/{link}/sub: cannot be created: .*/{link} is a symbolic "
                                              rf"link to {target}, which leads nowhere \(a loop or a missing target\)$"):
            check_can_create(tmp_path / link / "sub", "--out")
