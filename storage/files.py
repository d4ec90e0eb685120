"""Storage: a workspace's sandboxed directory on local disk (the MCP `filesystem` server's files).

Requirements: a caller names files by relative path and must never reach outside its root, not with
`..`, absolute paths, NUL bytes, percent-encoded or Unicode look-alike variants, nor through a
symlink placed inside the root. So a path is first checked as text, then opened one component at a
time relative to an open directory (openat with O_NOFOLLOW): no symlink is ever followed, which also
closes the race between checking a path and using it. Writes go to a temporary file that is
fsync'd and renamed over the target, so a reader sees the old or the new content, never half.
A name the kernel refuses for what it is (too long for the file system, not in its encoding) is a
bad path like any other; every other OSError is a real I/O failure and leaves as one.
Synchronous: async callers use asyncio.to_thread.
"""

import contextlib
import errno
import heapq
import os
import re
import secrets
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from storage.errors import StorageError

# Linux allows 255 bytes per name; the temporary file adds a prefix and suffix to it.
MAX_NAME = 200  # bytes of UTF-8: "é" is two
MAX_PATH = 1024
MAX_DEPTH = 32
DRIVE = re.compile(r"^[A-Za-z]:")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# What the kernel says about a name the caller chose (a file system may allow fewer bytes than
# MAX_NAME, or refuse an encoding), as opposed to the disk or the directory failing.
NAME_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ})


class PathRefused(StorageError):
    """The path could leave the root, or is not a plain relative path."""


class FileError(StorageError):
    """The path is acceptable but the operation cannot be done (missing, too large, a directory)."""


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # file | directory | symlink | other
    size: int


def _hostile(text: str) -> str | None:
    """Why this spelling of a path could escape the root, or None."""
    if any(c == "\x00" or unicodedata.category(c) in ("Cc", "Cs") for c in text):
        return "control characters, NUL bytes and unpaired surrogates are not allowed"
    if "\\" in text:
        return "backslashes are not allowed"
    if text.startswith(("/", "~")) or DRIVE.match(text):
        return "the path must be relative to the workspace root"
    if any(part == ".." for part in text.split("/")):
        return "'..' is not allowed"
    return None


def split_path(path: str) -> list[str]:
    """The path's components, or PathRefused; '' and '.' name the root."""
    if not isinstance(path, str) or len(path) > MAX_PATH:
        raise PathRefused(f"the path must be a string of at most {MAX_PATH} characters")
    if unquote(path) != path:
        # A client that sends %2e%2e or %2f most likely meant the decoded form: refuse both.
        raise PathRefused("percent-encoded characters are not allowed")
    for spelling in (path, unicodedata.normalize("NFKC", path)):
        reason = _hostile(spelling)
        if reason:
            raise PathRefused(reason)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if len(parts) > MAX_DEPTH or any(len(part.encode()) > MAX_NAME for part in parts):
        raise PathRefused(f"at most {MAX_DEPTH} levels of names of at most {MAX_NAME} bytes of UTF-8")
    return parts


@contextlib.contextmanager
def _names_refused():
    """An OSError about the caller's name becomes PathRefused; any other stays an I/O failure."""
    try:
        yield
    except OSError as exc:
        if exc.errno in NAME_ERRNOS:
            raise PathRefused(f"the file system refuses the name: {exc.strerror}") from exc
        raise


class WorkspaceFiles:
    """Files under `root` (created on first use, mode 0700)."""

    def __init__(self, root: Path, max_file_bytes: int, max_entries: int):
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.max_entries = max_entries

    def read(self, path: str) -> bytes:
        with _names_refused():
            return self._read(path)

    def _read(self, path: str) -> bytes:
        parts = split_path(path)
        if not parts:
            raise FileError("the root is a directory")
        dir_fd = self._open_dir(parts[:-1])
        try:
            fd = self._open(parts[-1], os.O_RDONLY | os.O_NONBLOCK, dir_fd)
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileError(f"{path} is not a regular file")
        with os.fdopen(fd, "rb") as f:
            data = f.read(self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:
            raise FileError(f"{path} is larger than {self.max_file_bytes} bytes")
        return data

    def write(self, path: str, data: bytes) -> bool:
        """Replace or create the file atomically; True when it did not exist before."""
        with _names_refused():
            return self._write(path, data)

    def _write(self, path: str, data: bytes) -> bool:
        parts = split_path(path)
        if not parts:
            raise FileError("the root is a directory")
        if len(data) > self.max_file_bytes:
            raise FileError(f"the content is larger than {self.max_file_bytes} bytes")
        dir_fd = self._open_dir(parts[:-1], create=True)
        try:
            return self._replace(dir_fd, parts[-1], data)
        finally:
            os.close(dir_fd)

    def list_dir(self, path: str) -> tuple[list[Entry], bool]:
        """Entries sorted by name, at most max_entries; True when more were left off."""
        with _names_refused():
            return self._list_dir(path)

    def _list_dir(self, path: str) -> tuple[list[Entry], bool]:
        dir_fd = self._open_dir(split_path(path))
        try:
            with os.scandir(dir_fd) as it:
                # nsmallest keeps memory bounded however large the directory is.
                first = heapq.nsmallest(self.max_entries + 1, it, key=lambda e: e.name)
                entries = [self._entry(e) for e in first[: self.max_entries]]
        finally:
            os.close(dir_fd)
        return entries, len(first) > self.max_entries

    def _entry(self, entry: os.DirEntry) -> Entry:
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            kind = "symlink"
        elif stat.S_ISDIR(info.st_mode):
            kind = "directory"
        else:
            kind = "file" if stat.S_ISREG(info.st_mode) else "other"
        return Entry(entry.name, kind, info.st_size if kind == "file" else 0)

    def _open_root(self) -> int:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(self.root, DIR_FLAGS)

    def _open_dir(self, parts: list[str], create: bool = False) -> int:
        fd = self._open_root()
        try:
            for part in parts:
                if create:
                    try:
                        os.mkdir(part, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                next_fd = self._open(part, DIR_FLAGS, fd)
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open(self, name: str, flags: int, dir_fd: int) -> int:
        try:
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            raise self._explain(name, dir_fd, exc) from exc

    def _explain(self, name: str, dir_fd: int, exc: OSError) -> StorageError:
        try:
            if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
                return PathRefused("symlinks are not followed")
        except OSError:
            pass
        if exc.errno in NAME_ERRNOS:
            return PathRefused(f"the file system refuses the name: {exc.strerror}")
        if isinstance(exc, FileNotFoundError):
            return FileError(f"{name} does not exist")
        if isinstance(exc, NotADirectoryError):
            return FileError(f"{name} is not a directory")
        return FileError(f"{name}: {exc.strerror}")

    def _replace(self, dir_fd: int, name: str, data: bytes) -> bool:
        if _is_symlink(name, dir_fd):
            # The rename would replace the link, not follow it; refused anyway, so a write never
            # looks as if it went where the link points.
            raise PathRefused("symlinks are not followed")
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            created = not _exists(name, dir_fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            if isinstance(exc, IsADirectoryError):
                raise FileError(f"{name} is a directory") from exc
            raise
        os.fsync(dir_fd)  # the rename itself survives a crash only once the directory is synced
        return created


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except FileNotFoundError:
        return False
