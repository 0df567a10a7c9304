"""Checkpoint bundles: round trip, content hash, atomic save, and refusal of hostile bundles.

The tests register two small dummy components in `melody_core.config.COMPONENTS` (the real models
are exercised by the lead's integration test): `toy` has a tied embedding/head, an integer buffer
and a non-persistent buffer; `toyconv` has a float64 buffer next to float32 weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from melody_core import config as mcfg
from melody_core.checkpoint import (
    HASH_KEY,
    BundleError,
    canonical_json,
    describe_bundle,
    inspect_bundle,
    load_bundle,
    random_bundle,
    save_bundle,
)
from melody_core.config import BaseConfig

BUILT_ON: list[str] = []  # device type of every ToyModel constructed (to see that inspect stays on meta)


@dataclass
class ToyConfig(BaseConfig):
    """Dummy component config."""

    dim: int = 8  # width
    vocab: int = 16  # embedding rows (tied with the output head)
    depth: int = 2  # hidden linear layers

    @classmethod
    def paper(cls) -> ToyConfig:
        return cls(dim=32, vocab=64, depth=3)


class ToyModel(nn.Module):
    """tokens (B, T) int64 -> logits (B, T, vocab)."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(config.vocab, config.dim)
        self.layers = nn.ModuleList(nn.Linear(config.dim, config.dim) for _ in range(config.depth))
        self.head = nn.Linear(config.dim, config.vocab, bias=False)
        self.head.weight = self.embed.weight  # tied: one tensor under two state_dict names
        self.register_buffer("usage", torch.zeros(config.vocab, dtype=torch.int64))
        self.register_buffer("scale", torch.arange(config.dim, dtype=torch.float32) / config.dim,
                             persistent=False)
        BUILT_ON.append(self.embed.weight.device.type)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) * (1 + self.scale)
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return self.head(x)


@dataclass
class ToyConvConfig(BaseConfig):
    """Second dummy component config."""

    channels: int = 4  # conv channels
    kernel: int = 3  # conv kernel size


