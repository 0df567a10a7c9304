"""Generated examples of the model card: three prompts, fixed seeds, WAV + log-mel spectrogram PNG.

Each sample also records its generation time (wall seconds, real-time factor), NFE, and the MuLan
cosine between the prompt's text embedding and the generated audio's embedding *(our choice: a
cheap stand-in for the paper's MuLan Cycle Consistency, §5.2)*.
"""

from __future__ import annotations

import io
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from melody_core import SAMPLE_RATE
from melody_core.audio import MelSpectrogram, save_audio
from melody_core.audio.features import hz_to_mel, mel_to_hz
from melody_core.train.state import atomic_write

CARD_PROMPTS = (
    "solo piano, slow and melancholic",
    "string quartet, fast and bright",
    "church organ chorale",
)
MEL_BINS = 80  # mel bands of the spectrogram images
MEL_HOP = 240  # samples per spectrogram column (100 columns per second)
MEL_FFT = 1024
FIGURE_SIZE = (8.0, 3.0)  # inches
FIGURE_DPI = 100
TITLE_WIDTH = 90  # characters per title line
DB_RANGE = 80.0  # dynamic range shown below the loudest bin
HZ_TICKS = (0, 250, 500, 1000, 2000, 4000, 8000)  # frequency axis labels
LOG10_E = float(np.log10(np.e))  # natural log -> log10 (dB = 10 log10 power)


def _band_positions(freqs) -> list[float]:
    """Positions on the image's mel-band axis (band i spans [i, i + 1]) of frequencies in Hz."""
    edges = torch.tensor([0.0, SAMPLE_RATE / 2], dtype=torch.float64)
    lo, hi = hz_to_mel(edges).tolist()
    centres = mel_to_hz(torch.linspace(lo, hi, MEL_BINS + 2, dtype=torch.float64)[1:-1]).numpy()  # (n_mels,)
    return [float(np.interp(f, centres, np.arange(MEL_BINS)) + 0.5) if f > 0 else 0.0 for f in freqs]


def save_spectrogram(wav: np.ndarray, path: Path, title: str) -> None:
    """Log-mel power spectrogram (dB) of a (T,) 24 kHz clip as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mel = MelSpectrogram(SAMPLE_RATE, n_fft=MEL_FFT, hop=MEL_HOP, n_mels=MEL_BINS)
    with torch.no_grad():
        db = 10 * LOG10_E * mel(torch.from_numpy(np.ascontiguousarray(wav)).unsqueeze(0))[0]  # (n_mels, N)
    seconds = len(wav) / SAMPLE_RATE
    top = float(db.max())
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    im = ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=top - DB_RANGE, vmax=top,
                   extent=(0.0, seconds, 0.0, float(MEL_BINS)))
    ax.set_yticks(_band_positions(HZ_TICKS), [f"{f / 1000:g}k" if f >= 1000 else str(f) for f in HZ_TICKS])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz, mel scale)")
    ax.set_title("\n".join(textwrap.wrap(title, TITLE_WIDTH)), fontsize=9)
    fig.colorbar(im, ax=ax, label="dB")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def generate_samples(pipe: Any, out: Path, seconds: float, seed: int, prompts=CARD_PROMPTS,
                     log=print) -> list[dict[str, Any]]:
    """Generate one clip per prompt (seed `seed + k`), write `sample_{k+1}.wav` and
    `spectrogram_{k+1}.png` into `out`; returns one record per sample."""
    from melody_core.audio.tags import file_metadata
    from melody_core.generation.types import GenerationSettings

    records = []
    for k, prompt in enumerate(prompts):
        t0 = time.perf_counter()
        result = pipe.generate(GenerationSettings(prompt=prompt, seed=seed + k, seconds=seconds))
        wall = time.perf_counter() - t0
        wav_name, png_name = f"sample_{k + 1}.wav", f"spectrogram_{k + 1}.png"
        save_audio(out / wav_name, torch.from_numpy(result.audio), result.sample_rate,
                   metadata=file_metadata(result.metadata))
        save_spectrogram(result.audio, out / png_name, f"\u201c{prompt}\u201d  (seed {seed + k})")
        with torch.inference_mode():
            text = pipe.models.mulan.embed_text([prompt])  # (1, E)
            audio = pipe.models.mulan.embed_audio(torch.from_numpy(result.audio).unsqueeze(0))  # (1, E)
        meta = result.metadata
        records.append({
            "prompt": prompt,
            "seed": seed + k,
            "wav": wav_name,
            "spectrogram": png_name,
            "seconds": round(result.seconds, 4),
            "generation_s": round(wall, 3),
            "realtime_factor": round(result.seconds / wall, 3),
            "nfe": meta["nfe"],
            "steps": meta["settings"]["steps"],
            "guidance": meta["settings"]["guidance"],
            "mulan_text_audio_cosine": round(float(F.cosine_similarity(text, audio)[0]), 4),
            "rms": round(float(np.sqrt(np.mean(np.square(result.audio, dtype=np.float64)))), 5),
        })
        log(f"sample {k + 1}/{len(prompts)}: {prompt!r} in {wall:.1f} s")
    return records
