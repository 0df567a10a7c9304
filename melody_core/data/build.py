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
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

from melody_core.data.arranger import ARRANGER_VERSION
from melody_core.data.catalog import COLLECTIONS, MUSIC21_NOTE, WorkRef, all_works, order_works
from melody_core.data.clips import ClipSpec
from melody_core.data.corpus import ClipRecord, CorpusError, read_corpus, write_records
from melody_core.data.jobs import (
    ARRANGER_SOURCE,
    TMP_DIR,
    ArrangementJob,
    JobResult,
    RecordedJob,
    SymbolicJob,
    run_job,
)
from melody_core.data.render import Renderer, find_soundfont, fluidsynth_version
from melody_core.data.soundfonts import SoundfontError, check_soundfont, installed_soundfonts, renderable

MANIFEST = "manifest.json"
CAPTIONS = "captions.jsonl"
BUILDER = "melody data build"
FORMAT_VERSION = 1
MAX_WORKERS = 2
QUICK_WORKS = 16  # works in a --quick build
QUICK_ARRANGEMENTS = 12  # arrangements in a --quick build
JOURNAL_DIR = ".build"  # resume state: settings fingerprint + one line per finished job
SNAPSHOT_EVERY = 50  # write captions.jsonl + a partial manifest every this many finished jobs
MAX_ARRANGEMENTS = 10_000_000
IN_FLIGHT_PER_WORKER = 2  # jobs submitted ahead per worker process
SCORE_ESTIMATE_S = 90.0  # expected seconds per score variation when interleaving the two sources
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
    soundfont: str = ""  # "" = scores: first of render.SOUNDFONT_CANDIDATES; arrangements: all installed
    arrangement_share: float = 0.8  # share of --hours given to arranged clips (the rest: scores)
    arrangements: int = 0  # arrangements rendered when hours is None (with hours: as many as the share needs)
    arrangement_seconds: float = 40.0  # length of one arrangement before it is cut into clips
    fluidsynth: str = "fluidsynth"  # renderer binary
    recorded: list[tuple[str, str]] = field(default_factory=list)  # (folder, licence) pairs
    debian_packages: list[str] = field(default_factory=list)  # Debian music packages to extract

    @classmethod
    def quick_preset(cls, **overrides) -> BuildSettings:
        base = dict(quick=True, variations=1, max_seconds=36.0, clip_seconds=12.0, max_works=QUICK_WORKS,
                    arrangements=QUICK_ARRANGEMENTS, arrangement_seconds=26.0)
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
    if manifest.get("builder") != BUILDER and not (out / JOURNAL_DIR / "fingerprint").is_file():
        raise BuildError(f"{out}: folder is not empty and not a corpus built by melody; choose another --out")


def _clear(out: Path) -> None:
    for name in ("clips", TMP_DIR, JOURNAL_DIR):
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


def _job_key(job) -> str:
    if isinstance(job, ArrangementJob):
        return f"arr:{job.index}"
    if isinstance(job, SymbolicJob):
        return f"score:{job.work.id}"
    return f"file:{job.source}/{job.file_id}"


def _results(
    jobs: Iterator, workers: int, done: dict[str, JobResult], run: Callable | None = None
) -> Iterator[tuple[str, JobResult, bool]]:
    """(key, result, fresh) in job order; jobs whose key is in `done` (the journal of an interrupted
    build) are not run again. Up to IN_FLIGHT_PER_WORKER jobs per worker are submitted ahead.
    A worker process that dies (renders run in it through libfluidsynth) is a BuildError, not a
    hang: the pool is a ProcessPoolExecutor, which notices dead workers. `run`: run_job (tests)."""
    run = run or run_job
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and not os.path.exists(main_file):  # e.g. `python - <script`: spawn cannot re-import it
        workers = 1
    if workers <= 1:
        for job in jobs:
            key = _job_key(job)
            yield (key, done[key], False) if key in done else (key, run(job), True)
        return
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(min(workers, MAX_WORKERS), mp_context=ctx, initializer=_init_worker)
    try:
        pending: deque = deque()
        it = iter(jobs)
        while True:
            while len(pending) < IN_FLIGHT_PER_WORKER * workers:
                job = next(it, None)
                if job is None:
                    break
                key = _job_key(job)
                pending.append((key, None if key in done else pool.submit(run, job)))
            if not pending:
                return
            key, handle = pending.popleft()
            if handle is None:
                yield key, done[key], False
                continue
            try:
                res = handle.result()
            except BrokenProcessPool:
                raise BuildError(f"a render worker died while running {key}; run the same command again "
                                 "to continue the build") from None  # fmt: skip
            yield key, res, True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # the running jobs finish; queued ones are dropped


