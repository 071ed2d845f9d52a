"""Read and seal the metadata section of a shared library: pure Python, no TVM, any architecture.

A library built here carries a ``.tvm_shufflenet`` section: a magic, a SHA-256 of the whole file (taken with
the digest field zeroed), and a JSON record. Reading it needs no ``dlopen``, so a library for another
machine, or a damaged one, is refused with a clear message instead of a crash.
"""

from __future__ import annotations

import hashlib
import json
import platform
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = ["LibraryError", "ElfInfo", "host_machine", "read_elf", "metadata_c_source", "seal", "read_metadata", "SECTION"]

SECTION = ".tvm_shufflenet"
MAGIC = b"TVMSNMETA1"
_DIGEST_LEN = 64
_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64"}


def host_machine() -> str:
    """This machine's architecture in ``uname -m`` naming (``x86_64``, ``aarch64``, ``arm``)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64", "armv7l": "arm", "armv8l": "arm"}.get(machine, machine)


class LibraryError(UserError, ValueError):
    """A file that is not an intact tvm_shufflenet library."""


@dataclass(frozen=True)
class ElfInfo:
    """What the ELF header says: the machine (``uname -m`` naming), word size and section offsets."""

    machine: str
    bits: int
    sections: dict[str, tuple[int, int]]  # name -> (file offset, size)


def read_elf(data: bytes, path: str = "library") -> ElfInfo:
    """Parse the ELF header and section table of ``data``."""
    if len(data) < 52 or data[:4] != b"\x7fELF":
        raise LibraryError(f"{path} is not a shared library (no ELF header): rebuild it with `tvm-shufflenet compile`")
    bits = {1: 32, 2: 64}.get(data[4])
    if bits is None or data[5] != 1:
        raise LibraryError(f"{path}: unsupported ELF class/byte order; only little-endian 32/64-bit libraries are built here")
    machine_id = struct.unpack_from("<H", data, 18)[0]
    if bits == 64:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    else:
        shoff, = struct.unpack_from("<I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    if shoff == 0 or shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        raise LibraryError(f"{path} is truncated or damaged (section table out of range): rebuild it")

    def header(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        if bits == 64:
            name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, base)
        else:
            name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIIIII", data, base)
        return name, offset, size

    _, str_off, str_size = header(shstrndx)
    names = data[str_off : str_off + str_size]
    sections = {}
    for i in range(shnum):
        name_off, offset, size = header(i)
        end = names.find(b"\0", name_off)
        sections[names[name_off:end].decode("ascii", "replace")] = (offset, size)
    machine = f"riscv{bits}" if machine_id == 243 else _MACHINES.get(machine_id, f"elf-machine-{machine_id}")
    return ElfInfo(machine, bits, sections)


def metadata_c_source(record: dict[str, Any]) -> str:
    """C source that places ``record`` (as JSON) in the library's metadata section."""
    payload = MAGIC + b"0" * _DIGEST_LEN + json.dumps(record, sort_keys=True).encode() + b"\0"
    body = ",".join(str(b) for b in payload)
    return (
        "/* tvm_shufflenet library metadata: magic, sha256 of the file, JSON. */\n"
        f'__attribute__((section("{SECTION}"), used, aligned(8)))\n'
        f"const unsigned char tvm_shufflenet_metadata[{len(payload)}] = {{{body}}};\n"
    )


def _locate(data: bytes, path: str) -> tuple[ElfInfo, int, int]:
    info = read_elf(data, path)
    if SECTION not in info.sections:
        raise LibraryError(f"{path} has no {SECTION} section: it was not built by tvm-shufflenet (or was stripped of it)")
    offset, size = info.sections[SECTION]
    if offset + size > len(data) or data[offset : offset + len(MAGIC)] != MAGIC:
        raise LibraryError(f"{path} is truncated or damaged (metadata unreadable): rebuild it")
    return info, offset, size


def _digest(data: bytearray, offset: int) -> str:
    start = offset + len(MAGIC)
    saved = bytes(data[start : start + _DIGEST_LEN])
    data[start : start + _DIGEST_LEN] = b"0" * _DIGEST_LEN
    digest = hashlib.sha256(data).hexdigest()
    data[start : start + _DIGEST_LEN] = saved
    return digest


def seal(path: str | Path) -> str:
    """Write the file's SHA-256 into its metadata section; returns the digest."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    _, offset, _ = _locate(bytes(data), str(path))
    digest = _digest(data, offset)
    start = offset + len(MAGIC)
    data[start : start + _DIGEST_LEN] = digest.encode()
    path.write_bytes(bytes(data))
    return digest


def read_metadata(path: str | Path, verify: bool = True) -> tuple[ElfInfo, dict[str, Any]]:
    """The ELF facts and metadata record of a library; with ``verify`` the SHA-256 must match."""
    path = Path(path)
    if path.is_dir():
        raise LibraryError(f"{path} is a directory: give the library file (.so) built by `tvm-shufflenet compile`")
    if not path.is_file():
        raise LibraryError(f"library {path} does not exist")
    data = bytearray(path.read_bytes())
    info, offset, size = _locate(bytes(data), str(path))
    section = bytes(data[offset : offset + size])
    stored = section[len(MAGIC) : len(MAGIC) + _DIGEST_LEN].decode("ascii", "replace")
    if verify and stored != _digest(data, offset):
        raise LibraryError(f"{path} is damaged (checksum mismatch): rebuild it or copy it again")
    text = section[len(MAGIC) + _DIGEST_LEN :].split(b"\0", 1)[0]
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        raise LibraryError(f"{path}: metadata is not valid JSON; rebuild it") from None
    record["library_sha256"] = stored
    return info, record
