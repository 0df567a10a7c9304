"""`melody data build` and `melody data info`: the training corpus builder and corpus facts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from melody_core.commands import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build or inspect a training corpus")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    build = data_sub.add_parser(
        "build",
        help="render a captioned training corpus (music21 scores -> FluidSynth) and/or cut audio folders",
        description=(
            "Renders procedural multi-track arrangements in 19 genres (drums, bass, chords, lead; exact "
            "BPM / key / instrument labels) through several soundfonts, and freely licensed scores of "
            "music21's bundled corpus in several instrumentations, tempi, keys and dynamics; cuts them "
            "into 10-30 s clips at 24 kHz FLAC and writes captions. An interrupted build resumes where it "
            "stopped when run again with the same settings. Audio folders (--recorded) and Debian "
            "soundtrack packages (--debian-music) "
            "can be added. Output goes to the user cache folder unless --out is given; a previous "
            "corpus built there with other settings is replaced. Same --seed, same corpus. Without --hours "
            "a build renders all ~5,100 allowed works x 2 variations (about 140 h) and --arrangements N."
        ),
    )
    build.add_argument(
        "--out", metavar="DIR", help="corpus folder (default: user cache/melody-studio/corpus)"
    )
    build.add_argument("--hours", type=float, metavar="H", help="cap on the rendered hours")
    build.add_argument("--quick", action="store_true", help="small corpus (~40 clips) in a few minutes")
    build.add_argument("--seed", type=int, default=0, help="seed of every choice (default 0)")
    build.add_argument("--variations", type=int, metavar="N", help="renderings per work (default 2, quick 1)")
    build.add_argument("--workers", type=int, default=2, metavar="N", help="render processes (1 or 2)")
    build.add_argument("--no-symbolic", action="store_true", help="do not render music21 scores")
    build.add_argument(
        "--recorded", action="append", default=[], metavar="DIR",
        help="a folder of audio to cut into clips (repeatable; each needs a --license)",
    )  # fmt: skip
    build.add_argument(
        "--license", action="append", default=[], metavar="TEXT",
        help='licence of the matching --recorded folder, e.g. "CC-BY-SA 4.0"',
    )  # fmt: skip
    build.add_argument(
        "--debian-music", action="store_true",
        help="download and extract freely licensed Debian soundtrack packages (needs network)",
    )  # fmt: skip
    build.add_argument(
        "--debian-package", action="append", default=[], metavar="NAME",
        help="with --debian-music: package to use instead of the default list (repeatable)",
    )  # fmt: skip
    build.add_argument(
        "--soundfont", metavar="SF2",
        help="one General MIDI soundfont for everything (default: scores FluidR3_GM, arrangements every "
        "installed soundfont of FluidR3_GM and MuseScore General, chosen per clip)",
    )  # fmt: skip
    build.add_argument(
        "--arrangement-share", type=float, default=0.8, metavar="F",
        help="share of --hours given to procedural arrangements, the rest to scores (default 0.8)",
    )  # fmt: skip
    build.add_argument(
        "--arrangements", type=int, metavar="N",
        help="arrangements to render when no --hours is given (default 0, quick 12)",
    )  # fmt: skip
    build.set_defaults(func=run_build)

    info = data_sub.add_parser("info", help="clip count, hours, sources and licences of a corpus or folder")
    info.add_argument("folder", metavar="DIR", help="a built corpus or any folder of audio files")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument(
        "--plots", metavar="OUT_DIR",
        help="write label histograms (genre, BPM, key, instrument family, loudness, soundfont) as PNG "
        "(default for a built corpus: DIR/plots)",
    )  # fmt: skip
    info.add_argument("--no-plots", action="store_true", help="no histogram PNGs")
    info.add_argument(
        "--sheet", metavar="PNG", help="also write spectrograms of 12 clips of different genres / sources"
    )
    info.add_argument(
        "--check-bpm", type=int, metavar="N",
        help="onset check of the labelled BPM of up to N arranged clips (share within 2 %%, per genre)",
    )  # fmt: skip
    info.set_defaults(func=run_info)


def _settings(args: argparse.Namespace):
    from melody_core.data.build import BuildSettings
    from melody_core.data.debian import DEFAULT_PACKAGES

    if len(args.recorded) != len(args.license):
        raise CLIError('give one --license for each --recorded folder (e.g. --license "CC-BY 4.0")')
    if any(not text.strip() for text in args.license):
        raise CLIError("--license must not be empty")
    if args.hours is not None and args.hours <= 0:
        raise CLIError("--hours must be positive")
    if args.variations is not None and args.variations < 1:
        raise CLIError("--variations must be at least 1")
    if not 1 <= args.workers <= 2:
        raise CLIError("--workers must be 1 or 2")
    if not 0.0 <= args.arrangement_share <= 1.0:
        raise CLIError("--arrangement-share must be between 0 and 1")
    if args.arrangements is not None and args.arrangements < 0:
        raise CLIError("--arrangements must be 0 or more")
    if args.debian_package and not args.debian_music:
        raise CLIError("--debian-package needs --debian-music")
    if args.no_symbolic and not (args.recorded or args.debian_music or args.hours or args.arrangements):
        raise CLIError(
            "--no-symbolic leaves nothing to build: "
            "add --hours H, --arrangements N, --recorded DIR or --debian-music"
        )
    overrides = dict(
        out=args.out or "",
        seed=args.seed,
        hours=args.hours,
        symbolic=not args.no_symbolic,
        workers=args.workers,
        soundfont=args.soundfont or "",
        recorded=list(zip(args.recorded, args.license)),
        debian_packages=(args.debian_package or list(DEFAULT_PACKAGES)) if args.debian_music else [],
        arrangement_share=args.arrangement_share,
    )
    if args.arrangements is not None:
        overrides["arrangements"] = args.arrangements
    if args.variations is not None:
        overrides["variations"] = args.variations
    return BuildSettings.quick_preset(**overrides) if args.quick else BuildSettings(**overrides)


def run_build(args: argparse.Namespace) -> int:
    from melody_core.data.build import BuildError, build_corpus

    settings = _settings(args)
    try:
        import music21  # noqa: F401 - a clear message instead of an import error in a worker
    except ImportError:
        if settings.symbolic:
            raise CLIError("music21 is not installed (pip install 'melody-studio[data]')") from None
    try:
        manifest = build_corpus(settings, log=lambda line: print(line, flush=True))
    except BuildError as exc:
        raise CLIError(str(exc)) from None
    totals = manifest["totals"]
    print(
        f"corpus: {settings.out}\n{totals['clips']} clips, {totals['hours']:.2f} h "
        f"(train {totals['splits'].get('train', 0)}, valid {totals['splits'].get('valid', 0)}), "
        f"{totals['skipped']} skipped, {totals['wall_seconds']:.0f} s"
    )
    for name, src in manifest["sources"].items():
        print(f"  {name}: {src['clips']} clips, {src['hours']:.2f} h; licence: {src['license']}")
    for name, f in manifest.get("soundfonts", {}).items():
        print(f"  soundfont {name}: {f['clips']} clips, {f['hours']:.2f} h; licence: {f['license']}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from melody_core.data.corpus import CorpusError
    from melody_core.data.summary import corpus_summary, format_summary

    try:
        summary = corpus_summary(args.folder)
    except CorpusError as exc:
        raise CLIError(str(exc)) from None
    plots = args.plots or (str(Path(args.folder) / "plots") if summary["kind"] == "built corpus" else None)
    if plots and not args.no_plots:
        from melody_core.data.summary import write_histograms

        try:
            files = write_histograms(args.folder, plots)
        except OSError as exc:
            raise CLIError(f"{plots}: cannot write the histograms ({exc.strerror or exc})") from None
        summary["plots"] = [str(f) for f in files]
    if args.sheet:
        from melody_core.audio import AudioError
        from melody_core.data.summary import write_spectrogram_sheet

        try:
            summary["sheet"] = str(write_spectrogram_sheet(args.folder, args.sheet))
        except (OSError, AudioError) as exc:
            raise CLIError(f"{args.sheet}: cannot write the spectrogram sheet ({exc})") from None
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_summary(summary))
    if args.check_bpm:
        from melody_core.audio import AudioError
        from melody_core.eval.corpus_check import bpm_check

        try:
            check = bpm_check(args.folder, args.check_bpm)
        except AudioError as exc:
            raise CLIError(str(exc)) from None
        per = ", ".join(f"{g} {a}/{b}" for g, (a, b) in sorted(check["per_genre"].items()))
        print(f"BPM onset check: {check['within']}/{check['checked']} arranged clips within 2 % ({per})")
        for miss in check["misses"][:10]:
            print(f"  miss: {miss[0]} labelled {miss[1]:g}, measured {miss[2]:g}")
    if summary.get("plots") and not args.json:
        print(f"histograms: {summary['plots'][0]} (+ {len(summary['plots']) - 1} more)")
    return 0