@dataclass
class _Tally:
    records: list = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    works: dict[str, set] = field(default_factory=dict)  # source -> work / file ids with clips
    seconds: dict[str, float] = field(default_factory=dict)  # stream -> accepted seconds
    full: set = field(default_factory=set)  # streams that reached their cap
    jobs: int = 0  # results consumed
    resumed: int = 0  # results taken from the journal


def _stream(key: str) -> str:
    return key.split(":", 1)[0]


def _accept(key: str, res: JobResult, caps: dict[str, float | None], tally: _Tally, log: Log) -> None:
    """Take the records of one result in job order while its stream is under its cap."""
    stream = _stream(key)
    for msg in res.skipped:
        log(f"  skipped {msg}")
    tally.skipped += res.skipped
    for rec in res.records:
        cap = caps.get(stream)
        if stream in tally.full or (cap is not None and tally.seconds.get(stream, 0.0) + rec.seconds > cap):
            if stream not in tally.full:
                log(f"{stream}: reached its cap of {cap / SECONDS_PER_HOUR:g} h")
            tally.full.add(stream)
            return
        tally.records.append(rec)
        tally.works.setdefault(rec.source, set()).add(res.key)
        tally.seconds[stream] = tally.seconds.get(stream, 0.0) + rec.seconds


class _Journal:
    """Resume state of a build in out/JOURNAL_DIR: the settings fingerprint and one JSON line per
    finished job (its records and skipped lines). A build with the same fingerprint continues from
    it; clips of a job that never reached the journal are rendered again to the same paths."""

    def __init__(self, out: Path, fingerprint: str, log: Log):
        self.dir = out / JOURNAL_DIR
        self.path = self.dir / "journal.jsonl"
        self.done: dict[str, JobResult] = {}
        stamp = self.dir / "fingerprint"
        if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == fingerprint:
            self._load()
            if self.done:
                log(f"resuming: {len(self.done)} finished jobs in {self.path}")
        else:
            _clear(out)
            self.dir.mkdir(parents=True, exist_ok=True)
            stamp.write_text(fingerprint + "\n", encoding="utf-8")
            self.path.write_text("", encoding="utf-8")
        self._fh = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    d = json.loads(line)
                    recs = [ClipRecord(**r) for r in d["records"]]
                except (json.JSONDecodeError, KeyError, TypeError):
                    break  # a line cut by the kill: that job runs again
                self.done[d["key"]] = JobResult(d["result_key"], d["source"], recs, list(d["skipped"]))

    def add(self, key: str, res: JobResult) -> None:
        line = {"key": key, "result_key": res.key, "source": res.source, "skipped": res.skipped,
                "records": [asdict(r) for r in res.records]}  # fmt: skip
        self._fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _fingerprint(settings: BuildSettings, planned_scores: list) -> str:
    """What decides the job order and every job's output (not the caps, the workers or the folder)."""
    d = asdict(settings)
    for k in ("out", "workers", "hours", "arrangements"):
        d.pop(k)
    d["scores"] = [w.id for w in planned_scores]
    d["arranger_version"] = ARRANGER_VERSION
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _interleave(score_jobs: list, settings: BuildSettings, make_arr, tally: _Tally) -> Iterator:
    """Score and arrangement jobs in one deterministic order: the next job comes from the source
    whose planned seconds per unit of its share are lowest (planned seconds: the arrangement's
    length, SCORE_ESTIMATE_S per score variation). A source whose cap was reached is skipped."""
    share = settings.arrangement_share if score_jobs else 1.0
    n_arr = MAX_ARRANGEMENTS if settings.hours is not None else settings.arrangements
    if share <= 0:
        n_arr = 0
    est = {"score": 0.0, "arr": 0.0}
    si = ai = 0
    score_s = settings.variations * min(settings.max_seconds, SCORE_ESTIMATE_S)
    while si < len(score_jobs) or ai < n_arr:
        take_arr = si >= len(score_jobs) or (
            ai < n_arr and est["arr"] / max(share, 1e-9) <= est["score"] / max(1 - share, 1e-9)
        )
        if take_arr:
            if "arr" in tally.full:
                ai = n_arr
                continue
            job = make_arr(ai)
            est["arr"] += job.target_s
            ai += 1
        else:
            if "score" in tally.full:
                si = len(score_jobs)
                continue
            job = score_jobs[si]
            est["score"] += score_s
            si += 1
        yield job


