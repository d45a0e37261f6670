"""write_atomic: whole files or the old ones, hidden temporary names that keep the suffixes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from anunet_core.io import write_atomic

REPO = Path(__file__).resolve().parents[3]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_the_whole_content_and_returns_the_path(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    returned = write_atomic(target, lambda tmp: tmp.write_bytes(b'{"dice": 0.93}\n'))
    assert returned == target and isinstance(returned, Path)
    assert target.read_bytes() == b'{"dice": 0.93}\n'
    assert listing(tmp_path) == ["summary.json"]


def test_accepts_a_string_path(tmp_path: Path) -> None:
    returned = write_atomic(str(tmp_path / "a.txt"), lambda tmp: tmp.write_text("x"))
    assert returned == tmp_path / "a.txt" and isinstance(returned, Path)
    assert (tmp_path / "a.txt").read_text() == "x"


@pytest.mark.parametrize(
    "name,suffixes",
    [
        ("case_001.nii.gz", ".nii.gz"),
        ("part-0.parquet", ".parquet"),
        ("errors.json", ".json"),
        ("README", ""),
    ],
)
def test_temporary_file_is_hidden_beside_the_target_and_keeps_the_suffixes(
    tmp_path: Path, name: str, suffixes: str
) -> None:
    target = tmp_path / name
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert not tmp.exists()  # a fresh name
        assert not target.exists()  # the target appears only after the write
        tmp.write_bytes(b"data")

    write_atomic(target, write)
    (tmp,) = seen
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".")
    assert tmp.name != target.name and tmp.name != "." + name
    assert tmp.name.endswith(suffixes)
    assert "".join(tmp.suffixes).endswith(suffixes)  # what format-from-extension writers read
    assert not tmp.exists()
    assert target.read_bytes() == b"data"


def test_temporary_names_differ_between_calls(tmp_path: Path) -> None:
    seen: list[str] = []

    def write(tmp: Path) -> None:
        seen.append(tmp.name)
        tmp.write_text("x")

    for _ in range(3):
        write_atomic(tmp_path / "mask.nii.gz", write)
    assert len(set(seen)) == 3


def test_parent_folders_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c" / "mask.nii.gz"
    write_atomic(target, lambda tmp: tmp.write_bytes(b"\x1f\x8b"))
    assert target.read_bytes() == b"\x1f\x8b"
    assert listing(target.parent) == ["mask.nii.gz"]


def test_overwriting_replaces_the_content(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_atomic(target, lambda tmp: tmp.write_text("a much longer old content\n"))
    write_atomic(target, lambda tmp: tmp.write_text("new\n"))
    assert target.read_text() == "new\n"  # replaced, not overwritten in place
    assert listing(tmp_path) == ["report.json"]


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("old", [b"old content\n", None], ids=["over-an-old-file", "no-old-file"])
@pytest.mark.parametrize("written_before_failing", [b"", b"half"], ids=["nothing-written", "half-written"])
def test_a_failing_write_propagates_and_leaves_the_old_file(
    tmp_path: Path, old: bytes | None, written_before_failing: bytes
) -> None:
    target = tmp_path / "part-0.parquet"
    if old is not None:
        target.write_bytes(old)

    def write(tmp: Path) -> None:
        if written_before_failing:
            tmp.write_bytes(written_before_failing)
        raise Boom("disk on fire")

    with pytest.raises(Boom, match="disk on fire"):
        write_atomic(target, write)
    if old is None:
        assert listing(tmp_path) == []
    else:
        assert target.read_bytes() == old
        assert listing(tmp_path) == ["part-0.parquet"]  # no temporary file left behind


def test_a_write_that_creates_nothing_fails_and_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(FileNotFoundError):
        write_atomic(target, lambda tmp: None)
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["out.txt"]


def test_keyboard_interrupt_in_write_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def write(tmp: Path) -> None:
        tmp.write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, write)
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["out.txt"]


CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from anunet_core.io import write_atomic

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"N" * 5000)  # half of the new content
            f.flush()
            os.fsync(f.fileno())
        print(tmp.name, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    write_atomic(sys.argv[1], write)
    print("not reached", flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_process_killed_mid_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "cases" / "case_007.nii.gz"
    target.parent.mkdir()
    old = b"O" * 10_000
    target.write_bytes(old)

    done = subprocess.run(
        [sys.executable, "-c", CRASH, str(target)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    tmp_name = done.stdout.strip()
    assert "not reached" not in tmp_name

    assert target.read_bytes() == old  # whole, and the old one
    leftovers = [name for name in listing(target.parent) if name != target.name]
    # the temporary file may survive a SIGKILL, but hidden (and so ignored by archive discovery)
    assert leftovers == [tmp_name]
    assert tmp_name.startswith(".") and tmp_name.endswith(".nii.gz")
    assert (target.parent / tmp_name).read_bytes() == b"N" * 5000


def test_recover_folder_puts_back_a_dataset_a_killed_swap_set_aside(tmp_path) -> None:
    """A run killed between write_folder_atomic's two renames: no dataset, the old one aside."""
    from anunet_core.io import recover_folder

    old = tmp_path / ".ds.old-0123456789ab"
    (old / "train").mkdir(parents=True)
    (old / "summary.json").write_text("{}")
    (tmp_path / ".ds.staging-feedfacecafe" / "train").mkdir(parents=True)
    removed = recover_folder(tmp_path / "ds")
    assert (tmp_path / "ds" / "summary.json").read_text() == "{}" and (tmp_path / "ds" / "train").is_dir()
    assert [p.name for p in removed] == [".ds.staging-feedfacecafe"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_recover_folder_removes_leftovers_beside_a_whole_dataset(tmp_path) -> None:
    from anunet_core.io import recover_folder

    (tmp_path / "ds").mkdir()
    (tmp_path / ".ds.old-aaaaaaaaaaaa").mkdir()
    (tmp_path / ".ds.staging-bbbbbbbbbbbb").mkdir()
    (tmp_path / ".other.staging-cccccccccccc").mkdir()  # another output's: not ours to touch
    assert len(recover_folder(tmp_path / "ds")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.staging-cccccccccccc", "ds"]
    assert recover_folder(tmp_path / "missing" / "ds") == []
