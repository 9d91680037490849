"""Files in and out: outputs checked before signing and never overwritten, artifacts streamed.

An `Output` is checked (`check`) while the command is still validating its flags, and written
(`write`) after signing through a temporary file in the same directory that is then hard-linked
into place, so an existing file is never replaced and a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from flashgate.signing.errors import UsageError

CHUNK = 1024 * 1024
PROGRESS_MIN_BYTES = 64 * CHUNK  # below this, hashing is too quick for a bar to help


@dataclass(frozen=True)
class Output:
    """Where a result goes: a new file, the input file itself (`replace`), or stdout (path None).

    Attributes:
        path: The file, or None for stdout.
        flag: The flag that named it, for messages.
        mode: Permission bits of a new file (0600 for private keys).
        replace: Overwrite on purpose (`--in-place`); otherwise an existing file is an error.
    """

    path: Path | None
    flag: str = "-o"
    mode: int = 0o644
    replace: bool = False

    def check(self) -> None:
        """Refuses an output that could not be written, before anything is signed.

        Raises:
            UsageError: The file exists (unless `replace`), or its directory is missing or not
                writable.
        """
        if self.path is None:
            return
        if self.path.exists() and not self.replace:
            raise UsageError(f"{self.flag} {self.path}: the file already exists",
                             "choose another path or remove it first; flashgate never "
                             "overwrites a file silently")
        if self.path.is_dir():
            raise UsageError(f"{self.flag} {self.path} is a directory")
        parent = self.path.parent
        if not parent.is_dir():
            raise UsageError(f"{self.flag} {self.path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"{self.flag} {self.path}: directory {parent} is not writable")

    def write(self, data: str, stdout: TextIO | None = None) -> None:
        """Writes `data`: atomically to the file, or to stdout.

        Raises:
            UsageError: The file appeared since `check` (nothing is overwritten).
        """
        if self.path is None:
            (stdout or sys.stdout).write(data)
            return
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), self.mode)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if self.replace:
                os.replace(tmp, self.path)
            else:
                self._link_new(tmp, data)
        except FileExistsError:
            raise UsageError(f"{self.flag} {self.path}: the file appeared while signing; "
                             "not overwritten") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _link_new(self, tmp: str, data: str) -> None:
        assert self.path is not None
        try:
            # link() fails if the name exists: no window in which a file is clobbered.
            os.link(tmp, self.path)
        except FileExistsError:
            raise
        except OSError:
            # A filesystem without hard links: create exclusively and write in place instead.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)


def check_readable(path: Path, flag: str) -> None:
    """Refuses an input file that is missing, not a regular file, or unreadable.

    Raises:
        UsageError: Saying which of these it is.
    """
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such file")
    if not path.is_file():
        raise UsageError(f"{flag} {path}: not a regular file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot read it ({err.strerror})") from err


def read_text(path: Path, flag: str) -> str:
    """The UTF-8 text of an input file.

    Raises:
        UsageError: Missing, unreadable or not UTF-8.
    """
    check_readable(path, flag)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"{flag} {path}: not UTF-8 text ({err.reason})") from err


@dataclass(frozen=True)
class Digest:
    """What hashing read: the size, the SHA-256, and whether bytes were left past a limit."""

    size: int
    sha256: bytes
    oversized: bool = False


def hash_file(path: Path, flag: str, limit: int | None = None, *,
              progress: TextIO | None = None) -> Digest:
    """Streams `path` in 1 MiB reads and hashes it, never holding the whole file.

    Args:
        path: The artifact.
        flag: The flag that named it, for messages.
        limit: Stop after this many bytes (the signed size, as the sidecar's fetcher does);
            `oversized` then says whether the file had more.
        progress: A stream for a progress bar (stderr); drawn only when it is a terminal and the
            file is large.

    Raises:
        UsageError: The file cannot be opened or read.
    """
    check_readable(path, flag)
    sha = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            total = os.fstat(handle.fileno()).st_size
            bar = _Bar(progress, path.name, total if limit is None else min(total, limit))
            while limit is None or size < limit:
                want = CHUNK if limit is None else min(CHUNK, limit - size)
                chunk = handle.read(want)
                if not chunk:
                    break
                sha.update(chunk)
                size += len(chunk)
                bar.update(size)
            oversized = limit is not None and size == limit and bool(handle.read(1))
            bar.done()
    except OSError as err:
        raise UsageError(f"{flag} {path}: read failed ({err.strerror})") from err
    return Digest(size=size, sha256=sha.digest(), oversized=oversized)


class _Bar:
    """A one-line progress bar redrawn in place, at most once per percent."""

    def __init__(self, stream: TextIO | None, name: str, total: int) -> None:
        self._on = (stream is not None and total >= PROGRESS_MIN_BYTES
                    and stream.isatty())
        self._stream = stream
        self._name = name
        self._total = total
        self._shown = -1

    def update(self, done: int) -> None:
        if not self._on or self._stream is None:
            return
        percent = min(100, done * 100 // self._total)
        if percent == self._shown:
            return
        self._shown = percent
        filled = percent * 30 // 100
        self._stream.write(f"\rhashing {self._name} [{'#' * filled}{'.' * (30 - filled)}] "
                           f"{percent:3d}% {done / CHUNK:,.0f}/{self._total / CHUNK:,.0f} MiB")
        self._stream.flush()

    def done(self) -> None:
        if self._on and self._stream is not None:
            self._stream.write("\n")
