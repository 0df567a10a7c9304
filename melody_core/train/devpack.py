"""Device packs: the compact carry of a DPD run for a few minutes of training on a lent GPU machine.

A device machine (one H100/H200, 16 cores, no network) receives the checkout plus what a call
carries, 64 MiB in all, and sends back at most 8 files of at most 16 MiB (64 MiB together) from
$OUT. With the checkout itself at ~38 MiB, a *pack* is the compact carry of one DPD run:

    pack.json             the home run's run.json, the pack's windows and sizes, the upstream models
    init.safetensors      the home run's latest DPD weights (bf16 by default: see `build_pack`)
    features.safetensors  training and validation windows: VAE latents quantised to uint8 per clip and
                          channel, delta-coded along time and LZMA-compressed; semantic tokens (LZMA)
    upstream/<name>/      slim copies (run.json + weights) of upstream runs outside the checkout
    wheels/               soundfile, soxr, cffi, pycparser: what melody_core's audio I/O imports and
                          the device image lacks (packaging/device_pack.sh downloads them)

`unpack_pack` rebuilds from it an ordinary corpus folder + feature cache + `--init-from` run folder,
so the device runs the unchanged `melody train dpd` (same loss, sampler, validation, latent scale
and checkpoint code as at home). The corpus holds silent stand-in FLAC files of each window's
length: the trainer reads only their headers, since every latent and token comes from the cache,
whose entries are written under the names `train.cache` gives them. Features encoded from the
stand-ins would be silence: unpacking refuses a checkout whose VAE/SSL/k-means differ from the pack's
(their hashes name the cache), and `devrun.train_on_device` stops a trainer that writes into the
cache. Training on the device, the weights coming back and going home: `train/devrun.py`, whose
command line builds packs too:

    python -m melody_core.train.devrun build RUN_DIR CORPUS PACK [--repo CHECKOUT] ...
"""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save, save_file

from melody_core import FRAMES_PER_TOKEN, LATENT_HOP, LATENT_RATE, SAMPLE_RATE
from melody_core.train.state import atomic_write, load_state, save_state, state_hash, write_json
from melody_core.train.upstream import CKPT_DIR, RUN_FILE, TrainError, is_bundle, is_run, read_run

PACK_FORMAT = "melody-device-pack"
PACK_VERSION = 1
MIB = 2**20
CARRY_LIMIT_MIB = 64.0  # the device call's limit on the checkout + carried paths
MARGIN_BYTES = MIB // 2  # kept free under the carry limit (files added to the checkout meanwhile)
LZMA_PRESET = 9
DPD_NEEDS = ("vae", "ssl", "kmeans")
STATE_FORMAT = "melody-train-state"  # = loop.STATE_FORMAT (not imported: loop pulls in tqdm/plots)


# ----------------------------------------------------------------------------------- sizes
def travel_bytes(repo: Path) -> int:
    """Bytes of what a device call sends besides the carry: tracked and untracked-not-ignored files."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-z", "-co", "--exclude-standard"],
            check=True, capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise TrainError(f"{repo}: not a git checkout ({exc})") from None
    total = 0
    for name in out.decode().split("\0"):
        p = Path(repo) / name
        if name and p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _git_ignored(repo: Path, path: Path) -> bool:
    r = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", str(path)], capture_output=True)
    return r.returncode == 0


# ------------------------------------------------------------------------- latent coding
def encode_latents(z: torch.Tensor) -> tuple[bytes, torch.Tensor]:
    """(L, D) float latents -> (LZMA bytes of the uint8 codes delta-coded along time, (2, D) lo/hi).

    Per clip and channel, [lo, hi] is cut into 255 steps: the rounding error is at most half a step,
    measured at 0.7-1.0 % of each channel's standard deviation on corpus v2 (40 clips)."""
    x = z.float().numpy()
    lo, hi = x.min(0), x.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.rint((x - lo) / span * 255).astype(np.uint8)  # (L, D)
    d = np.diff(q, axis=0, prepend=np.zeros((1, q.shape[1]), np.uint8))  # uint8 wrap-around deltas
    blob = lzma.compress(d.tobytes(), preset=LZMA_PRESET)
    return blob, torch.from_numpy(np.stack([lo, hi]).astype(np.float32))


