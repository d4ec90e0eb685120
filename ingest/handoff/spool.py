"""Ingest stage "spool": where an event waits on local disk while Kafka is away or slow.

The producer (ingest/handoff/producer.py) appends here when Kafka has not acknowledged an event within
its deadline, and the API answers 2xx once the append returns, so an append returns only after
an fsync. Appends issued together share one write and one fsync (group commit): one disk flush
serves every request of that moment. The producer's replay loop reads records back in order and
moves a fsync'd checkpoint; segments wholly behind it are deleted.

Layout: API workers share spool_dir; each process owns spool_dir/<owner>/, held with flock.
Inside: numbered segments (000000000001.log...), `checkpoint` and `lock`. A starting process
adopts the subdirectories whose owner is gone and drains them.

Frame: u32 length | u32 crc32(payload) | payload, where payload is
  RECORD  u8 1, u16 topic length, i32 key length (-1: no key), topic, key, value
  DONE    u8 2, u64 segment, u64 offset: that record reached Kafka after all; skip it.
A frame whose length or CRC does not check out ends its segment: the torn tail of a crash.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HEADER = struct.Struct(">II")
RECORD_HEAD = struct.Struct(">BHi")
DONE_FRAME = struct.Struct(">BQQ")
CHECKPOINT = struct.Struct(">QQI")
KIND_RECORD, KIND_DONE = 1, 2
SUFFIX = ".log"
# Longer than any record Kafka would take (its default max.message.bytes is 1 MB): a length
# field beyond this is garbage from a torn write, not a frame.
MAX_FRAME = 16 << 20
# Segment size: 1/16 of the bound, so deleting replayed segments frees space in small steps,
# and at most 64 MiB, the most a replay read or an open-time scan holds in memory at once.
MIN_SEGMENT, MAX_SEGMENT = 64 << 10, 64 << 20

Position = tuple[int, int]  # (segment number, byte offset of the frame)


class SpoolFull(Exception):
    """Kafka is away and the spool holds its maximum: answer 503 with Retry-After."""

    def __init__(self, retry_after: int = 5):
        super().__init__("the on-disk spool is full")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    topic: str
    key: bytes | None
    value: bytes
    position: Position


@dataclass(frozen=True, slots=True)
class Chunk:
    """Records read for replay; commit(chunk) makes them done for good."""

    records: list[SpooledRecord]  # in append order, without those marked done
    end: Position  # where the next read starts
    covered: int  # records between the previous end and this one, done ones included


def encode_record(topic: str, key: bytes | None, value: bytes) -> bytes:
    name = topic.encode()
    head = RECORD_HEAD.pack(KIND_RECORD, len(name), -1 if key is None else len(key))
    return _frame(b"".join((head, name, key or b"", value)))


def _frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_record(payload: bytes, position: Position) -> SpooledRecord:
    _kind, topic_len, key_len = RECORD_HEAD.unpack_from(payload)
    start = RECORD_HEAD.size + topic_len
    topic = payload[RECORD_HEAD.size : start].decode()
    if key_len < 0:
        return SpooledRecord(topic, None, payload[start:], position)
    return SpooledRecord(topic, payload[start : start + key_len], payload[start + key_len :], position)


def parse_frames(data: bytes, base: int, max_frames: int | None = None) -> tuple[list[tuple[int, bytes]], int]:
    """(offset, payload) of each whole, intact frame, and the offset just past the last one."""
    frames: list[tuple[int, bytes]] = []
    offset = 0
    while len(data) - offset >= HEADER.size and (max_frames is None or len(frames) < max_frames):
        length, crc = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if length == 0 or length > MAX_FRAME or end > len(data):
            break
        payload = data[offset + HEADER.size : end]
        if zlib.crc32(payload) != crc:
            break
        frames.append((base + offset, payload))
        offset = end
    return frames, base + offset


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fdatasync(fd)


class Spool:
    """One process's spool directory. Open it in a thread: it scans the segments."""

    def __init__(self, path: Path, max_bytes: int, *, lock_fd: int | None = None, segment_bytes: int | None = None):
        self.path, self.max_bytes, self._lock_fd = Path(path), max_bytes, lock_fd
        self._segment_bytes = segment_bytes or min(MAX_SEGMENT, max(MIN_SEGMENT, max_bytes // 16))
        self._sizes: dict[int, int] = {}  # intact bytes of each segment on disk
        self._done: set[Position] = set()
        self.pending = 0  # records not yet behind the checkpoint
        self.fsyncs = 0
        self._checkpoint = self._read_checkpoint()
        self._scan()
        self._cursor = self._checkpoint
        self._wseg = max([self._checkpoint[0], *self._sizes])  # the next write opens a new segment
        self._wfd: int | None = None
        self._queue: list[tuple[list[bytes], asyncio.Future | None]] = []
        self._queued_bytes = 0
        self._flusher: asyncio.Task | None = None
        self.closed = False

    # -- opening ----------------------------------------------------------------------------

    def _segment(self, number: int) -> Path:
        return self.path / f"{number:012d}{SUFFIX}"

    def _read_checkpoint(self) -> Position:
        try:
            segment, offset, crc = CHECKPOINT.unpack((self.path / "checkpoint").read_bytes())
        except (OSError, struct.error):
            return (0, 0)
        if zlib.crc32(struct.pack(">QQ", segment, offset)) != crc:
            raise OSError(f"spool checkpoint {self.path / 'checkpoint'} is corrupt")
        return (segment, offset)

    def _scan(self) -> None:
        """Sizes, pending count and done marks; torn tails cut off, replayed segments deleted."""
        cp_seg, cp_off = self._checkpoint
        counted: list[Position] = []
        for file in sorted(self.path.glob("*" + SUFFIX)):
            number = int(file.stem)
            if number < cp_seg:
                file.unlink()
                continue
            data = file.read_bytes()
            frames, end = parse_frames(data, 0)
            if end < len(data):
                log.warning("spool %s: ignoring a torn tail of %d bytes", file, len(data) - end)
                os.truncate(file, end)
            self._sizes[number] = end
            for offset, payload in frames:
                if payload[0] == KIND_DONE:
                    self._done.add(DONE_FRAME.unpack(payload)[1:])
                elif (number, offset) >= (cp_seg, cp_off):
                    counted.append((number, offset))
        self.pending = len(counted)
        self._done = {p for p in self._done if p >= self._checkpoint}

    # -- appending (group commit) ----------------------------------------------------------

    @property
    def disk_bytes(self) -> int:
        return sum(self._sizes.values())

    async def append(self, topic: str, key: bytes | None, value: bytes) -> Position:
        return (await self.append_many(topic, [(key, value)]))[0]

    async def append_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> list[Position]:
        """Positions of the records once they are on disk; SpoolFull past max_bytes."""
        frames = [encode_record(topic, key, value) for key, value in records]
        size = sum(map(len, frames))
        if self.disk_bytes + self._queued_bytes + size > self.max_bytes:
            raise SpoolFull()
        future = asyncio.get_running_loop().create_future()
        self._enqueue(frames, future, size)
        # Shielded: a caller that goes away must not cancel a write others share.
        return await asyncio.shield(future)

    def mark_done(self, position: Position) -> None:
        """The record reached Kafka another way: replay skips it (durable with the next write)."""
        if self.closed or position < self._checkpoint:
            return
        self._done.add(position)
        self._enqueue([_frame(DONE_FRAME.pack(KIND_DONE, *position))], None, 0)

    def is_done(self, position: Position) -> bool:
        return position in self._done

    def _enqueue(self, frames: list[bytes], future: asyncio.Future | None, size: int) -> None:
        if self.closed:
            raise RuntimeError(f"spool {self.path} is closed")
        self._queue.append((frames, future))
        self._queued_bytes += size
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Write what queued up while the previous fsync ran, in one write and one fsync."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._write_batch(batch)
        finally:
            self._flusher = None
            for _frames, future in self._queue:  # only when cancelled at loop shutdown
                if future is not None and not future.done():
                    future.set_exception(RuntimeError("spool writer stopped"))

    async def _write_batch(self, batch) -> None:
        frames = [frame for entry, _future in batch for frame in entry]
        try:
            fd = self._wfd
            if fd is None or self._sizes[self._wseg] >= self._segment_bytes:
                fd = await asyncio.to_thread(self._roll)
            start = self._sizes[self._wseg]
            await asyncio.to_thread(self._write, fd, b"".join(frames), start)
        except OSError as exc:
            log.error("spool %s: write failed (%s); refusing these records", self.path, exc)
            self._resolve(batch, error=exc)
            return
        finally:
            self._queued_bytes -= sum(len(f) for entry, fut in batch if fut is not None for f in entry)
        positions: list[list[Position]] = []
        offset = start
        for entry, _future in batch:
            positions.append([])
            for frame in entry:
                positions[-1].append((self._wseg, offset))
                offset += len(frame)
        self._sizes[self._wseg] = offset
        self.pending += sum(frame[HEADER.size] == KIND_RECORD for frame in frames)
        self.fsyncs += 1
        self._resolve(batch, positions=positions)

    @staticmethod
    def _resolve(batch, positions=None, error=None) -> None:
        for i, (_frames, future) in enumerate(batch):
            if future is None or future.done():
                continue
            if error is not None:
                refused = SpoolFull()
                refused.__cause__ = error
                future.set_exception(refused)
            else:
                future.set_result(positions[i])

    def _roll(self) -> int:
        """Open the next segment for writing; returns its descriptor."""
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        number = self._wseg + 1
        fd = os.open(self._segment(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        _fsync_dir(self.path)  # the new name must survive a crash as well as its bytes
        self._wseg, self._wfd, self._sizes[number] = number, fd, 0
        return fd

    def _write(self, fd: int, data: bytes, start: int) -> None:
        try:
            _write_all(fd, data)
        except OSError:
            # Cut a partial write off, or the reader would stop at it and miss later frames.
            try:
                os.ftruncate(fd, start)
            except OSError:
                os.close(fd)
                self._wfd = None
            raise

    # -- replay ----------------------------------------------------------------------------

    async def read(self, max_records: int = 1000, max_bytes: int = 4 << 20) -> Chunk | None:
        """The next records after the last read, or None when there is nothing durable to read."""
        segment, offset = self._cursor
        while offset >= self._sizes.get(segment, 0):
            later = [number for number in self._sizes if number > segment]
            if not later:
                return None
            segment, offset = min(later), 0
        end = self._sizes[segment]
        frames, stop = await asyncio.to_thread(self._read_frames, segment, offset, end, max_records, max_bytes)
        if not frames:  # damaged after the scan (disk error): lose the rest of this segment, not the spool
            log.error("spool %s: unreadable frame at %d of segment %d; skipping it", self.path, stop, segment)
            stop = end
        self._cursor = (segment, stop)
        records = [decode_record(payload, (segment, at)) for at, payload in frames if payload[0] == KIND_RECORD]
        fresh = [record for record in records if record.position not in self._done]
        return Chunk(fresh, (segment, stop), len(records))

    def _read_frames(self, segment: int, offset: int, end: int, max_records: int, max_bytes: int):
        with open(self._segment(segment), "rb") as file:
            file.seek(offset)
            head = file.read(HEADER.size)
            first = HEADER.size + (HEADER.unpack(head)[0] if len(head) == HEADER.size else 0)
            data = head + file.read(min(end - offset, max(max_bytes, first)) - len(head))
        return parse_frames(data, offset, max_records)

    def rewind(self) -> None:
        """Read again from the checkpoint (a replay chunk that Kafka did not take)."""
        self._cursor = self._checkpoint

    async def commit(self, chunk: Chunk) -> None:
        """Durably past chunk: a crash from now on does not replay it again."""
        await asyncio.to_thread(self._write_checkpoint, chunk.end)
        self._checkpoint = max(self._checkpoint, chunk.end)
        self.pending -= chunk.covered
        self._done = {p for p in self._done if p >= self._checkpoint}
        await self._delete_replayed()

    def _write_checkpoint(self, position: Position) -> None:
        packed = struct.pack(">QQ", *position)
        tmp = self.path / "checkpoint.tmp"
        with open(tmp, "wb") as file:
            file.write(CHECKPOINT.pack(*position, zlib.crc32(packed)))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path / "checkpoint")
        _fsync_dir(self.path)

    async def _delete_replayed(self) -> None:
        segment, offset = self._checkpoint
        if self.idle() and self._wfd is not None and segment == self._wseg:
            os.close(self._wfd)  # all written was replayed: retire it, the next write opens a new one
            self._wfd = None
        gone = [
            n
            for n, size in self._sizes.items()
            if n < segment or (n == segment and offset >= size and self._wfd is None)
        ]
        for number in gone:
            del self._sizes[number]
        if gone:
            await asyncio.to_thread(self._unlink_segments, gone)

    def _unlink_segments(self, numbers: list[int]) -> None:
        for number in numbers:
            self._segment(number).unlink(missing_ok=True)

    def idle(self) -> bool:
        """Nothing waits for replay and nothing is being written."""
        return self.pending == 0 and not self._queue and self._flusher is None

    # -- closing ---------------------------------------------------------------------------

    async def close(self, remove: bool = False) -> None:
        """Finish queued writes and let go of the directory (removed if asked and fully replayed)."""
        while self._flusher is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flusher)
        self.closed = True
        await asyncio.to_thread(self._release, remove and self.pending == 0)

    def _release(self, remove: bool) -> None:
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        if remove:
            for file in self.path.iterdir():
                file.unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:  # an adopter raced us and created its lock file: it removes the dir
                pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# -- sharing spool_dir between processes -----------------------------------------------------


def _try_lock(directory: Path) -> int | None:
    """An exclusive flock on directory/lock, or None if its owner lives or it is being removed."""
    try:
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # removed meanwhile
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino == os.stat(directory / "lock").st_ino:
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def claim(spool_dir: str | Path, max_bytes: int, segment_bytes: int | None = None) -> Spool:
    """A new subdirectory of spool_dir for this process, locked while the process lives."""
    root = Path(spool_dir)
    root.mkdir(parents=True, exist_ok=True)
    # Locked under a hidden name, then renamed: no other process can adopt it in between.
    hidden = root / f".claim-{uuid.uuid4().hex}"
    hidden.mkdir()
    fd = _try_lock(hidden)
    final = root / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.rename(hidden, final)
    _fsync_dir(root)
    return Spool(final, max_bytes, lock_fd=fd, segment_bytes=segment_bytes)


def adopt_orphans(spool_dir: str | Path, max_bytes: int) -> list[Spool]:
    """The subdirectories whose owner is gone, locked by this process for replay."""
    root = Path(spool_dir)
    adopted = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if not child.is_dir() or child.name.startswith(".claim-") and _remove_stale_claim(child):
            continue
        fd = _try_lock(child)
        if fd is None:
            continue
        try:
            adopted.append(Spool(child, max_bytes, lock_fd=fd))
        except (OSError, ValueError) as exc:  # leave it for an operator; serve meanwhile
            log.error("spool %s: cannot adopt it (%s)", child, exc)
            os.close(fd)
    return adopted


def _remove_stale_claim(directory: Path) -> bool:
    """A process died between creating and naming its directory: nothing was written there."""
    fd = _try_lock(directory)
    if fd is not None:
        (directory / "lock").unlink(missing_ok=True)
        os.close(fd)
        try:
            directory.rmdir()
        except OSError:
            pass
    return True
