"""A GGUF's header, its key-values and tensor table, read straight from the file's bytes.

gguf-py's GGUFReader makes a numpy view of every element of every array: about 10 s on one core for a
150k-token vocabulary and its merges, before any field is used. The planner needs the scalars and the tensor
table, so this walks the same layout (gguf.md in ggml, versions 2 and 3, either byte order) with `struct` and
takes a fraction of a second. tests/test_model.py compares it with GGUFReader field by field.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rigbench.errors import ModelFileError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# gguf_type -> struct format (gguf.md: UINT8 .. FLOAT64; 8 is STRING, 9 is ARRAY)
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]      # ggml order: ne[0], the row length, first (as GGUFReader gives it)
    type: int                   # ggml_type
    offset: int                 # from the start of the file
    nbytes: int

    @property
    def type_name(self) -> str:
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType(self.type).name


@dataclass(frozen=True)
class Header:
    version: int
    fields: dict[str, Any]      # key -> int, float, bool, str, or a list of them (nested for arrays of arrays)
    tensors: list[TensorInfo]
    data_offset: int            # where tensor data starts (after the header, aligned)


class _Damaged(Exception):
    pass


class _Cursor:
    def __init__(self, buf, order: str):
        self.buf, self.pos, self.order = buf, 0, order
        self._u32 = struct.Struct(order + "I").unpack_from
        self._u64 = struct.Struct(order + "Q").unpack_from

    def u32(self) -> int:
        (v,) = self._u32(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self) -> int:
        (v,) = self._u64(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self) -> str:
        n = self.u64()
        end = self.pos + n
        if end > len(self.buf):
            raise _Damaged(f"a string of {n} bytes runs past the end of the file")
        s = self.buf[self.pos:end].decode("utf-8", errors="replace")
        self.pos = end
        return s

    def strings(self, n: int) -> list[str]:
        # the hot loop: a vocabulary and its merges are ~300k strings
        buf, pos, size, u64 = self.buf, self.pos, len(self.buf), self._u64
        out = [""] * n
        for i in range(n):
            (k,) = u64(buf, pos)
            pos += 8
            if pos + k > size:
                raise _Damaged(f"a string of {k} bytes runs past the end of the file")
            out[i] = buf[pos:pos + k].decode("utf-8", errors="replace")
            pos += k
        self.pos = pos
        return out

    def value(self, t: int):
        if t in _SCALAR:
            (v,) = struct.unpack_from(self.order + _SCALAR[t], self.buf, self.pos)
            self.pos += struct.calcsize(_SCALAR[t])
            return v
        if t == _STRING:
            return self.string()
        if t == _ARRAY:
            it, n = self.u32(), self.u64()
            if it in _SCALAR:
                fmt = f"{self.order}{n}{_SCALAR[it]}"
                size = struct.calcsize(fmt)
                if self.pos + size > len(self.buf):
                    raise _Damaged(f"an array of {n} values runs past the end of the file")
                v = list(struct.unpack_from(fmt, self.buf, self.pos))
                self.pos += size
                return v
            if it == _STRING:
                return self.strings(n)
            return [self.value(it) for _ in range(n)]
        raise _Damaged(f"value type {t} is not one GGUF defines")


def _nbytes(shape: tuple[int, ...], ggml_type: int) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    n = 1
    for d in shape:
        n *= d
    return n // block * size


def read(path: Path | str) -> Header:
    """The header of the GGUF file at `path`; ModelFileError (saying what to do) when it is not one or is damaged.
    A truncated file is reported here only when its header is cut; callers compare `tensors` with the size."""
    path = Path(path)
    with path.open("rb") as f:
        if f.read(4) != MAGIC:
            raise ModelFileError(f"{path} is not a GGUF file (bad magic); pass a .gguf model or a config.json")
        try:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse(mm)
        except (_Damaged, struct.error, ValueError, KeyError, OverflowError, MemoryError) as e:
            raise ModelFileError(
                f"{path}: damaged or truncated GGUF ({type(e).__name__}: {e}); re-download the file") from None


def _parse(buf) -> Header:
    (version,) = struct.unpack_from("<I", buf, 4)
    order = "<"
    if version & 0xFFFF == 0:           # written on a big-endian machine: the version reads byte-swapped
        order = ">"
        (version,) = struct.unpack_from(">I", buf, 4)
    if version not in (2, 3):
        raise ModelFileError(f"GGUF version {version}: rigbench reads versions 2 and 3; convert the model again "
                             "with a current llama.cpp")
    c = _Cursor(buf, order)
    c.pos = 8
    n_tensors, n_kv = c.u64(), c.u64()
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = c.string()
        fields[key] = c.value(c.u32())
    raw = []
    for _ in range(n_tensors):
        name = c.string()
        dims = c.u32()
        shape = struct.unpack_from(f"{order}{dims}Q", buf, c.pos)
        c.pos += 8 * dims
        raw.append((name, tuple(int(x) for x in shape), c.u32(), c.u64()))
    align = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0:
        raise _Damaged(f"general.alignment is {align!r}")
    data = -(-c.pos // align) * align
    tensors = [TensorInfo(name, shape, t, data + off, _nbytes(shape, t)) for name, shape, t, off in raw]
    return Header(version=version, fields=fields, tensors=tensors, data_offset=data)
