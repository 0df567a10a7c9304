"""`melody data info`: facts of a built corpus or of any folder of audio."""

from __future__ import annotations

import json
from pathlib import Path

from melody_core.audio import AudioError, audio_info
from melody_core.data.corpus import read_corpus

SECONDS_PER_HOUR = 3600.0


def corpus_summary(folder: str | Path) -> dict:
    """Clip count, hours, splits, captioned clips and per-source licences (CorpusError if the folder
    holds no clips). Durations missing from the index are read from the file headers."""
    root = Path(folder)
    records = read_corpus(root)
    sources: dict[str, dict] = {}
    splits: dict[str, int] = {}
    total, unreadable, captioned = 0.0, 0, 0
    for rec in records:
        seconds = rec.seconds
        if seconds <= 0:
            try:
                seconds = audio_info(root / rec.path).duration_s
            except AudioError:
                unreadable += 1
                seconds = 0.0
        total += seconds
        captioned += bool(rec.captions)
        splits[rec.split] = splits.get(rec.split, 0) + 1
        src = sources.setdefault(rec.source, {"clips": 0, "hours": 0.0, "licenses": []})
        src["clips"] += 1
        src["hours"] += seconds / SECONDS_PER_HOUR
        if rec.license not in src["licenses"]:
            src["licenses"].append(rec.license)
    manifest = {}
    if (root / "manifest.json").is_file():
        try:
            manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            manifest = {}
    kind = (
        "built corpus" if manifest else "captions.jsonl" if (root / "captions.jsonl").is_file() else "folder"
    )
    return {
        "folder": str(root),
        "kind": kind,
        "clips": len(records),
        "hours": round(total / SECONDS_PER_HOUR, 6),
        "captioned": captioned,
        "unreadable": unreadable,
        "splits": dict(sorted(splits.items())),
        "sources": {k: dict(v, hours=round(v["hours"], 6)) for k, v in sorted(sources.items())},
        "seed": manifest.get("seed"),
        "created": manifest.get("created"),
    }


def format_summary(s: dict) -> str:
    lines = [
        f"{s['folder']} ({s['kind']}): {s['clips']} clips, {s['hours']:.2f} h, "
        f"{s['captioned']} with captions",
        "splits: " + ", ".join(f"{k} {v}" for k, v in s["splits"].items()),
    ]
    if s["unreadable"]:
        lines.append(f"{s['unreadable']} clip(s) could not be read")
    if s["seed"] is not None:
        lines.append(f"built {s['created']} with seed {s['seed']}")
    lines.append("sources:")
    for name, src in s["sources"].items():
        lines.append(
            f"  {name}: {src['clips']} clips, {src['hours']:.2f} h; licence: {'; '.join(src['licenses'])}"
        )
    return "\n".join(lines)


HIST_ATTRIBUTES = (  # (file stem, title, attribute or function of the attributes)
    ("genre", "genre / source", lambda a, r: a.get("genre") or r.source.split(":")[-1]),
    ("bpm", "BPM", lambda a, r: a.get("bpm")),
    ("key", "key", lambda a, r: a.get("key")),
    ("instrument_family", "instrument family (lead)", lambda a, r: a.get("instrument_family")),
    ("loudness", "loudness (LUFS)", lambda a, r: a.get("loudness_lufs")),
    ("soundfont", "soundfont", lambda a, r: a.get("soundfont")),
)
BPM_BIN = 5
LUFS_BIN = 1.0


