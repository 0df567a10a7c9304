"""`melody eval card`: the measured figures of a MODEL_CARD.

Modules: `metrics` (crops, reconstruction scores, DPD velocity MSE, LM perplexity, retrieval; also
used by the suite, the ablation and `eval reconstruct`), `samples` (generated samples and their
spectrograms), `evaluate` (`evaluate_card`, `format_card`). The command line is
`melody_core.commands.eval`.
"""
