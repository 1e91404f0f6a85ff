"""A GGUF's header: its key-values and tensor table, read without touching the tensor data.

The layout is ggml's gguf.md (v2/v3: 64-bit counts). gguf-py's GGUFReader gives the same values but builds a numpy
view for every element of every array, so a 150k-token vocabulary costs it about 10 s of CPU on a small machine;
every plan, tune and advise of a GGUF paid that. Here arrays of numbers are one `numpy.frombuffer` each and
arrays of strings a plain loop.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# gguf_type -> struct code; 8 is a string, 9 an array
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class GgufFormatError(ValueError):
    """The bytes are not a well-formed GGUF header."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]          # ggml order: ne0 (the row) first
    tensor_type: GGMLQuantizationType
    data_offset: int                # from the start of the file
    n_bytes: int


@dataclass(frozen=True)
class Header:
    fields: dict[str, Any]          # str, int, float, bool, or a list of them (as GGUFReader's contents())
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int                # where the tensor data starts
    byteorder: str                  # "<" or ">"
    types: dict[str, tuple[int, int | None]]   # key -> (gguf value type, item type of an array): to write back


class _Parser:
    def __init__(self, buf) -> None:
        self.buf, self.pos, self.e, self.item = buf, 0, "<", None

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise GgufFormatError(f"header ends early (needs byte {end}, file has {len(self.buf)})")
        b = self.buf[self.pos:end]
        self.pos = end
        return b

    def scalar(self, code: str):
        size = struct.calcsize(code)
        return struct.unpack(self.e + code, self.take(size))[0]

    def string(self) -> str:
        return self.take(self.scalar("Q")).decode("utf-8", "replace")

    def value(self, t: int):
        if t in _SCALAR:
            return self.scalar(_SCALAR[t])
        if t == _STRING:
            return self.string()
        if t == _ARRAY:
            it, n = self.scalar("I"), self.scalar("Q")
            if it in _SCALAR:
                dtype = np.dtype(self.e + _SCALAR[it])
                out = np.frombuffer(self.take(n * dtype.itemsize), dtype=dtype).tolist()
            elif it == _STRING:
                out = self.strings(n)
            else:
                out = [self.value(it) for _ in range(n)]
            self.item = it              # after any nested array: the outer array's item type
            return out
        raise GgufFormatError(f"value type {t} unknown")

    def strings(self, n: int) -> list[str]:
        buf, pos, size = self.buf, self.pos, len(self.buf)
        length = struct.Struct(self.e + "Q").unpack_from
        out = []
        try:
            for _ in range(n):
                (k,) = length(buf, pos)
                pos += 8
                if pos + k > size:
                    break
                out.append(buf[pos:pos + k].decode("utf-8", "replace"))
                pos += k
        except struct.error:
            pass
        if len(out) < n:
            raise GgufFormatError(f"header ends inside an array of {n} strings")
        self.pos = pos
        return out


def parse(buf) -> Header:
    """The header in `buf` (bytes or an mmap of the whole file); GgufFormatError if it is not well formed."""
    p = _Parser(buf)
    if p.take(4) != MAGIC:
        raise GgufFormatError("bad magic")
    version = p.scalar("I")
    if version & 0xFFFF == 0:           # written big-endian
        p.e, version = ">", struct.unpack(">I", struct.pack("<I", version))[0]
    if version < 2:
        raise GgufFormatError(f"version {version} is too old (v2 or later)")
    n_tensors, n_kv = p.scalar("Q"), p.scalar("Q")
    fields: dict[str, Any] = {}
    types: dict[str, tuple[int, int | None]] = {}
    for _ in range(n_kv):
        key = p.string()
        if key in fields:
            raise GgufFormatError(f"key {key!r} appears twice")
        t = p.scalar("I")
        fields[key] = p.value(t)
        types[key] = (t, p.item if t == _ARRAY else None)
    alignment = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GgufFormatError(f"alignment {alignment!r} is not a power of two")
    tensors, names = [], set()
    for _ in range(n_tensors):
        name = p.string()
        n_dims = p.scalar("I")
        shape = struct.unpack(f"{p.e}{n_dims}Q", p.take(8 * n_dims))
        raw_type, offset = p.scalar("I"), p.scalar("Q")
        if name in names:
            raise GgufFormatError(f"tensor {name!r} appears twice")
        names.add(name)
        try:
            tensor_type = GGMLQuantizationType(raw_type)
        except ValueError:
            raise GgufFormatError(f"tensor {name!r} has unknown type {raw_type}") from None
        block, size = GGML_QUANT_SIZES[tensor_type]
        n = 1
        for d in shape:
            n *= d
        tensors.append((name, shape, tensor_type, offset, n * size // block))
    data_offset = -(-p.pos // alignment) * alignment
    return Header(fields, [TensorInfo(name, shape, tt, data_offset + off, nb) for name, shape, tt, off, nb in tensors],
                  alignment, data_offset, p.e, types)


def read(path: str | Path) -> Header:
    """The header of the GGUF at `path` (mapped, so only the pages of the header are read)."""
    with open(path, "rb") as f:
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:              # an empty file cannot be mapped
            raise GgufFormatError("the file is empty") from None
    try:
        return parse(mm)
    finally:
        mm.close()
