"""benchmarks.data.tar_stream against Python's tarfile: the same members from every tar format and
compression, and a TarDamage (never a silent stop) for every cut and every corrupted header."""

from __future__ import annotations

import io
import tarfile

import pytest

from benchmarks.data.tar_stream import TarDamage, iter_members


def build_tar(fmt: int, compression: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}", format=fmt) as tar:
        def add(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        add("a.txt", b"hello")
        add("a.jpg", bytes(range(256)) * 2)  # exactly one block
        add("dir", kind=tarfile.DIRTYPE)
        add("b.txt", b"")
        add("b.link", kind=tarfile.SYMTYPE, link="a.txt")
        add("deep/" * 30 + "c.txt", b"long name")  # > 100 chars: prefix, GNU longname or pax path
        if fmt != tarfile.USTAR_FORMAT:
            add("caf\u00e9-\u00fcber-" + "x" * 120 + ".txt", b"unicode name")
        add("d.bin", b"\x01" * 1000)
    return buffer.getvalue()


def tarfile_members(data: bytes) -> list[tuple[str, bytes | None]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        for member in tar:
            out.append((member.name, tar.extractfile(member).read() if member.isreg() else None))
    return out


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_same_members_as_tarfile(fmt, compression):
    data = build_tar(fmt, compression)
    ours = list(iter_members(io.BytesIO(data)))
    assert ours == tarfile_members(data)
    assert len(ours) == (7 if fmt == tarfile.USTAR_FORMAT else 8)
    assert ours[2] == ("dir", None) and ours[4] == ("b.link", None)


class Trickle(io.RawIOBase):
    """A pipe-like stream that returns at most 7 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)

    def readinto(self, buffer) -> int:
        n = min(7, len(buffer), len(self.data))
        buffer[:n], self.data = self.data[:n], self.data[n:]
        return n

    def readable(self) -> bool:
        return True


def test_short_reads_are_not_damage():
    data = build_tar(tarfile.PAX_FORMAT)
    assert list(iter_members(Trickle(data))) == tarfile_members(data)


def test_every_cut_before_the_end_block_is_damage():
    full = build_tar(tarfile.GNU_FORMAT)
    end = len(full.rstrip(b"\0"))
    end += -end % 512  # the last member's padded data ends here; the end-of-archive block follows
    for cut in range(0, end + 1, 37):
        with pytest.raises(TarDamage):
            list(iter_members(io.BytesIO(full[:cut])))
    assert len(list(iter_members(io.BytesIO(full[:end + 512])))) == 8  # the end block is enough


def test_every_cut_of_a_compressed_shard_is_damage():
    full = build_tar(tarfile.GNU_FORMAT, "gz")
    for cut in range(0, len(full) - 8, 23):  # gzip's last 8 bytes are its CRC and length trailer
        with pytest.raises(TarDamage):
            list(iter_members(io.BytesIO(full[:cut])))


def test_corrupt_header_is_damage_and_names_nothing():
    data = bytearray(build_tar(tarfile.USTAR_FORMAT))
    data[512 * 2 + 10] ^= 0x55  # inside the second member's header (a.txt: header + one data block)
    with pytest.raises(TarDamage, match="checksum") as error:
        list(iter_members(io.BytesIO(bytes(data))))
    assert error.value.member is None


def test_cut_inside_data_names_the_member():
    data = build_tar(tarfile.USTAR_FORMAT)
    members = []
    with pytest.raises(TarDamage) as error:
        for name, _ in iter_members(io.BytesIO(data[:512 * 3 + 100])):  # inside a.jpg's data
            members.append(name)
    assert members == ["a.txt"] and error.value.member == "a.jpg"


@pytest.mark.parametrize("compression", ["", "gz"])
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_entry_offsets_are_tarfiles_and_reading_starts_at_any_of_them(fmt, compression):
    from benchmarks.data.tar_stream import iter_entries

    data = build_tar(fmt, compression)
    plain = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    # tarfile's `offset` is where a member's header block starts, after its long-name or pax headers
    headers = {m.name: m.offset for m in plain.getmembers()}
    entries = list(iter_entries(io.BytesIO(data)))
    assert [(name, body) for name, body, _ in entries] == tarfile_members(data)
    for i, (name, _, entry) in enumerate(entries):
        assert entry <= headers[name] and (i == 0 or entry > entries[i - 1][2])
        assert list(iter_entries(io.BytesIO(data), skip=entry)) == entries[i:]  # read and discard
        if not compression:  # a file seeked there by the caller
            stream = io.BytesIO(data)
            stream.seek(entry)
            assert list(iter_entries(stream, start=entry, detect=False)) == entries[i:]
            end = entries[i + 1][2] if i + 1 < len(entries) else None
            stream.seek(entry)
            assert list(iter_entries(stream, start=entry, detect=False, end=end)) == [entries[i]]
