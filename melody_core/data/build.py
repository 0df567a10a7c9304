"""`melody data build`: plan the jobs, run them on up to 2 worker processes, write the corpus.

Output (see `corpus.py`): clips/, captions.jsonl, manifest.json in `settings.out`, by default
`platformdirs.user_cache_dir("melody-studio")/corpus` (`corpus-quick` for --quick), never the repo.

Determinism: the work order, every variation and every caption are functions of the seed only;
results are consumed in job order, so the `--hours` cap keeps the same prefix of the order on every
run. *(our choice)* The cap applies to the rendered music21 source; recorded folders and Debian
music the user asked for are always included whole.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from melody_core.data.catalog import COLLECTIONS, MUSIC21_NOTE, WorkRef, all_works, order_works
from melody_core.data.clips import ClipSpec
from melody_core.data.corpus import CorpusError, read_corpus, write_records
from melody_core.data.jobs import TMP_DIR, JobResult, RecordedJob, SymbolicJob, run_job
from melody_core.data.render import Renderer, find_soundfont, fluidsynth_version

MANIFEST = "manifest.json"
CAPTIONS = "captions.jsonl"
BUILDER = "melody data build"
FORMAT_VERSION = 1
MAX_WORKERS = 2
QUICK_WORKS = 16  # works in a --quick build
QUICK_COLLECTIONS = ("bach", "oneills1850", "ryansMammoth", "airdsAirs", "monteverdi", "josquin")
MAX_SKIPPED_LISTED = 200  # skipped items written to the manifest (the rest are counted)
SECONDS_PER_HOUR = 3600.0

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A build that cannot start or produced nothing (one-line message)."""


def default_out(quick: bool = False) -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("melody-studio")) / ("corpus-quick" if quick else "corpus")


@dataclass
class BuildSettings:
    """Everything a build depends on (stored in the manifest)."""

    out: str = ""  # corpus folder ("" = default_out(quick))
    seed: int = 0  # seed of every choice (work order, variations, captions)
    quick: bool = False  # small corpus: QUICK_WORKS short works, 1 variation, short excerpts
    hours: float | None = None  # cap on the rendered hours (None = all allowed works)
    symbolic: bool = True  # render the music21 corpus
    variations: int = 2  # renderings per work
    max_seconds: float = 150.0  # longest excerpt rendered per variation
    clip_seconds: float = 20.0  # target clip length
    min_clip_seconds: float = 10.0  # shorter renders / files give no clip
    num_captions: int = 4  # captions per rendered clip
    workers: int = MAX_WORKERS  # worker processes (at most MAX_WORKERS; 1 = in this process)
    max_works: int | None = None  # limit on the number of works (None = all)
    soundfont: str = ""  # "" = first of render.SOUNDFONT_CANDIDATES found
    fluidsynth: str = "fluidsynth"  # renderer binary
    recorded: list[tuple[str, str]] = field(default_factory=list)  # (folder, licence) pairs
    debian_packages: list[str] = field(default_factory=list)  # Debian music packages to extract

    @classmethod
    def quick_preset(cls, **overrides) -> BuildSettings:
        base = dict(quick=True, variations=1, max_seconds=36.0, clip_seconds=12.0, max_works=QUICK_WORKS)
        return cls(**{**base, **overrides})


def _check_out(out: Path) -> None:
    """Refuse to write into a non-empty folder that is not a corpus this builder made."""
    if not out.exists():
        return
    if not out.is_dir():
        raise BuildError(f"{out}: exists and is not a folder")
    if not any(out.iterdir()):
        return
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        manifest = {}
    if manifest.get("builder") != BUILDER:
        raise BuildError(f"{out}: folder is not empty and not a corpus built by melody; choose another --out")


