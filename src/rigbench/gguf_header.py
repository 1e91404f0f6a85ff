"""A GGUF file's header (metadata and tensor table) read straight from its bytes, without the tensor data.

The layout is ggml's GGUF v2/v3 (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic, version,
tensor and key counts, the key/value pairs, the tensor infos, then the tensor data at the next multiple of
`general.alignment`. `gguf.GGUFReader` builds a numpy view per value, which for a 151,000-token vocabulary
takes over ten seconds on a small CPU; this reads the same header in a fraction of a second, so `plan`,
`inspect` and `serve` answer at once on any local GGUF.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# struct formats and numpy types of the fixed-size value types
_SCALARS = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


class GGUFHeaderError(ValueError):
    pass


@dataclass(frozen=True)
class Field:
    """One key's value as Python data (an array as a list), with its GGUF type and, for an array, its items'."""
    value: Any
    type: GGUFValueType
    item_type: GGUFValueType | None = None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]        # ggml order: shape[0] is the row length
    tensor_type: GGMLQuantizationType
    n_bytes: int
    data_offset: int              # from the start of the file


@dataclass(frozen=True)
class Header:
    version: int
    fields: dict[str, Field]
    tensors: list[TensorInfo]
    data_offset: int
    alignment: int

    def get(self, key: str, default: Any = None) -> Any:
        f = self.fields.get(key)
        return default if f is None else f.value


class _Cursor:
    def __init__(self, buf, order: str):
        self.buf, self.order, self.pos = buf, order, 0

    def take(self, fmt: str) -> Any:
        s = struct.Struct(self.order + fmt)
        (v,) = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return v

    def string(self) -> str:
        n = self.take("Q")
        end = self.pos + n
        if end > len(self.buf):
            raise GGUFHeaderError(f"a string of {n} bytes runs past the end of the file")
        s = bytes(self.buf[self.pos:end]).decode("utf-8", "replace")
        self.pos = end
        return s

    def value(self, t: GGUFValueType) -> tuple[Any, GGUFValueType | None]:
        if t == GGUFValueType.STRING:
            return self.string(), None
        if t in _SCALARS:
            return self.take(_SCALARS[t]), None
        if t != GGUFValueType.ARRAY:
            raise GGUFHeaderError(f"unknown value type {int(t)}")
        item = GGUFValueType(self.take("I"))
        n = self.take("Q")
        if item in _SCALARS:
            dtype = np.dtype(self.order + _SCALARS[item])
            if self.pos + n * dtype.itemsize > len(self.buf):
                raise GGUFHeaderError(f"an array of {n} values runs past the end of the file")
            arr = np.frombuffer(self.buf, dtype=dtype, count=n, offset=self.pos)
            self.pos += n * dtype.itemsize
            return arr.tolist(), item
        if item == GGUFValueType.STRING:     # a vocabulary: 100,000s of strings, so the loop is kept tight
            out, pos, buf, length = [], self.pos, self.buf, struct.Struct(self.order + "Q").unpack_from
            for _ in range(n):
                (k,) = length(buf, pos)
                out.append(str(buf[pos + 8:pos + 8 + k], "utf-8", "replace"))
                pos += 8 + k
            if pos > len(buf):
                raise GGUFHeaderError(f"an array of {n} strings runs past the end of the file")
            self.pos = pos
            return out, item
        return [self.value(item)[0] for _ in range(n)], item


def read(path: str | Path) -> Header:
    """The header of the GGUF file at `path`. Raises GGUFHeaderError (or struct.error on a cut file) when the
    bytes are not a GGUF header this reader knows."""
    with open(path, "rb") as f:
        if f.read(4) != MAGIC:
            raise GGUFHeaderError("bad magic")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return _parse(memoryview(m))


def _parse(buf: memoryview) -> Header:
    try:
        return _parse_in(buf)
    finally:
        buf.release()


def _parse_in(buf: memoryview) -> Header:
    version = struct.unpack_from("<I", buf, 4)[0]
    order = "<"
    if version & 0xFFFF == 0:      # written on a machine of the other byte order
        order, version = ">", struct.unpack_from(">I", buf, 4)[0]
    if version not in VERSIONS:
        raise GGUFHeaderError(f"GGUF version {version} is not supported (only {', '.join(map(str, VERSIONS))})")
    c = _Cursor(buf, order)
    c.pos = 8
    n_tensors, n_kv = c.take("Q"), c.take("Q")
    fields: dict[str, Field] = {}
    for _ in range(n_kv):
        key = c.string()
        t = GGUFValueType(c.take("I"))
        value, item = c.value(t)
        fields[key] = Field(value, t, item)
    infos = []
    for _ in range(n_tensors):
        name = c.string()
        dims = tuple(c.take("Q") for _ in range(c.take("I")))
        infos.append((name, dims, GGMLQuantizationType(c.take("I")), c.take("Q")))
    alignment = fields["general.alignment"].value if "general.alignment" in fields else DEFAULT_ALIGNMENT
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFHeaderError(f"general.alignment {alignment!r} is not a power of two")
    data_offset = -(-c.pos // alignment) * alignment
    tensors = []
    for name, dims, ttype, offset in infos:
        block, size = GGML_QUANT_SIZES[ttype]
        n = int(np.prod(dims, dtype=np.int64)) if dims else 1
        tensors.append(TensorInfo(name, dims, ttype, n // block * size, data_offset + offset))
    return Header(version, fields, tensors, data_offset, alignment)
