"""A shard stream with a read timeout: a shard whose bytes stop arriving is abandoned, not waited on.

`wds.gopen` streams (a local file, `pipe:CMD`, http) block in `read()` for as long as the source
does: a `pipe:` command that hangs, an NFS or object-store read that never returns, would hold a
DataLoader worker (and so every rank's step) forever. `TimedStream` reads the source in a thread,
in 64 KiB chunks, and its `read()` raises `ShardStalled` when no chunk arrives for `timeout` seconds;
a `pipe:` command is then killed with its children, so the thread's read returns. A read stuck in
the kernel (a hung NFS mount) cannot be interrupted from Python: that thread is a daemon and is left
behind until the read returns; the worker moves on either way.

    from benchmarks.data.timed_read import TimedStream, ShardStalled
    with TimedStream(wds.gopen(url, "rb"), timeout=60.0, name=url) as stream:
        data = stream.read(512)      # ShardStalled if 64 KiB do not arrive within 60 s
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO

import psutil  # an Accelerate dependency

CHUNK = 64 * 1024  # bytes per read of the source: small, so a slow but live link never looks stalled
QUEUED_CHUNKS = 16  # read-ahead of 1 MiB per open shard


class ShardStalled(Exception):
    """No bytes of a shard arrived within the read timeout. Not an OSError on purpose: the tar reader
    turns those into damage (`truncated_tar`), and a stall is counted as its own kind (`timeout`)."""


class TimedStream:
    """A read-only stream over `source` whose `read()` raises ShardStalled after `timeout` seconds
    without data (see the module docstring). A context manager: leaving it stops the reading thread
    and closes `source`."""

    def __init__(self, source: BinaryIO, timeout: float, name: str = "") -> None:
        self.source, self.timeout, self.name = source, timeout, name
        self._chunks: queue.Queue = queue.Queue(maxsize=QUEUED_CHUNKS)
        self._chunk, self._pos, self._eof = b"", 0, False
        self._source_ended = False  # the thread read the source's end (a pipe's command closed it)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True, name=f"shard-reader {name}")
        self._thread.start()

    def _pump(self) -> None:
        """The thread: source chunks into the queue (an exception ends the stream with it)."""
        while not self._closed.is_set():
            try:
                item: bytes | BaseException = self._read_some()
            except BaseException as error:  # handed to the consumer, which raises it in read()
                item = error
            while not self._closed.is_set():
                try:
                    self._chunks.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not item or isinstance(item, BaseException):
                self._source_ended = True
                return

    def _read_some(self) -> bytes:
        """What the source has now, up to CHUNK (at least 1 byte; b"" at its end): `read1`, since a
        buffered `read(CHUNK)` waits for the whole chunk. For webdataset's Pipe, its buffered stream,
        and at the end the command's exit status (an error status raises, as Pipe.read does)."""
        buffered = getattr(self.source, "stream", self.source)
        if not hasattr(buffered, "read1"):
            return self.source.read(CHUNK)
        data = buffered.read1(CHUNK)
        if not data and hasattr(self.source, "check_status"):
            self.source.check_status()
        return data

    def _next_chunk(self) -> None:
        try:
            item = self._chunks.get(timeout=self.timeout)
        except queue.Empty:
            self._abandon()
            raise ShardStalled(f"{self.name}: no data for {self.timeout:g} s") from None
        if isinstance(item, BaseException):
            raise item
        self._chunk, self._pos, self._eof = item, 0, not item

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes (all for n < 0), fewer only at the end of the stream, as a file gives."""
        parts, wanted = [], n
        while wanted != 0:
            if self._pos >= len(self._chunk):
                if self._eof:
                    break
                self._next_chunk()
                continue
            end = len(self._chunk) if wanted < 0 else min(len(self._chunk), self._pos + wanted)
            parts.append(self._chunk[self._pos:end])
            wanted = wanted - (end - self._pos) if wanted > 0 else wanted
            self._pos = end
        return b"".join(parts)

    def _abandon(self) -> None:
        """Stop the source (kill_command), so the thread's blocked read sees the end of the pipe."""
        self._closed.set()
        kill_command(self.source)

    def __enter__(self) -> TimedStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Closed before the source's end (a stall, or the reader stopped early), a `pipe:` command is
        killed first: nobody reads the rest, and closing the pipe would wait for the command to end
        (the reading thread may have left its loop without blocking, so its state cannot decide)."""
        self._closed.set()
        if not self._source_ended:
            self._abandon()
        self._thread.join(timeout=1.0)
        if not self._thread.is_alive():  # a read stuck in the kernel (a hung file) is left behind
            self.source.close()


def kill_command(source: BinaryIO) -> None:
    """Kill a `pipe:` command (webdataset's Pipe) with its children, and make its exit status no error
    (Pipe.close would raise on it): closing a pipe nobody reads to its end waits for the command to end,
    which a stalled one never does. Anything else is left as it is."""
    process = getattr(source, "proc", None)
    if process is None:
        return
    source.ignore_errors = True
    try:
        family = psutil.Process(process.pid)
        members = [*family.children(recursive=True), family]
    except psutil.Error:  # the command has exited already
        return
    for member in members:
        # each on its own: a child that exits between the listing and its kill (`head` finishing
        # under load) must not spare the rest, or closing the pipe waits for the survivor to end
        try:
            member.kill()
        except psutil.Error:
            pass