def decode_latents(blob: bytes, bounds: torch.Tensor, frames: int) -> torch.Tensor:
    """Inverse of `encode_latents`: (frames, D) float32."""
    lo, hi = bounds[0].numpy(), bounds[1].numpy()
    d = np.frombuffer(lzma.decompress(blob), np.uint8).reshape(frames, -1)  # (L, D)
    q = np.cumsum(d, axis=0, dtype=np.uint8)  # undo the deltas (mod 256)
    span = np.where(hi > lo, hi - lo, 1.0)
    return torch.from_numpy((q.astype(np.float32) / 255 * span + lo).astype(np.float32))


def _token_dtype(vocab: int) -> torch.dtype:
    return torch.uint8 if vocab <= 256 else torch.int16


# ---------------------------------------------------------------------------------- build
def build_pack(
    run_dir: Path,
    corpus: Path,
    out: Path,
    repo: Path,
    *,
    window_seconds: float = 12.0,
    weights: str = "bf16",
    data_mib: float | None = None,
    limit_mib: float = CARRY_LIMIT_MIB,
    wheels: Path | None = None,
    cache_dir: Path | None = None,
    seed: int = 0,
    measure: bool = False,
    log=print,
) -> dict[str, Any]:
    """Write pack `out` from home run `run_dir` (a dpd run) and its corpus; returns pack.json.

    Windows: a seeded random order of the train clips, from each one random window of
    `window_seconds` (on the token grid; whole clips when shorter, clips shorter than the training
    crop skipped), until the data budget is spent: many short windows from many clips rather than
    few whole ones, for the variety of genres and instruments. The validation windows are the home
    run's own fixed validation crops (`data.fixed_items`), so the device's valid loss scores the
    same audio. Budget: `limit_mib` minus what the checkout sends, the weights, wheels, upstream
    copies and a margin (or `data_mib`, if smaller).

    Weights *(our choice)*: bf16 halves the 22.7 MB of DPD v2 and so doubles the audio that fits.
    Measured with `measure` (the DPD stage's validation on the pack's 16 validation crops, CPU, same
    noise) for DPD v2 at step 1265 on corpus v2: v-MSE 0.32657 with fp32 weights and float latents,
    0.32660 with bf16 weights, 0.32662 with bf16 weights and uint8 latents. The device trains fp32
    weights from them and returns fp32."""
    run_dir, corpus, out, repo = Path(run_dir), Path(corpus), Path(out), Path(repo).resolve()
    if weights not in ("bf16", "fp32"):
        raise TrainError(f"weights must be bf16 or fp32, got {weights!r}")
    run = read_run(run_dir)
    if run.get("stage") != "dpd":
        raise TrainError(f"{run_dir}: a {run.get('stage')!r} run; device packs are for dpd runs")
    if out.exists() and any(out.iterdir()):
        if not (out / "pack.json").is_file():
            raise TrainError(f"{out}: exists and is not a device pack; choose an empty folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _build(run, run_dir, corpus, out, repo, window_seconds, weights, data_mib, limit_mib, wheels,
                      cache_dir, seed, measure, log)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written pack
        raise


