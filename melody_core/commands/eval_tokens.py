"""`melody eval-tokens`: do the semantic tokens carry musical information? A linear probe
(`melody_core.eval.token_probe`) on bag-of-token histograms predicting instrument family, key tonic
pitch class and mode, against chance and against two trivial feature sets (random k-means, log-mel
statistics)."""

from __future__ import annotations

import argparse
import json
import sys

from melody_core.commands import CLIError

DEFAULT_THREADS = 1  # the probe is small; leave the other cores to training jobs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval-tokens",
        help="probe how much musical information the semantic tokens carry",
        description="For each clip of CORPUS_DIR: SSL features -> k-means tokens -> normalised token "
        "histogram; a logistic-regression probe predicts instrument family, key tonic (12 pitch classes) "
        "and major/minor mode. Reports accuracy on the valid split and in k-fold cross-validation grouped "
        "by work, against chance (majority class, 1/C) and against random-k-means tokens and log-mel "
        "statistics.",
    )
    p.add_argument("--ssl", metavar="RUN_OR_BUNDLE", help="SSL run folder or bundle")
    p.add_argument("--kmeans", metavar="RUN_OR_BUNDLE", help="k-means run folder or bundle")
    p.add_argument(
        "--fit-kmeans", type=int, metavar="V",
        help="instead of --ssl/--kmeans: fit a V-centroid k-means on the train split for each --layers "
        "feature set (network-free: -1 = log-mel+delta, the tiny tokens; -2 = + chroma + tempogram) and "
        "compare them",
    )  # fmt: skip
    p.add_argument("--layers", default="-1,-2", help="with --fit-kmeans: feature layers (default -1,-2)")
    p.add_argument("--data", metavar="CORPUS_DIR", required=True, help="corpus folder (captions.jsonl)")
    p.add_argument("--max-clips", type=int, default=None, help="clips used at most (default: all)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds, grouped by work (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random k-means and folds (default 0)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run_eval_tokens)


def _check_args(args: argparse.Namespace) -> None:
    if args.max_clips is not None and args.max_clips < 4:
        raise CLIError(f"--max-clips must be >= 4, got {args.max_clips}")
    if not 2 <= args.folds <= 20:
        raise CLIError(f"--folds must be 2..20, got {args.folds}")
    if args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    if args.fit_kmeans is None and not (args.ssl and args.kmeans):
        raise CLIError("give --ssl and --kmeans, or --fit-kmeans V")
    if args.fit_kmeans is not None and not 2 <= args.fit_kmeans <= 4096:
        raise CLIError(f"--fit-kmeans must be 2..4096, got {args.fit_kmeans}")
    if args.fit_kmeans is not None:
        bad = f"--layers must be a comma-separated list of -1 / -2, got {args.layers!r}"
        try:
            layers = [int(v) for v in args.layers.split(",")]
        except ValueError:
            raise CLIError(bad) from None
        if not layers or any(v not in (-1, -2) for v in layers):
            raise CLIError(bad)
    if not 0 <= args.seed < 2**62:
        raise CLIError(f"--seed must be an integer in [0, 2^62), got {args.seed}")


def run_eval_tokens(args: argparse.Namespace) -> int:
    _check_args(args)
    import torch

    from melody_core.audio import AudioError
    from melody_core.checkpoint_files import BundleError
    from melody_core.data.corpus import CorpusError
    from melody_core.eval.token_probe import (
        ProbeError,
        ProbeOptions,
        format_report,
        run_feature_probe,
        run_probe,
    )
    from melody_core.train.upstream import TrainError

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    torch.set_num_threads(args.threads)
    opts = ProbeOptions(max_clips=args.max_clips, folds=args.folds, seed=args.seed)
    try:
        if args.fit_kmeans is not None:
            layers = tuple(int(v) for v in args.layers.split(","))
            report = run_feature_probe(args.data, layers, args.fit_kmeans, opts, log)
        else:
            report = run_probe(args.ssl, args.kmeans, args.data, opts, log)
    except (ProbeError, TrainError, CorpusError, AudioError, BundleError) as exc:
        raise CLIError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    print(json.dumps(report, indent=2) if args.json
          else format_report(report))
    return 0