class ToyConv(nn.Module):
    """x (B, channels, T) -> (B, channels, T)."""

    def __init__(self, config: ToyConvConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(config.channels, config.channels, config.kernel, padding=config.kernel // 2)
        self.register_buffer("calib", torch.ones(config.channels, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.calib.to(x.dtype)[:, None]


class Evil:
    """A pickle payload: unpickling it creates `marker` (it must never run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(autouse=True)
def toys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(mcfg.COMPONENTS, "toy", (__name__, "ToyConfig", "ToyModel"))
    monkeypatch.setitem(mcfg.COMPONENTS, "toyconv", (__name__, "ToyConvConfig", "ToyConv"))
    monkeypatch.setattr(mcfg, "PIPELINE_COMPONENTS", ("toy", "toyconv"))
    BUILT_ON.clear()


@pytest.fixture
def no_unpickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    for mod, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(mod, name, boom)


def make_models(seed: int = 1) -> tuple[dict[str, nn.Module], dict[str, BaseConfig]]:
    torch.manual_seed(seed)
    configs = {"toy": ToyConfig(), "toyconv": ToyConvConfig(channels=3)}
    models = {"toy": ToyModel(configs["toy"]), "toyconv": ToyConv(configs["toyconv"])}
    models["toy"].usage.copy_(torch.arange(16) * 7)  # non-default buffer values must survive
    models["toyconv"].calib.mul_(1 / 3)  # float64 buffer, not representable in float32
    return models, configs


def saved(tmp_path: Path, **kwargs) -> Path:
    models, configs = make_models()
    save_bundle(tmp_path / "b", models, configs, meta={"steps": 12, "wall_s": 3.5}, **kwargs)
    return tmp_path / "b"


def reseal(folder: Path) -> None:
    """Recompute sizes, file hashes and the content hash, as an attacker who rewrites config.json would."""
    manifest = json.loads((folder / "config.json").read_text())
    for entry in manifest["components"].values():
        path = folder / entry["file"]
        if path.is_file():
            entry["size"] = path.stat().st_size
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest.pop(HASH_KEY)
    manifest[HASH_KEY] = hashlib.sha256(canonical_json(manifest)).hexdigest()
    (folder / "config.json").write_text(json.dumps(manifest, indent=1))


def edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "config.json").read_text())
    edit(manifest)
    (folder / "config.json").write_text(json.dumps(manifest))
    reseal(folder)


def assert_refused(folder: Path, *fragments: str) -> str:
    """Both inspect and load refuse with a one-line BundleError containing every fragment."""
    messages = []
    for call in (lambda: inspect_bundle(folder), lambda: load_bundle(folder)):
        with pytest.raises(BundleError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg, msg
        for fragment in fragments:
            assert fragment in msg, msg
        messages.append(msg)
    return messages[-1]


# ------------------------------------------------------------------------------------------ round trip


def test_round_trip_is_bit_exact_and_hash_matches(tmp_path: Path) -> None:
    models, configs = make_models()
    info = save_bundle(tmp_path / "b", models, configs, meta={"steps": 12, "data": "chorales"})
    rng = torch.get_rng_state()
    bundle = load_bundle(tmp_path / "b" / "config.json")  # the config.json path works too
    assert torch.equal(rng, torch.get_rng_state()), "loading must not consume the global RNG"
    recorded = json.loads((tmp_path / "b" / "config.json").read_text())[HASH_KEY]
    assert bundle.model_hash == info.model_hash == recorded
    assert bundle.hash == info.hash == info.model_hash[:12] and info.verified and bundle.info.verified
    assert bundle.meta == {"steps": 12, "data": "chorales"} and bundle.configs == configs
    for name, model in models.items():
        loaded = bundle[name]
        assert type(loaded) is type(model) and not loaded.training
        want, got = model.state_dict(), loaded.state_dict()
        assert want.keys() == got.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            assert torch.equal(got[key], want[key]), key
    assert bundle["toy"].head.weight is bundle["toy"].embed.weight  # still tied after loading
    assert bundle["toyconv"].calib.dtype == torch.float64
    tokens = torch.randint(0, 16, (2, 5))
    models["toy"].eval()
    assert torch.equal(models["toy"](tokens), bundle["toy"](tokens))


def test_tied_weight_stored_once(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    manifest = json.loads((folder / "config.json").read_text())
    assert manifest["components"]["toy"]["aliases"] == {"head.weight": "embed.weight"}
    n_params = sum(p.numel() for p in ToyModel(ToyConfig()).parameters())
    assert manifest["components"]["toy"]["n_params"] == n_params


def test_half_precision_bundle_keeps_dtype(tmp_path: Path) -> None:
    models, configs = make_models()
    models["toyconv"] = models["toyconv"].to(torch.bfloat16)
    save_bundle(tmp_path / "b", models, configs)
    bundle = load_bundle(tmp_path / "b", components=["toyconv"])
    assert list(bundle.models) == ["toyconv"] and bundle.info.components["toyconv"].dtype == "bfloat16"
    for key, value in models["toyconv"].state_dict().items():
        got = bundle["toyconv"].state_dict()[key]
        assert got.dtype == value.dtype == torch.bfloat16 and torch.equal(got, value)


def test_content_hash_definition_and_determinism(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    manifest = json.loads((folder / "config.json").read_text())
    recorded = manifest.pop(HASH_KEY)
    spelled_out = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert recorded == hashlib.sha256(spelled_out).hexdigest()
    for entry in manifest["components"].values():
        assert entry["sha256"] == hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest()
    models, configs = make_models()
    again = save_bundle(tmp_path / "again", models, configs, meta={"steps": 12, "wall_s": 3.5})
    assert again.model_hash == recorded  # same weights, configs and meta -> same hash
    other = save_bundle(tmp_path / "other", models, configs, meta={"steps": 13, "wall_s": 3.5})
    assert other.model_hash != recorded
    with torch.no_grad():
        models["toyconv"].conv.bias[0] += 1e-3
    changed = save_bundle(tmp_path / "w", models, configs, meta={"steps": 12, "wall_s": 3.5})
    assert changed.model_hash != recorded


def test_inspect_builds_only_on_meta_and_describes(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    BUILT_ON.clear()
    info = inspect_bundle(folder)
    assert BUILT_ON and set(BUILT_ON) == {"meta"}
    assert not info.verified and inspect_bundle(folder, verify_hash=True).verified
    assert info.preset == "custom" and info.components["toyconv"].preset == "custom"  # channels=3 != tiny
    assert info.components["toy"].preset == "tiny"
    assert info.components["toy"].class_name == "ToyModel" and info.meta["steps"] == 12
    text = describe_bundle(info)
    fragments = ("ToyModel", "ToyConv", "toy.safetensors", info.hash, "steps: 12", "wall_s: 3.5", "float32")
    for fragment in fragments:
        assert fragment in text, text
    assert json.loads(json.dumps(info.to_dict()))["hash"] == info.model_hash


def test_random_bundle_presets_overrides_and_seeds(tmp_path: Path) -> None:
    rng = torch.get_rng_state()
    a = random_bundle(tmp_path / "a", seed=3)
    assert torch.equal(rng, torch.get_rng_state())
    assert set(a.components) == {"toy", "toyconv"} and a.preset == "tiny" and a.meta["random_init"]
    assert random_bundle(tmp_path / "a2", seed=3).model_hash == a.model_hash
    assert random_bundle(tmp_path / "c", seed=4).model_hash != a.model_hash
    small = random_bundle(tmp_path / "s", components=["toy"], overrides={"toy": {"dim": 4}})
    assert small.preset == "custom" and small.components["toy"].config.dim == 4
    assert load_bundle(tmp_path / "s")["toy"].embed.weight.shape == (16, 4)
    paper = random_bundle(tmp_path / "p", preset="paper", components=["toy"])
    assert paper.preset == "paper" and paper.components["toy"].config == ToyConfig.paper()
    with pytest.raises(BundleError, match="unknown field"):
        random_bundle(tmp_path / "x", components=["toy"], overrides={"toy": {"width": 4}})
    with pytest.raises(BundleError, match="not being built"):
        random_bundle(tmp_path / "x", components=["toy"], overrides={"toyconv": {}})
    with pytest.raises(BundleError, match="unknown component"):
        random_bundle(tmp_path / "x", components=["nope"])


# ------------------------------------------------------------------------------------------ saving


def test_save_replaces_existing_bundle_atomically(tmp_path: Path) -> None:
    first = saved(tmp_path)
    old_hash = inspect_bundle(first).model_hash
    models, configs = make_models(seed=2)
    new = save_bundle(first, models, configs)
    assert new.model_hash != old_hash and inspect_bundle(first, verify_hash=True).model_hash == new.model_hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temp or old folders left behind
    # a failing save leaves the existing bundle untouched and no temp folder
    bad = ToyModel(ToyConfig(dim=4))
    with pytest.raises(BundleError, match="does not match its config"):
        save_bundle(first, {"toy": bad}, {"toy": ToyConfig()})
    assert inspect_bundle(first, verify_hash=True).model_hash == new.model_hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_save_refuses_to_replace_non_bundles_and_bad_inputs(tmp_path: Path) -> None:
    models, configs = make_models()
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(BundleError, match="not a bundle"):
        save_bundle(precious, models, configs)
    assert (precious / "thesis.txt").read_text() == "do not delete"
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="not a bundle"):
        save_bundle(tmp_path / "file", models, configs)
    with pytest.raises(BundleError, match="same, non-empty set"):
        save_bundle(tmp_path / "b", models, {"toy": configs["toy"]})
    with pytest.raises(BundleError, match="expected ToyConfig"):
        save_bundle(tmp_path / "b", {"toy": models["toy"]}, {"toy": ToyConvConfig()})
    with pytest.raises(BundleError, match="unknown component"):
        save_bundle(tmp_path / "b", {"zzz": models["toy"]}, {"zzz": configs["toy"]})
    with pytest.raises(BundleError, match="plain JSON"):
        save_bundle(tmp_path / "b", models, configs, meta={"when": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "home"]


# ------------------------------------------------------------------------------------------ hostile


def test_pickle_payload_is_live(tmp_path: Path) -> None:
    """Sanity check of the hostile payload used below: unpickling it does create the marker."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Evil(marker)))  # our own payload, in a temp folder
    assert marker.exists()


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_renamed_safetensors_refused(tmp_path: Path, writer: str, no_unpickle: None) -> None:
    folder = saved(tmp_path)
    marker = tmp_path / "pwned"
    target = folder / "toy.safetensors"
    if writer == "pickle":
        target.write_bytes(pickle.dumps({"embed.weight": Evil(marker)}))
    else:
        torch.save({"embed.weight": Evil(marker)}, target)
    reseal(folder)
    assert_refused(folder, "toy.safetensors", "not a safetensors file")
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_pickle_checkpoint_reference_refused(tmp_path: Path, suffix: str, no_unpickle: None) -> None:
    folder = saved(tmp_path)
    marker = tmp_path / "pwned"
    (folder / f"toy{suffix}").write_bytes(pickle.dumps(Evil(marker)))
    edit_manifest(folder, lambda m: m["components"]["toy"].update(file=f"toy{suffix}"))
    assert_refused(folder, f"toy{suffix}", "pickle")
    assert not marker.exists()


def _header_file(path: Path, header: bytes, length: int | None = None, data: bytes = b"") -> None:
    path.write_bytes((len(header) if length is None else length).to_bytes(8, "little") + header + data)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"\x01\x02", "only 2 bytes"),
        ("short-header", "beyond file size"),
        ("huge-length", "exceeds"),
        ("not-json", "not valid JSON"),
        ("truncated-data", "truncated"),
        ("overlap", "overlaps"),
        ("trailing", "after the last tensor"),
    ],
)
def test_malformed_safetensors_refused(tmp_path: Path, content, fragment: str, no_unpickle: None) -> None:
    folder = saved(tmp_path)
    target = folder / "toy.safetensors"
    if isinstance(content, bytes):
        target.write_bytes(content)
    elif content == "short-header":
        _header_file(target, b'{"a": {"dtype": "F32"', length=100)
    elif content == "huge-length":
        _header_file(target, b"{}", length=2**63)
    elif content == "not-json":
        _header_file(target, b"\x80\x04\x95 not json at all")
    elif content == "truncated-data":
        target.write_bytes(target.read_bytes()[:-10])
    elif content == "overlap":
        spec = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
        _header_file(target, json.dumps({"embed.weight": spec, "x": spec}).encode(), data=bytes(8))
    elif content == "trailing":
        target.write_bytes(target.read_bytes() + b"\0" * 16)
    reseal(folder)
    assert_refused(folder, "toy.safetensors", fragment)


def _rewrite_toy(folder: Path, edit) -> None:
    """Rewrite toy.safetensors as a valid safetensors file with edited tensors, then reseal."""
    models, _ = make_models()
    state = {k: v.clone() for k, v in models["toy"].state_dict().items() if k != "head.weight"}
    edit(state)
    save_file(state, str(folder / "toy.safetensors"))
    reseal(folder)


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda s: s.update({"layers.0.weight": torch.zeros(8, 9)}), ("'layers.0.weight'", "shape [8, 9]")),
        (lambda s: s.pop("layers.1.bias"), ("missing tensor", "'layers.1.bias'")),
        (lambda s: s.update({"backdoor": torch.zeros(1)}), ("unexpected tensor", "'backdoor'")),
        (lambda s: s.update({"layers.0.bias": s["layers.0.bias"].double()}), ("dtype F64", "expected F32")),
        (lambda s: s.update({"usage": s["usage"].int()}), ("'usage'", "dtype I32")),
    ],
)
def test_wrong_tensors_refused(tmp_path: Path, edit, fragments, no_unpickle: None) -> None:
    folder = saved(tmp_path)
    _rewrite_toy(folder, edit)
    assert_refused(folder, "toy.safetensors", *fragments)


