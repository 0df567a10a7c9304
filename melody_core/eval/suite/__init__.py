"""`melody eval all`: the evaluation suite behind docs/results/README.md — the paper's claims
reproduced at our scale, and what a producer hears.

Sections, in order (each timed; results.json is rewritten after each, README.md at the end):
1. reference — the held-out clips (`sets.load_reference`): musicnn patches (the FAD
   reference), MCC of each clip with its own first caption, VAE reconstruction (`reconstruct_files`;
   section "reconstruction").
2. grid — schedule (linear Eq. 4, uniform) x steps (5, 10, 20): one clip per reference caption,
   seed = base seed + i, default guidance → FAD vs the reference, MCC, CPU speed (Hz, × real
   time), NFE (`gen`): Table 2 (linear rows) and the angle-schedule ablation.
3. tempo, instrument, pair — prompt control (`control`); judges — 16 genre prompts x 3 seeds judged
   by the bundle's MuLan, the musicnn tagger, librosa's beat tracker and a Krumhansl-Kessler key
   finder, each next to the same judges on held-out clips (`judges`).
4. seams — spectral-flux seam ratio at the continuation joins of long generations vs random positions.
5. ablation — DPD vs UNet-1D (`ablation_arch.run_arch_ablation`), trained from scratch unless
   `reuse_ablation` (then finished arms with the same settings are reused, and the report says so).
6. report — README.md + PNG plots written from results.json alone (`report`), with the issue-16
   targets table (`targets`, also stored in results.json as "targets"; `--baseline RESULTS_JSON`
   gives the FAD target another run's FAD).

Budget: `estimate_seconds` models the wall time from per-step costs measured on the reference
2-core CPU with the bundled tiny model, scaled by a warm-up generation timed on this machine; it is
printed at the start and stored. With the defaults (32 clips x 10 s, 8 min per ablation arm) the
estimate there is about 46 minutes (the judges' 48 clips about 5 of them).
Modules (each imports only those before it; tests/test_import_graph.py checks it): `options`
(SuiteOptions, sections; no torch), `sets` (reference set, prompts, join positions), `compare`
(formats, the paper's numbers, computed disagreements), `targets` (the issue-16 targets table),
`gen` (generation, FAD/MCC/speed/seams), `control` (tempo / instrument / pair), `judges`, `plots`,
`report` (README.md from results.json), `run` (`run_suite`, budget). The command line is
`melody_core.commands.eval_suite`.
Generated audio stays in memory; nothing is written outside `out` (and the ablation's work folder,
by default in the user cache directory).
"""