def _build(run, run_dir, corpus, out, repo, window_seconds, weights, data_mib, limit_mib, wheels, cache_dir,
           seed, measure, log) -> dict[str, Any]:
    from melody_core.config import component_classes
    from melody_core.train.cache import semantic_tokens, vae_latents
    from melody_core.train.data import ClipSet, fixed_items, load_clips
    from melody_core.train.dist import DistContext
    from melody_core.train.upstream import resolve_upstream

    ckpt = load_state(run_dir / CKPT_DIR / "last.pt")
    state = ckpt["models"]["dpd"]
    cfg_cls, model_cls = component_classes("dpd")
    cfg = cfg_cls.from_dict(run["config"])

    # upstream: paths inside the checkout travel with it; runs elsewhere are copied (weights only)
    entries, paths = [], []
    for raw in run["options"]["upstream"]:  # relative paths: to the checkout the run was started in
        p = Path(raw) if Path(raw).is_absolute() else repo / raw
        p = p.resolve()
        if p.is_relative_to(repo) and not _git_ignored(repo, p):
            entries.append({"checkout": str(p.relative_to(repo))})
        elif is_run(p):
            comp = read_run(p)["component"]
            if comp in DPD_NEEDS:
                _slim_run(p, out / "upstream" / comp)
                entries.append({"pack": f"upstream/{comp}"})
        elif is_bundle(p):
            raise TrainError(f"{p}: an upstream bundle outside the checkout does not travel; "
                             "use one inside it or export the runs you need")
        else:
            raise TrainError(f"{raw}: upstream of {run_dir} not found")
        paths.append(p)
    upstream = resolve_upstream(paths, DPD_NEEDS, torch.device("cpu"))
    for name, comp in upstream.items():
        want = run.get("upstream", {}).get(name, {}).get("hash")
        if want and want != comp.hash:
            raise TrainError(f"{comp.source}: not the {name} the run was trained on (hash {comp.hash[:12]} "
                             f"!= {want[:12]}); the latents/tokens would not match")

    # weights
    init = {k: (v.to(torch.bfloat16) if weights == "bf16" and v.is_floating_point() else v).contiguous()
            for k, v in state.items()}
    save_file(init, str(out / "init.safetensors"), metadata={"step": str(ckpt["step"]), "dtype": weights})
    if wheels is not None:
        (out / "wheels").mkdir()
        for w in sorted(Path(wheels).glob("*.whl")):
            shutil.copy2(w, out / "wheels" / w.name)

    travel = travel_bytes(repo)
    budget = int(limit_mib * MIB) - travel - folder_bytes(out) - MARGIN_BYTES - 64 * 1024  # 64 KiB: json
    if data_mib is not None:
        budget = min(budget, int(data_mib * MIB))
    if budget <= 0:
        raise TrainError(f"only {budget / MIB:.2f} MiB left for data under {limit_mib:g} MiB (checkout "
                         f"{travel / MIB:.1f} MiB, weights and wheels {folder_bytes(out) / MIB:.1f} MiB)")

    # features, from the home run's caches (built here if missing, as the trainer would)
    cache_dir = Path(cache_dir or run["options"].get("cache_dir") or run_dir.parent / ".melody-cache")
    dist = DistContext(device=torch.device("cpu"))
    train, valid = load_clips(corpus, "train"), load_clips(corpus, "valid")
    crop = cfg.train_length
    hyper = run["hyper"]
    tok_dtype = _token_dtype(cfg.vocab_size)

    def features(clips: ClipSet) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cpu = torch.device("cpu")
        (z,) = vae_latents(cache_dir, upstream["vae"], [clips], dist, cpu)
        (t,) = semantic_tokens(cache_dir, upstream["ssl"], upstream["kmeans"], [clips], dist, cpu)
        return z, t

    def usable(z: torch.Tensor, t: torch.Tensor) -> int:
        return min(len(z), FRAMES_PER_TOKEN * len(t))  # as DPDStage.setup

    windows: dict[str, list[dict[str, Any]]] = {"valid": [], "train": []}
    blobs: dict[str, list[tuple[bytes, torch.Tensor, torch.Tensor]]] = {"valid": [], "train": []}
    used = 0

    def add(split: str, rec, z: torch.Tensor, t: torch.Tensor, offset: int, frames: int) -> int:
        blob, bounds = encode_latents(z[offset : offset + frames])
        tok = t[offset // FRAMES_PER_TOKEN :][: frames // FRAMES_PER_TOKEN].to(tok_dtype)
        tblob = lzma.compress(tok.numpy().tobytes(), preset=LZMA_PRESET)
        blobs[split].append((blob, bounds, tblob))
        windows[split].append({"id": rec.id, "source": rec.source, "license": rec.license,
                               "offset": offset, "frames": frames})
        return len(blob) + len(tblob) + bounds.numel() * 4 + 4 * 8 + 200  # + index and pack.json entry

    vz, vt = features(valid)
    lengths = [usable(z, t) for z, t in zip(vz, vt)]
    count = hyper["valid_batches"] * hyper["batch_size"]
    seen = set()
    for it in fixed_items(lengths, crop, count, int(run["options"].get("seed", 0)), FRAMES_PER_TOKEN):
        if (it.clip, it.offset) not in seen:
            seen.add((it.clip, it.offset))
            used += add("valid", valid.records[it.clip], vz[it.clip], vt[it.clip], it.offset, crop)
    del vz, vt
    rng = np.random.default_rng(seed)
    want = max(crop, round(window_seconds * LATENT_RATE / FRAMES_PER_TOKEN) * FRAMES_PER_TOKEN)
    skipped = 0
    for i in rng.permutation(len(train)).tolist():
        sub = ClipSet(train.root, [train.records[i]], [train.lengths[i]])
        (z,), (t,) = features(sub)
        n = usable(z, t)
        if n < crop:
            skipped += 1
            continue
        frames = min(want, n // FRAMES_PER_TOKEN * FRAMES_PER_TOKEN)
        offset = int(rng.integers(0, (n - frames) // FRAMES_PER_TOKEN + 1)) * FRAMES_PER_TOKEN
        cost = add("train", train.records[i], z, t, offset, frames)
        if used + cost > budget:
            blobs["train"].pop()
            windows["train"].pop()
            break
        used += cost
    if not windows["train"]:
        raise TrainError(f"no training window fits the {budget / MIB:.2f} MiB data budget "
                         f"({used / MIB:.2f} MiB go to the {len(windows['valid'])} validation windows)")

    tensors: dict[str, torch.Tensor] = {}
    for split, items in blobs.items():
        lat = b"".join(b for b, _, _ in items)
        tok = b"".join(tb for _, _, tb in items)
        tensors[f"{split}.latents"] = torch.frombuffer(bytearray(lat), dtype=torch.uint8)
        tensors[f"{split}.latent_sizes"] = torch.tensor([len(b) for b, _, _ in items], dtype=torch.int64)
        tensors[f"{split}.bounds"] = torch.stack([bd for _, bd, _ in items])  # (n, 2, D)
        tensors[f"{split}.tokens"] = torch.frombuffer(bytearray(tok), dtype=torch.uint8)
        tensors[f"{split}.token_sizes"] = torch.tensor([len(tb) for _, _, tb in items], dtype=torch.int64)
    save_file(tensors, str(out / "features.safetensors"))

    train_s = sum(w["frames"] for w in windows["train"]) / LATENT_RATE
    meta = {
        "format": PACK_FORMAT,
        "version": PACK_VERSION,
        "home_run": str(run_dir.resolve()),
        "home_step": int(ckpt["step"]),
        "home_wall_s": float(ckpt.get("wall_s", 0.0)),
        "run": run,
        "weights": {"dtype": weights, "hash_fp32": state_hash(state)},
        "upstream": entries,
        "home_upstream": [str(p) for p in paths],
        "upstream_hashes": {n: c.hash for n, c in upstream.items()},
        "token_dtype": str(tok_dtype).removeprefix("torch."),
        "latent_dim": int(cfg.d_latent),
        "window_seconds": window_seconds,
        "seed": seed,
        "windows": windows,
        "train_seconds": round(train_s, 1),
        "train_clips_total": len(train),
        "train_clips_skipped_short": skipped,
        "corpus": str(corpus.resolve()),
    }
    write_json(out / "pack.json", meta)
    size = folder_bytes(out)
    meta_sizes = {"pack_bytes": size, "checkout_bytes": travel, "limit_bytes": int(limit_mib * MIB)}
    if travel + size > limit_mib * MIB:
        raise TrainError(f"{out}: {size / MIB:.2f} MiB + checkout {travel / MIB:.2f} MiB > {limit_mib:g} MiB")
    log(f"pack {out}: {len(windows['train'])} train windows of {len(train)} train clips ({train_s / 60:.1f} "
        f"min of audio, {train_s / 3600 / max(train.hours, 1e-9) * 100:.1f} % of the train hours), "
        f"{len(windows['valid'])} valid windows; weights {weights} (step {ckpt['step']})")
    feat, init_b = (out / "features.safetensors").stat().st_size, (out / "init.safetensors").stat().st_size
    log(f"sizes: pack {size / MIB:.2f} MiB (features {feat / MIB:.2f}, weights {init_b / MIB:.2f}) "
        f"+ checkout {travel / MIB:.2f} MiB "
        f"= {(size + travel) / MIB:.2f} MiB of {limit_mib:g}")
    if measure:
        _measure(out, state, cfg, model_cls, log)
    return {**meta, **meta_sizes}


def _slim_run(src: Path, dst: Path) -> None:
    """run.json + a weights-only last.pt of upstream run `src` (what `--upstream` reads)."""
    run = read_run(src)
    ckpt = load_state(src / CKPT_DIR / "last.pt")
    comp = run["component"]
    dst.mkdir(parents=True)
    shutil.copy2(src / RUN_FILE, dst / RUN_FILE)
    slim = {"format": STATE_FORMAT, "stage": run["stage"], "step": ckpt["step"],
            "wall_s": ckpt.get("wall_s", 0.0), "models": {comp: ckpt["models"][comp]},
            "export_meta": ckpt.get("export_meta", {})}
    save_state(dst / CKPT_DIR / "last.pt", slim)


def read_features(pack: Path, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(latents (L, D) float32, tokens (L / 10,) int64)] of a pack's split."""
    meta = json.loads((Path(pack) / "pack.json").read_text(encoding="utf-8"))
    f = load_file(str(Path(pack) / "features.safetensors"))
    lat, tok = f[f"{split}.latents"].numpy().tobytes(), f[f"{split}.tokens"].numpy().tobytes()
    dtype = getattr(np, meta["token_dtype"])
    out, a, b = [], 0, 0
    for k, w in enumerate(meta["windows"][split]):
        n, m = int(f[f"{split}.latent_sizes"][k]), int(f[f"{split}.token_sizes"][k])
        z = decode_latents(lat[a : a + n], f[f"{split}.bounds"][k], w["frames"])
        t = torch.from_numpy(np.frombuffer(lzma.decompress(tok[b : b + m]), dtype).astype(np.int64))
        out.append((z, t))
        a, b = a + n, b + m
    return out


def _measure(pack: Path, state: dict, cfg, model_cls, log) -> None:
    """Valid v-MSE (the DPD stage's own `validate`) of fp32 vs bf16 weights and float vs uint8 latents."""
    from types import SimpleNamespace

    from melody_core.train.data import fixed_items
    from melody_core.train.dpd import DPDStage
    from melody_core.train.state import seed_all

    meta = json.loads((pack / "pack.json").read_text(encoding="utf-8"))
    run = meta["run"]
    exact = _exact_valid(meta, run)
    quant = read_features(pack, "valid")
    model = model_cls(cfg)
    stage = DPDStage()
    stage.model, stage.chunks, stage.crop = model, cfg.train_chunks, cfg.train_length
    stage.latent_scale = float(run["export_meta"]["latent_scale"])
    stage.ctx = SimpleNamespace(device=torch.device("cpu"), hp=SimpleNamespace(batch_size=4))
    stage.valid_items = fixed_items([cfg.train_length] * len(quant), cfg.train_length, len(quant), 0)
    results = {}
    rounded = {k: v.to(torch.bfloat16).to(v.dtype) for k, v in state.items()}
    for wname, sd in (("fp32", state), ("bf16", rounded)):
        model.load_state_dict(sd)
        for fname, feats in (("float", exact), ("uint8", quant)):
            stage.valid_latents = [z for z, _ in feats]
            stage.valid_tokens = [t for _, t in feats]
            seed_all(0)
            results[(wname, fname)] = stage.validate()["loss"]
    log("valid v-MSE on the pack's valid windows (CPU, same noise): " + ", ".join(
        f"{w} weights + {f} latents {v:.5f}" for (w, f), v in results.items()))


def _exact_valid(meta: dict, run: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The float latents/tokens of the pack's valid windows, read from the home caches."""
    from melody_core.train.cache import semantic_tokens, vae_latents
    from melody_core.train.data import load_clips
    from melody_core.train.dist import DistContext
    from melody_core.train.upstream import resolve_upstream

    home = Path(meta["home_run"])
    cache_dir = Path(run["options"].get("cache_dir") or home.parent / ".melody-cache")
    valid = load_clips(meta["corpus"], "valid")
    up = resolve_upstream([Path(p) for p in meta["home_upstream"]], DPD_NEEDS, torch.device("cpu"))
    dist, cpu = DistContext(device=torch.device("cpu")), torch.device("cpu")
    (z,) = vae_latents(cache_dir, up["vae"], [valid], dist, cpu)
    (t,) = semantic_tokens(cache_dir, up["ssl"], up["kmeans"], [valid], dist, cpu)
    index = {r.id: i for i, r in enumerate(valid.records)}
    out = []
    for w in meta["windows"]["valid"]:
        i, o, n = index[w["id"]], w["offset"], w["frames"]
        out.append((z[i][o : o + n], t[i][o // FRAMES_PER_TOKEN :][: n // FRAMES_PER_TOKEN]))
    return out


# --------------------------------------------------------------------------------- unpack
def unpack_pack(pack: Path, work: Path, repo: Path, log=print) -> list[Path]:
    """Corpus (work/corpus), cache (work/cache) and init run (work/init) from `pack`; returns the
    `--upstream` paths. Refuses a checkout whose upstream models differ from the pack's."""
    import soundfile as sf

    from melody_core.data.corpus import ClipRecord
    from melody_core.train.cache import latents_cache, tokens_cache
    from melody_core.train.data import load_clips
    from melody_core.train.upstream import resolve_upstream

    pack, work, repo = Path(pack), Path(work), Path(repo)
    meta = json.loads((pack / "pack.json").read_text(encoding="utf-8"))
    if meta.get("format") != PACK_FORMAT:
        raise TrainError(f"{pack}: not a device pack")
    paths = [repo / e["checkout"] if "checkout" in e else pack / e["pack"] for e in meta["upstream"]]
    upstream = resolve_upstream(paths, DPD_NEEDS, torch.device("cpu"))
    for name, comp in upstream.items():
        if comp.hash != meta["upstream_hashes"][name]:
            raise TrainError(f"{comp.source}: the {name} differs from the one the pack was built with; "
                             "rebuild the pack from this checkout")
    if work.exists():
        shutil.rmtree(work)
    corpus = work / "corpus"
    (corpus / "clips").mkdir(parents=True)
    lines = []
    for split in ("train", "valid"):
        for k, w in enumerate(meta["windows"][split]):
            rel = f"clips/{split}-{k:05d}.flac"
            samples = w["frames"] * LATENT_HOP
            sf.write(corpus / rel, np.zeros(samples, np.int16), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
            rec = ClipRecord(id=f"{split}-{k:05d}:{w['id']}@{w['offset']}", path=rel,
                             seconds=samples / SAMPLE_RATE, source=w["source"], license=w["license"],
                             split=split)
            lines.append(rec.to_json())
    (corpus / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_json(corpus / "manifest.json", {"version": "device pack", "sources": {}, "note": (
        "silent stand-ins for the pack's windows: the features come from the cache")})
    caches = (latents_cache(work / "cache", upstream["vae"]),
              tokens_cache(work / "cache", upstream["ssl"], upstream["kmeans"]))
    for c in caches:
        c.folder.mkdir(parents=True)
        write_json(c.folder / "info.json", {"kind": c.kind, "key": c.key, "source": f"device pack {pack}"})
    for split in ("train", "valid"):
        clips = load_clips(corpus, split)
        for i, (z, t) in enumerate(read_features(pack, split)):
            for cache, key, x in ((caches[0], "latents", z), (caches[1], "tokens", t)):
                blob = save({key: x.contiguous()})
                atomic_write(cache.file(clips, i), lambda f, b=blob: f.write(b))
    _write_init(pack, meta, work / "init")
    secs = meta["train_seconds"]
    log(f"unpacked {pack}: {len(meta['windows']['train'])} train windows ({secs / 60:.1f} min of audio), "
        f"{len(meta['windows']['valid'])} valid; init = home step {meta['home_step']} "
        f"({meta['weights']['dtype']} weights)")
    return paths


def _write_init(pack: Path, meta: dict, dst: Path) -> None:
    """An `--init-from` run folder: the home run.json and its weights (fp32) at the home step."""
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in
               load_file(str(pack / "init.safetensors")).items()}
    run = meta["run"]
    dst.mkdir(parents=True)
    write_json(dst / RUN_FILE, run)
    save_state(dst / CKPT_DIR / "last.pt", {
        "format": STATE_FORMAT, "stage": "dpd", "step": meta["home_step"], "wall_s": meta["home_wall_s"],
        "models": {"dpd": weights}, "export_meta": run.get("export_meta", {})})