def test_alias_cannot_hide_tensors(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    edit_manifest(folder, lambda m: m["components"]["toy"]["aliases"].update({"layers.0.weight": "nope"}))
    assert_refused(folder, "invalid alias")


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda m: m["components"].update(evil=m["components"]["toy"]), ("unknown component 'evil'",)),
        (lambda m: m["components"]["toy"]["config"].update(width=3), ("unknown field", "width")),
        (lambda m: m["components"]["toy"]["config"].update(dim="8"), ("expected an integer",)),
        (lambda m: m["components"]["toy"]["config"].update(dim=4), ("toy.safetensors", "shape [16, 8]")),
        (lambda m: m["components"]["toy"].update(n_params=1), ("n_params",)),
        (lambda m: m["components"]["toy"].update(dtype="int8"), ("unsupported dtype",)),
        (lambda m: m["components"]["toy"].update(extra=1), ("unknown key", "extra")),
        (lambda m: m.update(format_version=2), ("unsupported format_version 2",)),
        (lambda m: m.update(format="zip"), ("not a MeLoDy bundle",)),
        (lambda m: m.pop("meta"), ("missing key", "meta")),
    ],
)
def test_bad_manifest_refused(tmp_path: Path, edit, fragments, no_unpickle: None) -> None:
    folder = saved(tmp_path)
    edit_manifest(folder, edit)
    assert_refused(folder, *(fragments if "toy.safetensors" in fragments[0] else ("config.json", *fragments)))