def _clear(out: Path) -> None:
    for name in ("clips", TMP_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (CAPTIONS, MANIFEST):
        (out / name).unlink(missing_ok=True)


def _renderer(settings: BuildSettings) -> Renderer:
    if shutil.which(settings.fluidsynth) is None:
        raise BuildError(f"{settings.fluidsynth}: not found; install FluidSynth (apt install fluidsynth)")
    soundfont = settings.soundfont or find_soundfont()
    if not soundfont or not os.path.isfile(soundfont):
        raise BuildError(
            f"{soundfont or 'soundfont'}: not found; install a General MIDI soundfont "
            "(apt install fluid-soundfont-gm)"
        )
    return Renderer(binary=settings.fluidsynth, soundfont=soundfont)


def plan_works(settings: BuildSettings, works: list[WorkRef] | None = None) -> list[WorkRef]:
    """The ordered works of a build (all allowed works, or `works` as given)."""
    if works is None:
        works = all_works()
        if settings.quick:
            works = [w for w in works if w.collection in QUICK_COLLECTIONS]
        works = order_works(works, settings.seed)
    return works[: settings.max_works] if settings.max_works is not None else works


def _recorded_jobs(
    folder: str, license_text: str, source: str, out: Path, spec: ClipSpec
) -> list[RecordedJob]:
    try:
        records = read_corpus(folder)
    except CorpusError as exc:
        raise BuildError(str(exc)) from None
    root = Path(folder).resolve()
    return [
        RecordedJob(
            file=str(root / r.path), file_id=r.path, source=source, license=license_text, out=str(out),
            spec=spec, captions=tuple(r.captions),
        )
        for r in sorted(records, key=lambda r: r.path)
    ]  # fmt: skip


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _results(jobs: list, workers: int) -> Iterator[JobResult]:
    """Job results in job order (a pool of `workers` processes, or inline for 1)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and not os.path.exists(main_file):  # e.g. `python - <script`: spawn cannot re-import it
        workers = 1
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield run_job(job)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, MAX_WORKERS), initializer=_init_worker) as pool:
        yield from pool.imap(run_job, jobs, chunksize=1)


@dataclass
class _Tally:
    records: list = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    works: dict[str, set] = field(default_factory=dict)  # source -> work / file ids with clips


def _collect(jobs: list, settings: BuildSettings, cap_s: float | None, tally: _Tally, log: Log) -> None:
    every = 1 if len(jobs) <= 100 else 25
    results = _results(jobs, settings.workers)
    try:
        _consume(results, len(jobs), every, cap_s, settings, tally, log)
    finally:
        results.close()  # terminates the pool when the cap stopped the build early


def _consume(
    results, n_jobs: int, every: int, cap_s, settings: BuildSettings, tally: _Tally, log: Log
) -> None:
    total = 0.0
    start = time.monotonic()
    for i, res in enumerate(results, 1):
        for msg in res.skipped:
            log(f"  skipped {msg}")
        tally.skipped += res.skipped
        for rec in res.records:
            if cap_s is not None and total + rec.seconds > cap_s:
                log(f"reached the cap of {settings.hours:g} h after {i} of {n_jobs} jobs")
                return
            tally.records.append(rec)
            tally.works.setdefault(rec.source, set()).add(res.key)
            total += rec.seconds
        if i % every == 0 or i == n_jobs:
            elapsed = time.monotonic() - start
            eta = f", ~{elapsed / i * (n_jobs - i) / 60:.0f} min left" if i < n_jobs else ""
            log(f"[{i}/{n_jobs}] {res.key}: {len(res.records)} clips; total {total / 60:.1f} min of audio, "
                f"{elapsed:.0f} s{eta}")  # fmt: skip


def _remove_strays(out: Path, keep: set[str]) -> None:
    """Delete clip files not in the final index (jobs past the cap, interrupted writes)."""
    clips = out / "clips"
    if clips.is_dir():
        for p in clips.rglob("*"):
            if p.is_file() and p.relative_to(out).as_posix() not in keep:
                p.unlink()
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)


def _versions(renderer: Renderer | None) -> dict:
    import melody_core

    v = {"python": platform.python_version(), "melody_core": getattr(melody_core, "__version__", "")}
    try:
        import music21

        v["music21"] = music21.__version__
    except ImportError:
        pass
    if renderer is not None:
        sf = Path(renderer.soundfont)
        v["fluidsynth"] = fluidsynth_version(renderer.binary)
        v["soundfont"] = {"path": str(sf), "name": sf.resolve().name, "bytes": sf.stat().st_size}
    return v


def _group(rec) -> str:
    """The unit a split is decided for: a work (all its renders) or a recorded file."""
    return rec.attributes.get("work") or f"{rec.source}/{rec.attributes.get('file', rec.id)}"


def _ensure_valid(records: list) -> None:
    """A small corpus may draw no validation work by hash: then the group with the smallest hash
    becomes the validation set (deterministic, and only when there are at least two groups)."""
    if any(r.split == "valid" for r in records):
        return
    groups = sorted({_group(r) for r in records}, key=lambda g: hashlib.sha256(g.encode("utf-8")).hexdigest())
    if len(groups) < 2:
        return
    for r in records:
        if _group(r) == groups[0]:
            r.split = "valid"


def _seconds(records: list) -> float:
    return sum(r.seconds for r in records)


def _manifest(
    settings: BuildSettings, tally: _Tally, licences: dict, notes: dict, renderer, wall: float
) -> dict:
    sources: dict[str, dict] = {}
    for rec in tally.records:
        s = sources.setdefault(rec.source, {"clips": 0, "seconds": 0.0, "license": rec.license})
        s["clips"] += 1
        s["seconds"] += rec.seconds
    for name, s in sources.items():
        s["hours"] = round(s.pop("seconds") / SECONDS_PER_HOUR, 4)
        s["items"] = len(tally.works.get(name, ()))
        s["license"] = licences.get(name, s["license"])
        s["notes"] = notes.get(name, "")
    splits = {"train": 0, "valid": 0}
    for rec in tally.records:
        splits[rec.split] = splits.get(rec.split, 0) + 1
    return {
        "builder": BUILDER,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": settings.seed,
        "settings": asdict(settings),
        "versions": _versions(renderer),
        "totals": {"clips": len(tally.records), "hours": round(_seconds(tally.records) / SECONDS_PER_HOUR, 3),
                   "splits": splits, "skipped": len(tally.skipped), "wall_seconds": round(wall, 1)},
        "sources": dict(sorted(sources.items())),
        "excluded_collections": {c.name: c.excluded for c in COLLECTIONS if c.excluded},
        "skipped": tally.skipped[:MAX_SKIPPED_LISTED],
    }  # fmt: skip


def build_corpus(settings: BuildSettings, log: Log = print, works: list[WorkRef] | None = None) -> dict:
    """Build the corpus; returns the manifest. `works` overrides the planned work list (tests)."""
    start = time.monotonic()
    out = Path(settings.out or default_out(settings.quick)).expanduser().resolve()
    settings.out = str(out)
    if settings.hours is not None and settings.hours <= 0:
        raise BuildError("--hours must be positive")
    for folder, _ in settings.recorded:
        if not Path(folder).is_dir():
            raise BuildError(f"{folder}: not a folder")
    renderer = _renderer(settings) if settings.symbolic else None
    _check_out(out)
    _clear(out)
    (out / TMP_DIR).mkdir(parents=True, exist_ok=True)
    spec = ClipSpec(target_s=settings.clip_seconds, min_s=settings.min_clip_seconds)
    tally, licences = _Tally(), {}
    notes = {c.source: f"{c.style} ({c.era}, {c.composer}); {MUSIC21_NOTE}" for c in COLLECTIONS}
    if renderer is not None:
        planned = plan_works(settings, works)
        log(f"rendering {len(planned)} works x {settings.variations} variation(s) into {out}")
        sym_jobs = [
            SymbolicJob(w, settings.variations, str(out), settings.seed, settings.max_seconds, spec, renderer,
                        settings.num_captions)
            for w in planned
        ]  # fmt: skip
        cap = settings.hours * SECONDS_PER_HOUR if settings.hours is not None else None
        _collect(sym_jobs, settings, cap, tally, log)
    rec_jobs: list[RecordedJob] = []
    for folder, licence in settings.recorded:
        source = f"recorded:{Path(folder).resolve().name}"
        licences[source], notes[source] = licence, f"audio folder {Path(folder).resolve()}"
        rec_jobs += _recorded_jobs(folder, licence, source, out, spec)
    if settings.debian_packages:
        from melody_core.data.debian import debian_jobs

        deb_jobs, deb_licences, deb_notes = debian_jobs(settings.debian_packages, out, spec, log)
        rec_jobs += deb_jobs
        licences.update(deb_licences)
        notes.update(deb_notes)
    if rec_jobs:
        log(f"cutting {len(rec_jobs)} recorded files")
        _collect(rec_jobs, settings, None, tally, log)
    _remove_strays(out, {r.path for r in tally.records})
    if not tally.records:
        raise BuildError("the build produced no clips (see the skipped items above)")
    tally.records.sort(key=lambda r: r.id)
    _ensure_valid(tally.records)
    write_records(out / CAPTIONS, tally.records)
    manifest = _manifest(settings, tally, licences, notes, renderer, time.monotonic() - start)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out / MANIFEST)
    return manifest