def label_counts(folder: str | Path) -> dict[str, dict]:
    """Per histogram: {value: clip count} (BPM and loudness binned)."""
    out: dict[str, dict] = {name: {} for name, _, _ in HIST_ATTRIBUTES}
    for rec in read_corpus(folder):
        for name, _, get in HIST_ATTRIBUTES:
            value = get(rec.attributes, rec)
            if value is None or value == "":
                continue
            if name == "bpm":
                value = int(float(value) // BPM_BIN * BPM_BIN)
            elif name == "loudness":
                if not isinstance(value, int | float) or value != value or abs(value) == float("inf"):
                    continue
                value = float(value // LUFS_BIN * LUFS_BIN)
            out[name][value] = out[name].get(value, 0) + 1
    return out


def write_histograms(folder: str | Path, out_dir: str | Path) -> list[Path]:
    """One small PNG per histogram of `label_counts` plus an overview sheet; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = label_counts(folder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    fig_all, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax_all, (name, title, _) in zip(axes.flat, HIST_ATTRIBUTES):
        data = counts[name]
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for a in (ax, ax_all):
            if not data:
                a.text(0.5, 0.5, "no labels", ha="center", va="center")
            elif name in ("bpm", "loudness"):
                keys = sorted(data)
                width = BPM_BIN if name == "bpm" else LUFS_BIN
                a.bar(keys, [data[k] for k in keys], width=width * 0.9, align="edge")
            else:
                keys = sorted(data, key=lambda k: -data[k])
                a.bar(range(len(keys)), [data[k] for k in keys])
                a.set_xticks(range(len(keys)), keys, rotation=60, ha="right", fontsize=7)
            a.set_title(f"{title} ({sum(data.values())} clips)", fontsize=9)
            a.set_ylabel("clips", fontsize=8)
        fig.tight_layout()
        path = out / f"hist_{name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        files.append(path)
    fig_all.tight_layout()
    sheet = out / "histograms.png"
    fig_all.savefig(sheet, dpi=70)
    plt.close(fig_all)
    return [sheet, *files]


SHEET_N_FFT = 1024
SHEET_HOP = 256
SHEET_COLS = 4  # panels per row
SHEET_DB_RANGE = 80.0  # dB shown below each panel's loudest bin


def spectrogram_grid(panels: list[tuple[object, str]], out_png: str | Path, dpi: int = 50,
                     title_size: float = 8.0) -> Path:
    """A PNG grid (`SHEET_COLS` per row) of dB STFT magnitude spectrograms (Hann `SHEET_N_FFT`, hop
    `SHEET_HOP`, `SHEET_DB_RANGE` below each panel's peak) of (T,) 24 kHz waveforms, each panel
    titled with its text: (waveform, title) per panel. The corpus sheet and `melody eval listen`
    draw with it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from melody_core import SAMPLE_RATE

    rows = max(1, -(-len(panels) // SHEET_COLS))
    fig, axes = plt.subplots(rows, SHEET_COLS, figsize=(4 * SHEET_COLS, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    window = torch.hann_window(SHEET_N_FFT)
    for ax, (wav, title) in zip(axes.flat, panels):
        wav = torch.as_tensor(wav, dtype=torch.float32)  # (T,)
        spec = torch.stft(wav, SHEET_N_FFT, SHEET_HOP, window=window, return_complex=True)
        db = 20 * torch.log10(spec.abs() + 1e-5)  # (freq, frames)
        top = float(db.max())
        ax.imshow(db.numpy(), origin="lower", aspect="auto", vmin=top - SHEET_DB_RANGE, vmax=top,
                  extent=(0, wav.numel() / SAMPLE_RATE, 0, SAMPLE_RATE / 2000), cmap="magma")  # fmt: skip
        ax.set_title(title, fontsize=title_size)
        ax.axis("on")
        ax.set_xlabel("s", fontsize=7)
        ax.set_ylabel("kHz", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def write_spectrogram_sheet(
    folder: str | Path, out_png: str | Path, n: int = 12, seconds: float = 10.0
) -> Path:
    """A grid of log-magnitude spectrograms of the first `seconds` of `n` clips, one per genre (or
    source) where there are enough, titled with genre, BPM, key and soundfont."""
    from melody_core import SAMPLE_RATE
    from melody_core.audio import load_audio

    records = read_corpus(folder)
    picked, seen = [], set()
    for rec in sorted(records, key=lambda r: r.id):
        group = rec.attributes.get("genre") or rec.source
        if group not in seen and len(picked) < n:
            seen.add(group)
            picked.append(rec)
    panels = []
    for rec in picked:
        wav = load_audio(Path(folder) / rec.path)[: int(seconds * SAMPLE_RATE)]
        a = rec.attributes
        title = a.get("genre") or rec.source.split(":")[-1]
        head = f"{title} {a.get('bpm', '')} bpm, {a.get('key', '')}"
        panels.append((wav, f"{head}\n{a.get('soundfont', '')}"))
    return spectrogram_grid(panels, out_png)
