"""Checkpoint bundles: a folder with `config.json` and one `.safetensors` file per component.

Layout (format ``melody-bundle``, version 1)::

    bundle/
      config.json          the manifest below (pretty-printed, keys sorted)
      vae.safetensors      state_dict of each component, one file each
      dpd.safetensors ...

    {"format": "melody-bundle", "format_version": 1,
     "preset": "tiny" | "paper" | "custom",      # inferred on save: every config equals that preset
     "components": {"<name>": {"class": model class name (informative), "config": XConfig.to_dict(),
                               "file": "<name>.safetensors", "sha256": hex digest of the file,
                               "size": file bytes, "n_params": parameters (tied counted once),
                               "dtype": floating dtype, e.g. "float32",
                               "aliases": {tied tensor name: name it is stored under}}},
     "meta": {free-form JSON: steps, wall time, data, ...},
     "content_sha256": hex digest, see below}

Content hash (the model hash): sha256 of the canonical JSON of the manifest without its
``content_sha256`` key, canonical = ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=True, allow_nan=False)`` encoded as UTF-8. The manifest holds each tensor file's
sha256, so the hash covers every tensor byte, every config, the preset label and the meta;
indentation and key order in config.json do not change it. Display form: the first 12 hex digits.

Trust: nothing is ever unpickled. Only `.safetensors` files named by plain file names that resolve
inside the bundle folder are opened (a referenced `.pt/.pth/.bin/.ckpt` is refused without being
opened). Each file's header (8-byte little-endian length + JSON) is parsed and checked
(`melody_core.checkpoint_files`): structure, then names, shapes and dtypes against a model built
from the config on the meta device; then its size and sha256 are compared, all before any tensor
is read. Every refusal is a `BundleError` with one line naming the file and the problem.

Saving is atomic: the bundle is written into a temporary folder next to the target (files fsynced),
then renamed into place; an existing bundle is moved aside only once the new one is complete and
deleted after the swap. The folder is replaced as a whole (other files in it are not kept).

*(our choice)* tied weights (one tensor under two names) are stored once and listed in
``aliases``; tensors that share memory in any other way are copied apart. A component's dtype is
the dtype of its first floating parameter; a bundle may hold a half-precision model, and loading
casts the freshly built model to that dtype before copying the weights (integer buffers keep their
dtype). Models are built on the target device while the global RNG state is saved and restored, so
loading a bundle does not perturb the caller's random stream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from shutil import rmtree
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from melody_core import checkpoint_files as files
from melody_core import config as mcfg
from melody_core.checkpoint_files import BundleError, TensorSpec, fail
from melody_core.config import BaseConfig, ConfigError

__all__ = ["Bundle", "BundleError", "BundleInfo", "ComponentInfo", "build_meta", "canonical_json",
           "content_hash", "describe_bundle", "inspect_bundle", "load_bundle", "random_bundle", "save_bundle"]

FORMAT_NAME = "melody-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "config.json"
HASH_KEY = "content_sha256"
SHORT_HASH_LEN = 12  # hex digits shown for a bundle hash
MAX_MANIFEST_BYTES = 16 * 2**20  # a config.json larger than this is not a manifest
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOP_KEYS = ("format", "format_version", "preset", "components", "meta", HASH_KEY)
_ENTRY_KEYS = ("class", "config", "file", "sha256", "size", "n_params", "dtype", "aliases")
_FLOAT_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
                 "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ComponentInfo:
    """One component of a bundle, as recorded in config.json."""

    name: str
    model_class: type  # model class of the component in this build (COMPONENTS registry)
    config: BaseConfig
    file: str
    size: int  # bytes of the .safetensors file
    sha256: str
    n_params: int
    dtype: str  # floating dtype of the weights, e.g. "float32"
    aliases: dict[str, str]  # tied tensor name -> the name it is stored under
    preset: str  # "tiny" / "paper" when the config equals that preset, else "custom"

    @property
    def class_name(self) -> str:
        return self.model_class.__name__


@dataclass(frozen=True)
class BundleInfo:
    """What `inspect_bundle` reports; `model_hash` is the full content hash, `hash` its display form."""

    path: Path  # the bundle folder
    format_version: int
    preset: str
    components: dict[str, ComponentInfo]
    meta: dict[str, Any]
    model_hash: str  # 64 hex digits, see the module docstring
    verified: bool  # True when the content hash and every file's sha256 were recomputed

    @property
    def hash(self) -> str:
        return self.model_hash[:SHORT_HASH_LEN]

    @property
    def n_params(self) -> int:
        return sum(c.n_params for c in self.components.values())

    @property
    def size(self) -> int:
        return sum(c.size for c in self.components.values())

    def to_dict(self) -> dict[str, Any]:
        comps = {n: {"class": c.class_name, "file": c.file, "size": c.size, "sha256": c.sha256,
                     "n_params": c.n_params, "dtype": c.dtype, "preset": c.preset,
                     "config": c.config.to_dict()} for n, c in self.components.items()}
        return {"path": str(self.path), "format": FORMAT_NAME, "format_version": self.format_version,
                "preset": self.preset, "hash": self.model_hash, "short_hash": self.hash,
                "verified": self.verified, "n_params": self.n_params, "size": self.size,
                "components": comps, "meta": self.meta}


@dataclass
class Bundle:
    """A loaded bundle: configs and models (eval mode, on `device`) of the requested components."""

    info: BundleInfo
    configs: dict[str, BaseConfig]
    models: dict[str, nn.Module]
    device: torch.device

    @property
    def meta(self) -> dict[str, Any]:
        return self.info.meta

    @property
    def model_hash(self) -> str:
        return self.info.model_hash

    @property
    def hash(self) -> str:
        return self.info.hash

    def __getitem__(self, name: str) -> nn.Module:
        return self.models[name]


_Checked = tuple[Path, dict[str, TensorSpec]]  # real file path, expected tensors


# --------------------------------------------------------------------------------------------- hashing


def canonical_json(obj: Any) -> bytes:
    """The byte form the content hash is computed over (see the module docstring)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def content_hash(manifest: Mapping[str, Any]) -> str:
    """sha256 hex digest of a manifest without its own hash key."""
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k != HASH_KEY})).hexdigest()