@pytest.mark.parametrize(
    "text", ["{not json", '{"format": "melody-bundle", "format": "x"}', "[1, 2]", '{"a": NaN}', ""]
)
def test_manifest_not_json_refused(tmp_path: Path, text: str) -> None:
    folder = saved(tmp_path)
    (folder / "config.json").write_text(text)
    assert_refused(folder, "config.json")


def test_missing_bundle_refused(tmp_path: Path) -> None:
    assert_refused(tmp_path / "nowhere", "no such bundle")
    (tmp_path / "empty").mkdir()
    assert_refused(tmp_path / "empty", "config.json")


def test_flipped_tensor_byte_fails_hash(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    target = folder / "toyconv.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01  # last byte of tensor data
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="toyconv.safetensors: sha256 mismatch"):
        load_bundle(folder)
    with pytest.raises(BundleError, match="sha256 mismatch"):
        inspect_bundle(folder, verify_hash=True)
    inspect_bundle(folder)  # structure is still fine: the fast check passes
    bundle = load_bundle(folder, verify_hash=False)  # opting out loads the changed weights
    assert not bundle.info.verified


def test_edited_manifest_fails_content_hash(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    manifest = json.loads((folder / "config.json").read_text())
    manifest["meta"]["steps"] = 10_000
    (folder / "config.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="config.json: content hash mismatch"):
        load_bundle(folder)
    assert load_bundle(folder, verify_hash=False).meta["steps"] == 10_000


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("../outside.safetensors", "refused"),
        ("..\\outside.safetensors", "refused"),
        ("sub/../../outside.safetensors", "refused"),
        ("/tmp/outside.safetensors", "absolute path"),
        ("C:\\outside.safetensors", "absolute path"),
        ("toy.npz", "not a .safetensors file"),
    ],
)
def test_path_traversal_refused(tmp_path: Path, name: str, fragment: str) -> None:
    folder = saved(tmp_path)
    shutil.copy(folder / "toy.safetensors", tmp_path / "outside.safetensors")  # a valid file outside
    edit_manifest(folder, lambda m: m["components"]["toy"].update(file=name))
    assert_refused(folder, fragment)


def test_symlink_outside_refused(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / "toy.safetensors", outside)
    os.symlink(outside, folder / "toy.safetensors")
    assert_refused(folder, "toy.safetensors", "outside the bundle folder")
    # a symlink that stays inside the folder is fine
    (folder / "toy.safetensors").unlink()
    shutil.move(outside, folder / "real.safetensors")
    os.symlink("real.safetensors", folder / "toy.safetensors")
    assert load_bundle(folder).model_hash == inspect_bundle(folder).model_hash


def test_load_unknown_component_request(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    with pytest.raises(BundleError, match="no component"):
        load_bundle(folder, components=["vae"])
