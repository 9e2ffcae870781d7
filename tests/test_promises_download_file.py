"""Promises of a download's file side (`kolbo_async._download_file`) that its mutation run
found untested: without ``overwrite`` a file that appeared at the target is never replaced,
on a filesystem without hard links and on Windows too; the error says so as the OS would;
a failed placement reports its own error and leaves no claim behind; the writer thread is the
SDK's (named, and never keeping the interpreter alive).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import threading
import types
from pathlib import Path

import pytest

from kolbo_async import _download_file
from kolbo_async._download_file import BATCH, TargetExistsError, Writer, open_temp, place
from kolbo_async._exceptions import KolboError

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(1000)


def finished_temp(directory: Path) -> Path:
    temp = directory / ".v.mp4.0123456789ab.part"
    temp.write_bytes(VIDEO)
    return temp


@pytest.fixture
def no_hard_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem without hard links (FAT, exFAT, some network shares)."""

    def link(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", link)


class TestTargetExistsError:
    def test_it_reads_as_the_os_error_would(self) -> None:
        """A `FileExistsError` with errno, strerror and filename, naming the way out."""
        error = TargetExistsError(Path("out") / "v.mp4")
        target = str(Path("out") / "v.mp4")
        assert isinstance(error, FileExistsError)
        assert error.errno == errno.EEXIST
        assert error.filename == target
        assert (
            str(error)
            == error.strerror
            == (
                f"{target!r} appeared while the download ran and was left untouched; "
                "pass overwrite=True to replace it"
            )
        )


@pytest.mark.usefixtures("no_hard_links")
class TestWithoutHardLinks:
    def test_the_file_takes_the_target_name(self, tmp_path: Path) -> None:
        temp, target = finished_temp(tmp_path), tmp_path / "v.mp4"
        place(temp, target, overwrite=False)
        assert target.read_bytes() == VIDEO
        assert list(tmp_path.iterdir()) == [target]

    def test_a_file_that_appeared_is_left_untouched(self, tmp_path: Path) -> None:
        temp, target = finished_temp(tmp_path), tmp_path / "v.mp4"
        target.write_bytes(b"the user's own file")
        with pytest.raises(TargetExistsError) as refused:
            place(temp, target, overwrite=False)
        assert refused.value.filename == str(target)
        assert target.read_bytes() == b"the user's own file"

    def test_a_failed_rename_reports_itself_and_leaves_no_claim(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The empty claim on the name is taken back; the rename's own error is raised
        (also when something else already removed the claim)."""
        temp, target = finished_temp(tmp_path), tmp_path / "v.mp4"
        failure = OSError(errno.EIO, "I/O error")

        def replace(source: object, destination: object) -> None:
            Path(str(destination)).unlink()  # gone already, e.g. a cleaner
            raise failure

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(OSError, match="I/O error") as raised:
            place(temp, target, overwrite=False)
        assert raised.value is failure
        assert not target.exists()


class _Windows(types.ModuleType):
    """`os` as the download module sees it on Windows."""

    name = "nt"

    def __init__(self) -> None:
        super().__init__("os")

    def __getattr__(self, attribute: str) -> object:
        return getattr(os, attribute)


class TestOnWindows:
    """Windows' rename never replaces; the SDK relies on that there."""

    @pytest.fixture(autouse=True)
    def windows(self, monkeypatch: pytest.MonkeyPatch, no_hard_links: None) -> None:
        renamed: list[tuple[str, str]] = []

        def rename(source: object, target: object) -> None:
            if Path(str(target)).exists():
                raise FileExistsError(errno.EEXIST, "Cannot create a file when it exists")
            renamed.append((str(source), str(target)))
            os.replace(str(source), str(target))

        monkeypatch.setattr(os, "rename", rename)
        # The module's view of `os` only: pathlib itself must stay POSIX here.
        monkeypatch.setattr(_download_file, "os", _Windows())
        self.renamed = renamed

    def test_the_file_is_renamed_into_place(self, tmp_path: Path) -> None:
        temp, target = finished_temp(tmp_path), tmp_path / "v.mp4"
        place(temp, target, overwrite=False)
        assert self.renamed == [(str(temp), str(target))]
        assert target.read_bytes() == VIDEO

    def test_a_file_that_appeared_is_left_untouched(self, tmp_path: Path) -> None:
        temp, target = finished_temp(tmp_path), tmp_path / "v.mp4"
        target.write_bytes(b"mine")
        with pytest.raises(TargetExistsError) as refused:
            place(temp, target, overwrite=False)
        assert refused.value.filename == str(target)
        assert target.read_bytes() == b"mine"


class Blocking:
    """A file whose writes wait until released: the writer thread can be looked at."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.writing = threading.Event()
        self.size = 0

    def writelines(self, batch: list[bytes]) -> None:
        self.writing.set()
        self.release.wait(10)
        self.size += sum(map(len, batch))


@pytest.mark.anyio
async def test_the_writer_thread_is_named_and_never_keeps_python_alive() -> None:
    """The thread that writes is named ``kolbo-download`` (leak checks and thread dumps find
    it by name) and is a daemon: an interrupted download does not hang the exit."""
    file = Blocking()
    writer = Writer(file)  # type: ignore[arg-type]
    before = set(threading.enumerate())
    await writer.add(bytes(BATCH))
    assert file.writing.wait(10)
    writing = [t for t in set(threading.enumerate()) - before if t.name == "kolbo-download"]
    assert len(writing) == 1 and writing[0].daemon
    file.release.set()
    await writer.finish()
    assert file.size == BATCH
    assert not writing[0].is_alive()


class Failing:
    """A file on a disk that fills up after the first batch."""

    def __init__(self) -> None:
        self.batches = 0

    def writelines(self, batch: list[bytes]) -> None:
        self.batches += 1
        if self.batches > 1:
            raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.anyio
async def test_a_write_that_fails_in_the_thread_is_raised() -> None:
    """A disk error in the writer thread reaches the download (which then places nothing):
    a short file is never taken for a whole one."""
    writer = Writer(Failing())  # type: ignore[arg-type]
    with pytest.raises(OSError, match="No space left") as raised:  # noqa: PT012
        try:
            for _ in range(4):
                await writer.add(bytes(BATCH))
        finally:
            await writer.finish()  # as the download does, which ends the thread
    assert raised.value.errno == errno.ENOSPC


class TestTemporaryFile:
    @pytest.mark.anyio
    async def test_it_grows_beside_the_target_under_a_hidden_unique_name(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Beside the target (the rename stays on one filesystem), whatever the current
        directory, named ``.NAME.<12 hex>.part`` (room for long names under NAME_MAX)."""
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        target = tmp_path / "videos" / "v.mp4"
        target.parent.mkdir()
        temp, file = await open_temp(target)
        file.close()
        assert temp.parent == target.parent
        assert re.fullmatch(r"\.v\.mp4\.[0-9a-f]{12}\.part", temp.name)

    @pytest.mark.anyio
    async def test_it_never_takes_over_an_existing_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Created exclusively: a file already there under that name is never truncated."""
        monkeypatch.setattr(secrets, "token_hex", lambda n: "0" * (2 * n))
        taken = tmp_path / ".v.mp4.000000000000.part"
        taken.write_bytes(b"someone else's")
        with pytest.raises(KolboError, match="Cannot write the download beside"):
            await open_temp(tmp_path / "v.mp4")
        assert taken.read_bytes() == b"someone else's"

    @pytest.mark.anyio
    async def test_a_directory_that_cannot_take_it_is_named(self, tmp_path: Path) -> None:
        target = tmp_path / "missing" / "v.mp4"
        with pytest.raises(KolboError) as refused:
            await open_temp(target)
        assert str(refused.value).startswith(f"Cannot write the download beside {str(target)!r}: ")
        assert "No such file or directory" in str(refused.value)


def test_with_hard_links_the_file_appears_in_one_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the filesystem has hard links, the finished file is linked into place: readers
    never see an empty claim at the target, as they briefly may without links."""
    linked: list[tuple[str, str]] = []
    real_link = os.link

    def link(source: object, target: object) -> None:
        linked.append((str(source), str(target)))
        real_link(str(source), str(target))

    monkeypatch.setattr(os, "link", link)
    temp, target = finished_temp(tmp_path), tmp_path / "v.mp4"
    place(temp, target, overwrite=False)
    assert linked == [(str(temp), str(target))]
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == VIDEO


class Recording:
    def __init__(self) -> None:
        self.batches: list[int] = []

    def writelines(self, batch: list[bytes]) -> None:
        self.batches.append(sum(map(len, batch)))


@pytest.mark.anyio
async def test_small_chunks_are_handed_to_the_disk_as_they_add_up() -> None:
    """Memory stays flat: chunks are handed over every `BATCH` bytes, not held to the end."""
    file = Recording()
    writer = Writer(file)  # type: ignore[arg-type]
    chunk = bytes(64 * 1024)
    for _ in range(3 * BATCH // len(chunk) + 1):
        await writer.add(chunk)
    await writer.finish()
    assert file.batches == [BATCH, BATCH, BATCH, len(chunk)]


class _FailsOnSecond:
    """A file whose second batch meets a full disk (in the writer thread)."""

    def __init__(self) -> None:
        self.batches = 0
        self.failed = threading.Event()

    def writelines(self, batch: list[bytes]) -> None:
        self.batches += 1
        if self.batches == 2:
            self.failed.set()
            raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.anyio
async def test_the_writer_thread_ends_after_a_disk_error() -> None:
    """A disk error in the writer thread, then the transfer ends with a partial batch still
    gathered: `finish` raises the disk error and the thread ends (it used to wait on its
    queue for good, holding the file)."""
    import contextlib

    import anyio

    file = _FailsOnSecond()
    writer = Writer(file)  # type: ignore[arg-type]
    before = set(threading.enumerate())
    await writer.add(bytes(BATCH))  # written
    with contextlib.suppress(OSError):  # raised here if the thread was quick enough
        await writer.add(bytes(BATCH))  # fails in the thread
    [thread] = [t for t in set(threading.enumerate()) - before if t.name == "kolbo-download"]
    assert await anyio.to_thread.run_sync(file.failed.wait, 10)
    await writer.add(b"x" * 10)  # a partial batch gathered; then the transfer breaks
    with pytest.raises(OSError, match="No space left"):
        await writer.finish()
    await anyio.to_thread.run_sync(thread.join, 2)
    assert not thread.is_alive()
