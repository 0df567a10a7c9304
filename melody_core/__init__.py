"""MeLoDy core: models, diffusion math, checkpoints and generation pipeline (no Qt)."""

__version__ = "0.1.0"

SAMPLE_RATE = 24_000  # Hz, §5.1: every audio model works on 24 kHz mono
LATENT_HOP = 96  # samples per VAE latent frame (§5.1) -> 250 Hz latents
LATENT_RATE = SAMPLE_RATE // LATENT_HOP  # 250 Hz
SEMANTIC_RATE = 25  # Hz, semantic tokens (§5.1)
FRAMES_PER_TOKEN = LATENT_RATE // SEMANTIC_RATE  # 10 latent frames per semantic token
TOKEN_SAMPLES = LATENT_HOP * FRAMES_PER_TOKEN  # 960 samples per semantic token
