"""Files inside a Qt binary resource bundle (.rcc, as Qt's rcc tool writes it), read with plain Python: no Qt.

The bundle is big-endian: the magic ``qres``, its format version, the offsets of its tree, data and names (and
from version 3 the flags of the compression it uses), then a tree of entries, each naming a directory (its
children) or a file (its data, raw, zlib-compressed as qCompress writes it, or zstd-compressed).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from trtrepo.errors import UserError

MAGIC = b"qres"
COMPRESSED, DIRECTORY, COMPRESSED_ZSTD = 0x01, 0x02, 0x04


class QtResources:
    """The files of one bundle, by their path inside it (``src/activities/x/resource/a.webp``)."""

    def __init__(self, data: bytes, what: str) -> None:
        if data[:4] != MAGIC or len(data) < 20:
            raise UserError(f"{what}: not a Qt resource bundle (no qres header)")
        self.data, self.what = data, what
        self.version, self.tree, self.payload, self.names = struct.unpack(">4I", data[4:20])
        if self.version not in (1, 2, 3):
            raise UserError(f"{what}: Qt resource format version {self.version}, which this reader does not know")
        #: Each tree entry: name offset, flags, then 8 bytes (a directory's child count and first child, or a
        #: file's territory, language and data offset), and from version 2 its modification time.
        self.entry_size = 14 if self.version == 1 else 22
        self._index: dict[str, int] | None = None

    def files(self) -> Iterator[tuple[str, int]]:
        """Every file's path and tree index, depth first from the root (entry 0)."""
        yield from self._walk(0, "")

    def read(self, path: str) -> bytes:
        """The bytes of the file at ``path``, decompressed: its whole path, or its path below the bundle's prefix
        (``src/a.webp`` for ``gcompris/src/a.webp``: the prefix is the application's, as it addresses the file)."""
        if self._index is None:
            self._index = {}
            for found, index in self.files():
                self._index[found] = index
                self._index.setdefault(found.split("/", 1)[-1], index)
        if path not in self._index:
            raise UserError(f"{self.what}: holds no file {path}")
        return self._content(self._index[path])

    def _entry(self, index: int) -> tuple[int, int, int, int]:
        """(name offset, flags, first number, second number) of tree entry ``index``."""
        offset = self.tree + index * self.entry_size
        name, flags = struct.unpack(">IH", self.data[offset : offset + 6])
        if flags & DIRECTORY:
            count, first = struct.unpack(">II", self.data[offset + 6 : offset + 14])
            return name, flags, count, first
        (data_offset,) = struct.unpack(">I", self.data[offset + 10 : offset + 14])
        return name, flags, 0, data_offset

    def _name(self, offset: int) -> str:
        start = self.names + offset
        (length,) = struct.unpack(">H", self.data[start : start + 2])
        return self.data[start + 6 : start + 6 + 2 * length].decode("utf-16-be")  # after the length, a 4-byte hash

    def _walk(self, index: int, prefix: str) -> Iterator[tuple[str, int]]:
        _, flags, count, first = self._entry(index)
        if not flags & DIRECTORY:
            yield prefix, index
            return
        for child in range(first, first + count):
            name = self._name(self._entry(child)[0])
            yield from self._walk(child, f"{prefix}/{name}" if prefix else name)

    def _content(self, index: int) -> bytes:
        _, flags, _, data_offset = self._entry(index)
        start = self.payload + data_offset
        (size,) = struct.unpack(">I", self.data[start : start + 4])
        stored = self.data[start + 4 : start + 4 + size]
        if flags & COMPRESSED_ZSTD:
            try:
                import zstandard
            except ImportError as exc:
                raise UserError(f"{self.what}: a file compressed with zstd needs the zstandard package "
                                "(pip install zstandard)") from exc
            return zstandard.ZstdDecompressor().decompress(stored)
        if flags & COMPRESSED:
            return zlib.decompress(stored[4:])  # qCompress: the uncompressed size (4 bytes), then a zlib stream
        return stored