def _run(jobs: Iterator, caps, settings, tally: _Tally, journal: _Journal, snapshot, log: Log) -> None:
    start, total = time.monotonic(), 0
    results = _results(jobs, settings.workers, journal.done)
    try:
        for key, res, fresh in results:
            if fresh:
                journal.add(key, res)
            else:
                tally.resumed += 1
            _accept(key, res, caps, tally, log)
            tally.jobs += 1
            total = sum(tally.seconds.values())
            if tally.jobs % 25 == 0:
                log(f"[{tally.jobs} jobs] {key}: {len(res.records)} clips; {len(tally.records)} clips, "
                    f"{total / SECONDS_PER_HOUR:.2f} h; {time.monotonic() - start:.0f} s")  # fmt: skip
            if tally.jobs % SNAPSHOT_EVERY == 0:
                snapshot()
            if caps and all(c is not None for c in caps.values()) and set(caps) <= tally.full:
                break
    finally:
        results.close()  # terminates the pool when the caps stopped the build early


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
    from melody_core.data.synth import library_version

    v["libfluidsynth"] = library_version()  # "" = renders ran the command line
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
    fonts: dict[str, dict] = {}
    for rec in tally.records:
        name = rec.attributes.get("soundfont")
        if name:
            lic = rec.attributes.get("soundfont_license", "")
            f = fonts.setdefault(name, {"clips": 0, "hours": 0.0, "license": lic})
            f["clips"] += 1
            f["hours"] += rec.seconds / SECONDS_PER_HOUR
    for f in fonts.values():
        f["hours"] = round(f["hours"], 4)
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
        "soundfonts": dict(sorted(fonts.items())),
        "excluded_collections": {c.name: c.excluded for c in COLLECTIONS if c.excluded},
        "skipped": tally.skipped[:MAX_SKIPPED_LISTED],
    }  # fmt: skip


def _arranger_fonts(settings: BuildSettings) -> tuple[tuple[str, str, str], ...]:
    """(name, file FluidSynth loads, licence) of the soundfonts arrangements are rendered through:
    the --soundfont given, else every installed one of `soundfonts.KNOWN_SOUNDFONTS` (an .sf3 is
    converted once into the cache). A missing or corrupt file is a one-line BuildError."""
    try:
        if settings.soundfont:
            check_soundfont(settings.soundfont)
            return ((Path(settings.soundfont).stem, settings.soundfont, "as given by --soundfont"),)
        fonts = installed_soundfonts()
        if not fonts:
            raise BuildError("no General MIDI soundfont found; apt install fluid-soundfont-gm "
                             "musescore-general-soundfont")  # fmt: skip
        return tuple((f.name, renderable(f), f.license) for f in fonts)
    except SoundfontError as exc:
        raise BuildError(str(exc)) from None