# ------------------------------------------------------------------------------------------ validation


def _read_manifest(path: str | os.PathLike) -> tuple[Path, Path, dict[str, Any]]:
    """(folder, config.json path, manifest) with the top-level structure checked."""
    path = Path(path)
    if path.is_dir():
        folder, mpath = path, path / MANIFEST_NAME
    elif path.name == MANIFEST_NAME and path.is_file():
        folder, mpath = path.parent, path
    elif not path.exists():
        raise fail(str(path), "no such bundle folder or config.json")
    else:
        raise fail(str(path), f"not a bundle (give the bundle folder or its {MANIFEST_NAME})")
    where = str(mpath)
    try:
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise OSError(f"larger than {MAX_MANIFEST_BYTES} bytes, not a bundle manifest")
        manifest = files.parse_json(mpath.read_bytes())
    except FileNotFoundError:
        raise fail(where, f"missing: the folder is not a bundle (no {MANIFEST_NAME})") from None
    except OSError as exc:
        raise fail(where, f"cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise fail(where, f"not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise fail(where, f"not a MeLoDy bundle manifest (expected \"format\": \"{FORMAT_NAME}\")")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or not files.is_int(version):
        raise fail(where, f"unsupported format_version {version!r} (this build reads {FORMAT_VERSION})")
    _check_keys(manifest, _TOP_KEYS, where)
    types = {"preset": str, "components": dict, "meta": dict, HASH_KEY: str}
    for key, typ in types.items():
        if not isinstance(manifest[key], typ):
            raise fail(where, f"{key!r} must be a JSON {'string' if typ is str else 'object'}")
    if not manifest["components"]:
        raise fail(where, "bundle has no components")
    if not _HEX64.fullmatch(manifest[HASH_KEY]):
        raise fail(where, f"{HASH_KEY!r} is not a sha256 hex digest")
    return folder, mpath, manifest


def _check_keys(obj: dict[str, Any], keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in obj]
    unknown = sorted(set(obj) - set(keys))
    if missing:
        raise BundleError(f"{where}: missing key(s) {files.names_list(missing)}")
    if unknown:
        raise BundleError(f"{where}: unknown key(s) {files.names_list(unknown)}")


def _classes(name: str, where: str) -> tuple[type[BaseConfig], type]:
    try:
        return mcfg.component_classes(name)
    except ConfigError as exc:
        raise fail(where, str(exc)) from None


def _parse_entry(name: str, entry: Any, where: str) -> ComponentInfo:
    """Check one component entry's keys and types and parse its config through its config class."""
    cfg_cls, model_cls = _classes(name, where)
    here = f"component {name!r}"
    if not isinstance(entry, dict):
        raise fail(where, f"{here} must be a JSON object")
    _check_keys(entry, _ENTRY_KEYS, f"{where}: {here}")
    sha, dtype, aliases = entry["sha256"], entry["dtype"], entry["aliases"]
    if not all(files.is_int(entry[k]) and entry[k] >= 0 for k in ("size", "n_params")):
        raise fail(where, f"{here}: size and n_params must be non-negative integers")
    if not isinstance(entry["file"], str):
        raise fail(where, f"{here}: file must be a string")
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        raise fail(where, f"{here}: sha256 is not a sha256 hex digest")
    if dtype not in _FLOAT_DTYPES:
        raise fail(where, f"{here}: unsupported dtype {dtype!r} (one of {', '.join(_FLOAT_DTYPES)})")
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise fail(where, f"{here}: aliases must map tensor names to tensor names")
    try:
        cfg = cfg_cls.from_dict(entry["config"])
    except (ConfigError, TypeError, ValueError) as exc:
        raise fail(where, f"{here}: invalid config: {exc}") from None
    return ComponentInfo(name, model_cls, cfg, entry["file"], entry["size"], sha, entry["n_params"], dtype,
                         aliases, _preset_of(cfg))


def _float_dtype(model: nn.Module) -> torch.dtype | None:
    """dtype of the first floating parameter (or buffer): the model's dtype for bundle purposes."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return None


def build_meta(model_cls: type, cfg: BaseConfig) -> nn.Module:
    """`model_cls(cfg)` on the meta device: shapes and dtypes only, no memory.

    The first call in a process costs seconds: torch's Python meta kernels (arange, normal_, ...)
    import torch._dynamo lazily.
    """
    with torch.device("meta"):
        return model_cls(cfg)


def _expected(cfg: BaseConfig, model_cls: type, dtype: str, where: str) -> tuple[dict[str, TensorSpec], int]:
    """Names/shapes/dtypes of the state_dict a model built from the config has, and its n_params."""
    try:
        model = build_meta(model_cls, cfg)
    except (ValueError, TypeError, AssertionError, RuntimeError, IndexError, ZeroDivisionError) as exc:
        raise fail(where, f"config rejected by {model_cls.__name__}: {exc}") from None
    native = _float_dtype(model)
    if native is not None and native != _FLOAT_DTYPES[dtype]:
        model = model.to(_FLOAT_DTYPES[dtype])
    specs = {k: (tuple(v.shape), files.dtype_code(v.dtype, where, k)) for k, v in model.state_dict().items()}
    return specs, sum(p.numel() for p in model.parameters())


def _validate(path: str | os.PathLike, components: Sequence[str] | None,
              verify_hash: bool) -> tuple[BundleInfo, dict[str, _Checked]]:
    """Every check that does not read tensor data; returns (info, {selected name: checked file})."""
    folder, mpath, manifest = _read_manifest(path)
    where = str(mpath)
    recorded = manifest[HASH_KEY]
    if verify_hash and content_hash(manifest) != recorded:
        raise fail(where, f"content hash mismatch: recorded {recorded[:SHORT_HASH_LEN]}, contents hash to "
                          f"{content_hash(manifest)[:SHORT_HASH_LEN]} (edited or corrupted)")
    entries = {name: _parse_entry(name, e, where) for name, e in manifest["components"].items()}
    if components is None:
        selected = list(entries)
    else:
        selected = list(dict.fromkeys(components))
        absent = [c for c in selected if c not in entries]
        if absent:
            raise fail(where, f"bundle has no component(s) {files.names_list(absent)} "
                              f"(has {', '.join(entries)})")
    uses = Counter(e.file for e in entries.values())
    if max(uses.values()) > 1:
        raise fail(where, "two components refer to the same file")
    checked: dict[str, _Checked] = {}
    for name in selected:
        entry = entries[name]
        real = files.resolve_file(folder, entry.file, where)
        fwhere = str(folder / entry.file)
        expected, n_params = _expected(entry.config, entry.model_class, entry.dtype, fwhere)
        files.check_tensors(fwhere, files.read_header(real, fwhere), expected, entry.aliases)
        if n_params != entry.n_params:
            raise fail(where, f"component {name!r} records n_params={entry.n_params}, "
                              f"its config builds {n_params}")
        size = real.stat().st_size
        if size != entry.size:
            raise fail(fwhere, f"file size {size} bytes, config.json records {entry.size} "
                               "(truncated or replaced)")
        if verify_hash and files.sha256_file(real, fwhere) != entry.sha256:
            raise fail(fwhere, "sha256 mismatch: the file differs from the one config.json records")
        checked[name] = (real, expected)
    info = BundleInfo(folder, FORMAT_VERSION, manifest["preset"], entries, manifest["meta"], recorded,
                      verified=verify_hash)
    return info, checked


# ------------------------------------------------------------------------------------------ public API


def inspect_bundle(path: str | os.PathLike, verify_hash: bool = False) -> BundleInfo:
    """Validate a bundle without reading tensor data or building real models (fast).

    Reads config.json and every safetensors header and checks them against meta-device models.
    `verify_hash=True` also recomputes the content hash and every file's sha256.
    """
    return _validate(path, None, verify_hash)[0]


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu",
                components: Sequence[str] | None = None, verify_hash: bool = True) -> Bundle:
    """Validate, then load the bundle at `path` (its folder or its config.json).

    Returns configs and models (eval mode, on `device`) of `components` (default: all).
    `verify_hash=False` skips hashing (config.json and files) but not the structural checks.
    """
    info, checked = _validate(path, components, verify_hash)
    device = torch.device(device)
    models: dict[str, nn.Module] = {}
    for name, (real, expected) in checked.items():
        entry = info.components[name]
        fwhere = str(info.path / entry.file)
        try:
            with safe_open(str(real), framework="pt", device="cpu") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as exc:
            raise fail(fwhere, f"cannot read tensors ({exc})") from None
        found = {k: (tuple(t.shape), files.dtype_code(t.dtype, fwhere, k)) for k, t in state.items()}
        files.check_tensors(fwhere, found, expected, entry.aliases)  # the file may have changed meanwhile
        state.update({alias: state[target] for alias, target in entry.aliases.items()})
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), device:
            model = entry.model_class(entry.config)
        native = _float_dtype(model)
        if native is not None and native != _FLOAT_DTYPES[entry.dtype]:
            model = model.to(_FLOAT_DTYPES[entry.dtype])
        model.load_state_dict(state, strict=True)
        models[name] = model.eval()
    return Bundle(info, {n: info.components[n].config for n in checked}, models, device)


def save_bundle(path: str | os.PathLike, models: Mapping[str, nn.Module], configs: Mapping[str, BaseConfig],
                meta: Mapping[str, Any] | None = None) -> BundleInfo:
    """Write models + configs as a bundle folder at `path`, atomically; returns its (verified) info."""
    target = Path(path)
    where = str(target)
    if not models or set(models) != set(configs):
        raise fail(where, f"models ({', '.join(models)}) and configs ({', '.join(configs)}) must name the "
                           "same, non-empty set of components")
    if meta is not None and not isinstance(meta, Mapping):
        raise fail(where, "meta must be a dict")
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        entries = {n: _write_component(tmp, n, models[n], configs[n], where) for n in sorted(models)}
        presets = {_preset_of(configs[n]) for n in models}
        manifest: dict[str, Any] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                                    "preset": presets.pop() if len(presets) == 1 else "custom",
                                    "components": entries, "meta": dict(meta or {})}
        try:  # hash what a reader will parse (tuples -> lists, int keys -> str)
            manifest = json.loads(canonical_json(manifest))
        except (TypeError, ValueError) as exc:
            raise fail(where, f"meta/config is not plain JSON ({exc})") from None
        manifest[HASH_KEY] = content_hash(manifest)
        with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        files.fsync_dir(tmp)
        files.swap_into_place(tmp, target)
    except BaseException:
        rmtree(tmp, ignore_errors=True)
        raise
    return dataclasses.replace(_validate(target, None, verify_hash=False)[0], verified=True)


def random_bundle(path: str | os.PathLike, preset: str = "tiny", components: Sequence[str] | None = None,
                  seed: int = 0, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> BundleInfo:
    """Save randomly initialised models of a preset (config fields overridable per component).

    Each component is seeded from (seed, name), so it does not depend on which others are built;
    the caller's global RNG state is left untouched.
    """
    names = list(mcfg.PIPELINE_COMPONENTS if components is None else dict.fromkeys(components))
    overrides = dict(overrides or {})
    stray = sorted(set(overrides) - set(names))
    if stray:
        raise fail(str(path), f"overrides for component(s) not being built: {files.names_list(stray)}")
    configs: dict[str, BaseConfig] = {}
    models: dict[str, nn.Module] = {}
    for name in names:
        cfg_cls, model_cls = _classes(name, str(path))
        try:
            cfg = cfg_cls.preset(preset)
            if name in overrides:
                cfg = cfg_cls.from_dict({**cfg.to_dict(), **dict(overrides[name])})
        except (ConfigError, TypeError, ValueError) as exc:
            raise fail(str(path), f"component {name!r}: {exc}") from None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_component_seed(seed, name))
            models[name] = model_cls(cfg)
        configs[name] = cfg
    meta = {"random_init": True, "seed": seed, "preset": preset, "overrides": overrides}
    return save_bundle(path, models, configs, meta)


def describe_bundle(info: BundleInfo) -> str:
    """Human-readable summary: preset, hash, components (class, params, dtype, size, file), meta."""
    check = "verified" if info.verified else "recorded, files not re-hashed"
    lines = [f"bundle {info.path}  ({FORMAT_NAME} v{info.format_version})",
             f"  preset   {info.preset}",
             f"  hash     {info.hash}  ({check})",
             f"  total    {_fmt_params(info.n_params)} parameters, {_fmt_bytes(info.size)}",
             "  components:"]
    width = max(len(n) for n in info.components)
    cls_width = max(len(c.class_name) for c in info.components.values())
    for c in info.components.values():
        lines.append(f"    {c.name:<{width}}  {c.class_name:<{cls_width}}  {_fmt_params(c.n_params):>8}  "
                     f"{c.dtype:<8}  {_fmt_bytes(c.size):>9}  {c.preset:<6}  {c.file}")
    if info.meta:
        lines.append("  meta:")
        lines += [f"    {k}: {_short(v)}" for k, v in sorted(info.meta.items())]
    else:
        lines.append("  meta:    (none)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- saving


def _preset_of(cfg: BaseConfig) -> str:
    for name in mcfg.PRESETS:
        if cfg == type(cfg).preset(name):
            return name
    return "custom"


def _component_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little")


def _write_component(folder: Path, name: str, model: nn.Module, cfg: BaseConfig, where: str) -> dict:
    """Write `<name>.safetensors` (checked against the config first) and return its manifest entry."""
    cfg_cls, model_cls = _classes(name, where)
    here = f"{where}: component {name!r}"
    if not isinstance(cfg, cfg_cls):
        raise BundleError(f"{here}: config is a {type(cfg).__name__}, expected {cfg_cls.__name__}")
    if not isinstance(model, model_cls):
        raise BundleError(f"{here}: model is a {type(model).__name__}, expected {model_cls.__name__}")
    dtype = _float_dtype(model) or torch.float32
    dtype_name = str(dtype).removeprefix("torch.")
    if dtype_name not in _FLOAT_DTYPES:
        raise BundleError(f"{here}: unsupported model dtype {dtype}")
    tensors, aliases = files.plain_tensors(model.state_dict(), here)
    expected, _ = _expected(cfg, model_cls, dtype_name, here)
    found = {k: (tuple(t.shape), files.dtype_code(t.dtype, here, k)) for k, t in tensors.items()}
    files.check_tensors(f"{here} does not match its config", found, expected, aliases)
    path = folder / f"{name}{files.TENSOR_SUFFIX}"
    save_file(tensors, str(path), metadata={"format": "pt"})
    with open(path, "r+b") as f:
        os.fsync(f.fileno())
    return {"class": model_cls.__name__, "config": cfg.to_dict(), "file": path.name,
            "sha256": files.sha256_file(path, str(path)), "size": path.stat().st_size,
            "n_params": sum(p.numel() for p in model.parameters()), "dtype": dtype_name, "aliases": aliases}


def _check_replaceable(target: Path) -> None:
    """Only an empty folder or an existing bundle may be replaced."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise fail(str(target), "exists and is not a bundle folder; refusing to replace it")
    if not target.exists() or not any(target.iterdir()):
        return
    try:  # any version of the format may be replaced
        manifest = files.parse_json((target / MANIFEST_NAME).read_bytes())
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise fail(str(target), "exists and is not a bundle; refusing to replace it")


# --------------------------------------------------------------------------------------------- display


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10_000 else str(n)


def _fmt_bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _short(value: Any, limit: int = 72) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
