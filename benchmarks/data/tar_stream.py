"""A lean streaming reader of tar shards: (name, bytes) of each regular member, strict about damage.

Python's `tarfile` (which webdataset's own tar iterator uses) builds a TarInfo per member, which for
small images costs more than decoding them (docs/design.md). This reader parses the 512-byte headers
itself (POSIX ustar, GNU and pax, as written by webdataset's TarWriter, GNU tar
and Python's tarfile) and costs a few us per member. It is also stricter than `tarfile` in stream
mode, which stops silently at a garbage or cut-off header: here every kind of damage raises
`TarDamage`, and a shard is complete only if it ends with the all-zero end-of-archive block.

    from benchmarks.data.tar_stream import iter_members, TarDamage
    with open("shard.tar", "rb") as f:
        for name, data in iter_members(f):   # data is None for a member that is not a regular file
            ...

gzip, bzip2 and xz compressed shards (`.tar.gz` ...) are recognised by their magic bytes.

`iter_entries` also gives each member's entry offset (where its first header starts, GNU long-name
and pax headers included) and can start at such an offset: `skip` bytes are read and discarded
(a pipe, a compressed stream), or the caller seeks a plain file there first and passes `start`. The
training stream's resume reads its shuffle buffer's samples this way, not the shards before them.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from collections.abc import Iterator
from typing import BinaryIO

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
REGULAR_TYPES = (b"0", b"\0", b"7")  # file, old-style file, contiguous file (tarfile: REGULAR_TYPES)
# Types whose size field does not announce data blocks (tarfile skips data only for the others).
NO_DATA_TYPES = (b"1", b"2", b"3", b"4", b"5", b"6")
GNU_LONGNAME, GNU_LONGLINK, PAX_HEADER, PAX_GLOBAL = b"L", b"K", b"x", b"g"
POSIX_MAGIC = b"ustar\x0000"
COMPRESSED_MAGIC = (
    (b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f)),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
)


class TarDamage(Exception):
    """The shard breaks off, has a corrupt header, or its compressed stream is broken. `member` names
    the member whose data broke off (its header was whole), else None."""

    member: str | None = None


class _Prefixed:
    """A read-only stream that first returns `head`, then the rest of `stream`."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.stream.read(n)
        if n < 0:
            data, self.head = self.head + self.stream.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        return data + self.stream.read(n - len(data)) if len(data) < n else data


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    """n bytes, or TarDamage; pipes and decompressors may return fewer bytes per read."""
    data = stream.read(n)
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise TarDamage(f"stream ends {n - len(data)} bytes early")
        data += more
    return data


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 when the top bit of the first byte is set."""
    if field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _number(header[148:156])
    except ValueError:
        return False
    # The checksum field counts as 8 spaces; old writers summed signed bytes, so accept both.
    unsigned = sum(header) - sum(header[148:156]) + 8 * 32
    if stored == unsigned:
        return True
    signed = unsigned - 256 * sum(1 for b in header if b >= 128)
    return stored == signed


def _pax_records(data: bytes) -> dict[str, str]:
    """A pax extended header's `LEN key=value\\n` records."""
    records, pos = {}, 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _open_decompressed(stream: BinaryIO) -> BinaryIO:
    head = stream.read(BLOCK)
    prefixed = _Prefixed(head, stream)
    for magic, opener in COMPRESSED_MAGIC:
        if head.startswith(magic):
            return opener(prefixed)
    return prefixed


# Bytes per read while discarding a stream that cannot seek (a pipe): a 1.5 GB LAION shard prefix is
# 1,500 reads, and a chunk held by each of a node's 64 worker streams (8 GPUs x 8) is 64 MiB at worst
SKIP_CHUNK = 1 << 20


def iter_members(stream: BinaryIO) -> Iterator[tuple[str, bytes | None]]:
    """(name, data) per member in archive order; data is None for members that are not regular files
    (directories, links, devices). Raises TarDamage where the archive breaks off or is corrupt."""
    for name, data, _ in iter_entries(stream):
        yield name, data


def iter_entries(stream: BinaryIO, skip: int = 0, start: int = 0, detect: bool = True,
                 end: int | None = None) -> Iterator[tuple[str, bytes | None, int]]:
    """iter_members with each member's entry offset in the (decompressed) archive. `skip`: bytes read
    and discarded first; `start`: the offset `stream` is at already (a file the caller seeked; then
    `detect=False`, since a header there is not a compression magic). An offset must be an entry's.
    `end`: stop there as at the archive's end (an entry offset: read one sample, not the next)."""
    try:
        opened = _open_decompressed(stream) if detect else stream
        _discard(opened, skip)
        yield from _iter_members(opened, start + skip, end)
    except (zlib.error, lzma.LZMAError, EOFError, OSError, ValueError) as error:
        raise TarDamage(str(error)) from error


def _discard(stream: BinaryIO, n: int) -> None:
    while n > 0:
        data = stream.read(min(n, SKIP_CHUNK))
        if not data:
            raise TarDamage(f"stream ends {n} bytes before the offset to start at")
        n -= len(data)


def _iter_members(stream: BinaryIO, pos: int, end: int | None) -> Iterator[tuple[str, bytes | None, int]]:
    long_name: str | None = None
    pax: dict[str, str] = {}
    entry = pos  # where the current entry's first header (long name, pax or its own) starts
    while True:
        if end is not None and pos >= end:
            return
        header = stream.read(BLOCK)
        if len(header) < BLOCK and header:
            header += _read_exact(stream, BLOCK - len(header))
        if not header:
            raise TarDamage("no end-of-archive block")
        if header == ZERO_BLOCK:
            return  # end of archive (a second zero block and padding may follow; they are not read)
        if not _checksum_ok(header):
            raise TarDamage("corrupt header (bad checksum)")
        size, kind = _number(header[124:136]), header[156:157]
        if "size" in pax:
            size = int(pax["size"])
        name = None
        if kind not in (GNU_LONGNAME, PAX_HEADER, GNU_LONGLINK, PAX_GLOBAL):
            prefix = _text(header[345:500]) if header[257:265] == POSIX_MAGIC else ""
            name = _text(header[0:100])
            name = pax.get("path", long_name or (f"{prefix}/{name}" if prefix else name))
            long_name, pax = None, {}
        has_data = kind not in NO_DATA_TYPES
        try:
            data = _read_exact(stream, size) if has_data and size else b""
            if has_data and size % BLOCK:
                _read_exact(stream, BLOCK - size % BLOCK)
        except TarDamage as damage:
            damage.member = name
            raise
        pos += BLOCK + (-(-size // BLOCK) * BLOCK if has_data else 0)
        if kind == GNU_LONGNAME:
            long_name = _text(data)
        elif kind == PAX_HEADER:
            pax = _pax_records(data)
        elif name is not None:
            if kind == b"\0" and name.endswith("/"):
                kind = b"5"  # old-style directory entry
            if kind == b"5":
                name = name.rstrip("/")  # as tarfile names directories
            yield name, (data if kind in REGULAR_TYPES else None), entry
        if name is not None:
            entry = pos