def _snapshot(
    out: Path, settings, tally: _Tally, licences, notes, renderer, start: float, complete: bool
) -> dict:
    """Write captions.jsonl and manifest.json for the records accepted so far."""
    records = sorted(tally.records, key=lambda r: r.id)
    _ensure_valid(records)
    write_records(out / CAPTIONS, records)
    snap = _Tally(records, tally.skipped, tally.works)
    manifest = _manifest(settings, snap, licences, notes, renderer, time.monotonic() - start)
    manifest["complete"] = complete
    manifest["totals"]["jobs_resumed"] = tally.resumed
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out / MANIFEST)
    return manifest


def build_corpus(settings: BuildSettings, log: Log = print, works: list[WorkRef] | None = None) -> dict:
    """Build (or resume) the corpus; returns the manifest. `works` overrides the planned works (tests)."""
    start = time.monotonic()
    out = Path(settings.out or default_out(settings.quick)).expanduser().resolve()
    settings.out = str(out)
    if settings.hours is not None and settings.hours <= 0:
        raise BuildError("--hours must be positive")
    if not 0.0 <= settings.arrangement_share <= 1.0:
        raise BuildError("--arrangement-share must be between 0 and 1")
    for folder, _ in settings.recorded:
        if not Path(folder).is_dir():
            raise BuildError(f"{folder}: not a folder")
    if settings.soundfont:
        try:
            check_soundfont(settings.soundfont)
        except SoundfontError as exc:
            raise BuildError(str(exc)) from None
    score_share = 1.0 - settings.arrangement_share if settings.hours is not None else 1.0
    renderer = _renderer(settings) if settings.symbolic and score_share > 0 else None
    use_arr = settings.arrangement_share > 0 and (settings.hours is not None or settings.arrangements > 0)
    fonts = _arranger_fonts(settings) if use_arr else ()
    _check_out(out)
    spec = ClipSpec(target_s=settings.clip_seconds, min_s=settings.min_clip_seconds)
    planned = plan_works(settings, works) if renderer is not None else []
    journal = _Journal(out, _fingerprint(settings, planned), log)
    (out / TMP_DIR).mkdir(parents=True, exist_ok=True)
    tally, licences = _Tally(), {}
    notes = {c.source: f"{c.style} ({c.era}, {c.composer}); {MUSIC21_NOTE}" for c in COLLECTIONS}
    licences[ARRANGER_SOURCE] = "generated by melody (MIT); samples: each clip's soundfont (see soundfonts)"
    notes[ARRANGER_SOURCE] = "procedural multi-track General MIDI arrangements (melody_core.data.arranger)"
    sym_jobs = [
        SymbolicJob(w, settings.variations, str(out), settings.seed, settings.max_seconds, spec, renderer,
                    settings.num_captions)
        for w in planned
    ] if renderer is not None else []  # fmt: skip

    def make_arr(i: int) -> ArrangementJob:
        return ArrangementJob(settings.seed, i, str(out), spec, settings.arrangement_seconds, fonts,
                              settings.fluidsynth, settings.num_captions)  # fmt: skip

    caps: dict[str, float | None] = {}
    if settings.hours is not None:
        cap_s = settings.hours * SECONDS_PER_HOUR
        arr_share = settings.arrangement_share if sym_jobs else 1.0
        caps = {"score": cap_s * (1.0 - arr_share), "arr": cap_s * arr_share}
    n_arr = "as many as the cap needs" if settings.hours is not None else settings.arrangements
    log(f"building into {out}: {len(sym_jobs)} works x {settings.variations} variation(s), "
        f"arrangements: {n_arr if use_arr else 0}")  # fmt: skip

    def snapshot() -> None:
        _snapshot(out, settings, tally, licences, notes, renderer, start, complete=False)

    try:
        jobs = _interleave(sym_jobs, settings, make_arr, tally)
        _run(jobs, caps, settings, tally, journal, snapshot, log)
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
            _run(iter(rec_jobs), {}, settings, tally, journal, snapshot, log)
    finally:
        journal.close()
    _remove_strays(out, {r.path for r in tally.records})
    if not tally.records:
        raise BuildError("the build produced no clips (see the skipped items above)")
    return _snapshot(out, settings, tally, licences, notes, renderer, start, complete=True)
