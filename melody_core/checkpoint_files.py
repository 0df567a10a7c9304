"""File-level safety for checkpoint bundles: strict JSON, file names, safetensors headers, atomic swap.

Nothing here unpickles or executes anything from a file. `read_header` parses a safetensors file's
header (8-byte little-endian length, then that many bytes of JSON) itself and checks its structure
- header length within the file, known dtypes, shapes matching byte sizes, tensor data that covers
the data section exactly with no overlap or gap - without reading tensor data. `resolve_file` only
accepts plain `.safetensors` file names that resolve (symlinks followed) inside the bundle folder,
and refuses pickle-based checkpoint names (.pt/.pth/.bin/.ckpt/...) without opening them.
The component-aware checks live in `melody_core.checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

TENSOR_SUFFIX = ".safetensors"
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own header size limit
HASH_CHUNK_BYTES = 2**20
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")  # refused unopened
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TENSOR_KEYS = {"dtype", "shape", "data_offsets"}

# safetensors dtype codes <-> torch dtypes
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
CODES = {v: k for k, v in DTYPES.items()}

TensorSpec = tuple[tuple[int, ...], str]  # (shape, safetensors dtype code)


class BundleError(ValueError):
    """A bundle that cannot be saved or trusted; the message is one line naming the file."""


def dtype_code(dtype: torch.dtype, where: str, key: str) -> str:
    """safetensors code of a torch dtype (BundleError for dtypes a bundle cannot hold)."""
    if dtype not in CODES:
        raise fail(where, f"tensor {key!r} has unsupported dtype {dtype}")
    return CODES[dtype]


def fail(where: str, problem: str) -> BundleError:
    return BundleError(f"{where}: {problem}")


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity. Raises ValueError."""
    try:
        text = raw.decode("utf-8")
        return json.loads(text, object_pairs_hook=_strict_pairs, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def names_list(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def sha256_file(path: Path, where: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise BundleError(f"{where}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def resolve_file(folder: Path, name: Any, where: str) -> Path:
    """The real path of a component file, refused unless it is a plain .safetensors name in `folder`."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise fail(where, f"invalid component file name {name!r}")
    suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise fail(where, f"{name!r} is a pickle-based checkpoint ({suffix}): refused, only .safetensors "
                           "files are loaded (nothing is ever unpickled)")
    if os.path.isabs(name) or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise fail(where, f"absolute path {name!r} refused: files must be inside the bundle folder")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise fail(where, f"path {name!r} refused: files must be plain file names in the bundle folder")
    if suffix != TENSOR_SUFFIX:
        raise fail(where, f"{name!r} is not a {TENSOR_SUFFIX} file")
    if not _FILE_NAME.fullmatch(name):
        raise fail(where, f"invalid component file name {name!r}")
    path = folder / name
    if not path.exists():
        raise fail(str(path), "missing (or a broken symlink)")
    real, root = path.resolve(), folder.resolve()
    if root not in real.parents:
        raise fail(str(path), f"refused: resolves to {real}, outside the bundle folder")
    if not real.is_file():
        raise fail(str(path), "not a regular file")
    return real


def read_header(path: Path, where: str) -> dict[str, TensorSpec]:
    """Parse and check a safetensors header without reading tensor data: {name: (shape, dtype code)}."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise fail(where, f"not a safetensors file (only {len(head)} bytes)")
            n = int.from_bytes(head, "little")  # header length, u64 little-endian
            if n > MAX_HEADER_BYTES:
                raise fail(where, f"not a safetensors file (header length {n} exceeds {MAX_HEADER_BYTES})")
            if 8 + n > size:
                raise fail(where, f"truncated or not a safetensors file (header length {n} "
                                  f"beyond file size {size})")
            raw = f.read(n)
    except OSError as exc:
        raise fail(where, f"cannot read ({exc.strerror or exc})") from None
    try:
        header = parse_json(raw)
    except ValueError as exc:
        raise fail(where, f"not a safetensors file (header is not valid JSON: {exc})") from None
    if not isinstance(header, dict):
        raise fail(where, "not a safetensors file (header is not a JSON object)")
    extra = header.pop("__metadata__", {})
    if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
        raise fail(where, "invalid safetensors header (__metadata__ must map strings to strings)")
    data_size = size - 8 - n
    specs: dict[str, TensorSpec] = {}
    spans: list[tuple[int, int, str]] = []
    for key, spec in header.items():
        bad = f"invalid safetensors header entry {key!r}"
        if not isinstance(spec, dict) or set(spec) != _TENSOR_KEYS:
            raise fail(where, bad)
        code, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        if code not in DTYPES:
            raise fail(where, f"tensor {key!r} has unsupported dtype {code!r}")
        if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
            raise fail(where, f"{bad} (shape)")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise fail(where, f"{bad} (data_offsets)")
        begin, end = offsets
        if end > data_size:
            raise fail(where, f"truncated: tensor {key!r} data ends at byte {end}, "
                              f"the data section has {data_size}")
        numel = 1
        for d in shape:
            numel *= d
        if numel * DTYPES[code].itemsize != end - begin:
            raise fail(where, f"{bad} (data size {end - begin} bytes does not match shape {shape} {code})")
        specs[key] = (tuple(shape), code)
        spans.append((begin, end, key))
    pos = 0
    for begin, end, key in sorted(spans):
        if begin != pos:
            raise fail(where, f"invalid safetensors data layout (tensor {key!r} overlaps or leaves a gap)")
        pos = end
    if pos != data_size:
        raise fail(where, f"invalid safetensors file ({data_size - pos} bytes after the last tensor)")
    return specs


def check_tensors(where: str, found: dict[str, TensorSpec], expected: dict[str, TensorSpec],
                   aliases: dict[str, str]) -> None:
    """Refuse any difference between the stored tensors (plus aliases) and the expected state_dict."""
    for alias, target in aliases.items():
        if alias in found or target not in found:
            raise fail(where, f"invalid alias {alias!r} -> {target!r}")
    present = {**found, **{a: found[t] for a, t in aliases.items()}}
    missing, unexpected = sorted(set(expected) - set(present)), sorted(set(present) - set(expected))
    problems = ([f"missing tensor(s) {names_list(missing)}"] if missing else []) + (
        [f"unexpected tensor(s) {names_list(unexpected)}"] if unexpected else [])
    if problems:
        raise fail(where, "; ".join(problems))
    for key in sorted(expected):
        (shape, code), (want_shape, want_code) = present[key], expected[key]
        if shape != want_shape:
            raise fail(where, f"tensor {key!r} has shape {list(shape)}, expected {list(want_shape)}")
        if code != want_code:
            raise fail(where, f"tensor {key!r} has dtype {code}, expected {want_code}")


def plain_tensors(state: Mapping[str, Any], where: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """CPU, contiguous, non-overlapping tensors to write, and {alias: stored name} for tied ones."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple, str] = {}
    for key, t in state.items():
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.device.type == "meta":
            raise BundleError(f"{where}: state_dict entry {key!r} is not a dense tensor with data")
        ptr = t.untyped_storage().data_ptr()
        view = (t.device, ptr, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and view in first:
            aliases[key] = first[view]
            continue
        first[view] = key
        kept[key] = t.detach()
    shared = Counter((t.device, t.untyped_storage().data_ptr()) for t in kept.values() if t.numel())
    out = {}
    for key, t in kept.items():
        copy = t.numel() > 0 and shared[(t.device, t.untyped_storage().data_ptr())] > 1
        t = t.to("cpu")
        out[key] = t.clone(memory_format=torch.contiguous_format) if copy else t.contiguous()
    return out, aliases


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; renames there are durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
    else:
        old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)
