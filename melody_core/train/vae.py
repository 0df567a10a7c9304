"""Stage `vae`: the audio VAE-GAN (§4.1) on random crops of the corpus.

Generator loss = MR-STFT + mel + KL (+ adversarial + feature matching once the step reaches
`VAETraining.adversarial_start_step`, a reconstruction-only warm-up); the discriminator (HiFi-GAN MPD
+ UnivNet MRSD) is trained from that step on. Order per step, as HiFi-GAN: one discriminator update
on (real, detached reconstruction), then one generator update against the updated discriminator.

*(our choice)*: real and fake audio go through the discriminator as one concatenated batch (one DDP
forward per update); in the generator update the discriminator's parameters are frozen and it runs
unwrapped (no gradient all-reduce for it). AdamW betas (0.8, 0.99) and no gradient clipping, as
HiFi-GAN. Validation: mel / STFT / KL terms and SI-SDR of the posterior-mean reconstruction.
`--freeze-encoder` (with `--init-from`) trains only the decoder and discriminators, so the
latents, and the DPD trained on them, stay valid (export checks the encoder hash).

Trainer options (`VAETraining`: flags of `melody train vae`, kept in run.json's "training") steer the
run, not the model, so they are out of `VAEConfig` and its hash; `Stage.resolve_training` says where
each value comes from (old `--set KEY=VALUE` spellings still work, with a deprecation note).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from melody_core import SAMPLE_RATE
from melody_core.audio.features import mel_distance, si_sdr
from melody_core.config import BaseConfig, ConfigError
from melody_core.models._vae_blocks import ISTFTDecoder
from melody_core.models.discriminators import VAEGANDiscriminator
from melody_core.models.gan_losses import discriminator_loss, generator_loss_terms
from melody_core.models.vae_gan import AudioVAE, VAEConfig, VAEOutput
from melody_core.train.data import AudioStore, batches, fixed_items
from melody_core.train.stage import (
    Hyper,
    LRSchedule,
    Stage,
    StageContext,
    TrainError,
    adamw,
    crop_units,
    optimize,
)

HIFIGAN_BETAS = (0.8, 0.99)
CALIBRATION_CROPS = 64  # fixed training crops of the output-gain line search
CALIBRATION_CROP_S = 2.0  # their length in seconds (at most the longest training clip)
GAIN_GRID_DB = tuple(float(db) for db in range(-6, 19))  # candidate output gains, 1 dB apart


@dataclass
class VAETraining(BaseConfig):
    """How a VAE run trains (flags of `melody train vae`); none of it is part of the model."""

    adversarial_start_step: int = 0  # reconstruction-only warm-up steps before the GAN terms
    freeze_encoder: bool = False  # decoder-only fine-tuning (encoder, hence latents, unchanged)
    latent_noise: float = 0.0  # Gaussian noise on the decoder's input latents, std drawn per example
    # uniformly in [0, latent_noise] (latent units, after the posterior sample): robustness to
    # generated latents while clean ones stay in the training distribution
    calibrate_gain: bool = False  # at the start, rescale the iSTFT decoder output by the gain
    # minimising the mel loss on training crops (one-parameter line search; `_calibrate_gain`)

    def __post_init__(self) -> None:
        if self.adversarial_start_step < 0 or self.latent_noise < 0:
            raise ConfigError("VAETraining: adversarial_start_step and latent_noise must be >= 0")

    @classmethod
    def tiny(cls) -> VAETraining:
        # CPU budget: GAN steps are ~10x slower than reconstruction-only ones here (trainer
        # report: 7.0 vs 0.65 s/step), so the tiny preset warms up without the GAN first
        return cls(adversarial_start_step=4000)


class VAEStage(Stage):
    name = component = "vae"
    training_options = VAETraining
    metrics = ("loss", "stft", "mel", "spec", "phase", "ri", "cons", "kl", "adv", "fm", "disc", "si_sdr")
    valid_key = "mel"

    def defaults(self, preset: str) -> Hyper:
        if preset == "paper":
            return Hyper(
                batch_size=16,
                crop_seconds=0.5,
                lr=2e-4,
                steps=400_000,
                warmup=0,
                weight_decay=0.0,
                grad_clip=0.0,
                betas=HIFIGAN_BETAS,
                valid_every=2000,
            )
        return Hyper(
            batch_size=8,
            crop_seconds=0.5,
            lr=2e-4,
            steps=3000,
            warmup=0,
            weight_decay=0.0,
            grad_clip=0.0,
            betas=HIFIGAN_BETAS,
            valid_every=250,
        )

    def setup(self, ctx: StageContext) -> None:
        cfg: VAEConfig = ctx.config  # type: ignore[assignment]
        self.cfg = cfg
        training: VAETraining = ctx.training  # type: ignore[assignment]
        self.training_opts = training
        self.vae = AudioVAE(cfg).to(ctx.device)
        self.init_weights(self.vae)
        if training.freeze_encoder:  # decoder-only fine-tuning: the latents (and runs on them) stay valid
            if ctx.init is None:
                raise TrainError("--freeze-encoder needs --init-from a trained VAE")
            self.vae.encoder.requires_grad_(False)
        self.calibration: dict[str, float] = {}
        if training.calibrate_gain and not ctx.resuming:
            self._calibrate_gain(ctx)
        self.disc = VAEGANDiscriminator(cfg).to(ctx.device)
        self.g = ctx.prepare(self.vae)
        self.d = ctx.prepare(self.disc)
        self.opt_g, self.opt_d = adamw([self.vae], ctx.hp), adamw([self.disc], ctx.hp)
        self.schedules = {
            "g": LRSchedule(self.opt_g, ctx.hp.lr, ctx.hp.warmup, ctx.total_steps),
            "d": LRSchedule(self.opt_d, ctx.hp.lr, ctx.hp.warmup, ctx.total_steps),
        }
        self.crop = crop_units(ctx.hp.crop_seconds, 1 / SAMPLE_RATE, cfg.hop)
        self.sampler = self.make_sampler(ctx.train.lengths, self.crop, align=cfg.hop)
        self.audio = AudioStore(ctx.train)
        self.valid_audio = AudioStore(ctx.valid)
        self.valid_items = fixed_items(
            ctx.valid.lengths, self.crop, ctx.hp.valid_batches * ctx.hp.batch_size, ctx.opts.seed, cfg.hop
        )

    def init_weights(self, model: torch.nn.Module) -> None:
        """Copy --init-from weights; a v1 VAE (linear phase head) into an APNet-head one: every shared
        weight, the magnitude rows of the old head (its first F outputs), and a freshly initialised
        phase branch (the only keys allowed to be missing)."""
        ctx = self.ctx
        if ctx is None or ctx.init is None:
            return
        source = ctx.init.model.state_dict()
        target = model.state_dict()
        head = "decoder.head."
        for key in (head + "weight", head + "bias"):
            if key in source and key in target and source[key].shape[0] == 2 * target[key].shape[0]:
                source[key] = source[key][: target[key].shape[0]]  # (2F, ...) -> log-magnitude rows (F, ...)
        try:
            missing, unexpected = model.load_state_dict(source, strict=False)
        except RuntimeError as exc:  # shape mismatches
            first = str(exc).strip().splitlines()[-1].strip()
            raise TrainError(f"--init-from: weights do not fit this VAE config ({first})") from None
        new = ("decoder.phase_blocks.", "decoder.phase_norm.", "decoder.phase_real.", "decoder.phase_imag.")
        bad = [k for k in missing if not k.startswith(new)] + list(unexpected)
        if bad:
            raise TrainError(f"--init-from: weights do not fit this VAE config ({', '.join(bad[:4])})")
        if missing and ctx.dist.rank == 0:
            print(f"vae: initialised from {ctx.init.source}; new phase branch ({len(missing)} tensors) "
                  "starts from random weights", flush=True)

    @torch.no_grad()
    def _calibrate_gain(self, ctx: StageContext) -> None:
        """Scale the decoder output by the gain (a GAIN_GRID_DB point) with the lowest mel loss on
        fixed training crops. Why: the tiny iSTFT decoder settled 12-13 dB below its targets although
        louder output lowers both its losses (x2-x4: mel distance 0.738 -> 0.647 on 150 training
        crops); a resumed run loads the calibrated weights from its checkpoint over this."""
        if not isinstance(self.vae.decoder, ISTFTDecoder):
            raise TrainError("--calibrate-gain needs the iSTFT decoder (decoder_type=istft)")
        hop = self.cfg.hop
        longest = max(ctx.train.lengths) // hop * hop  # short corpora: crops as long as their longest clip
        crop = min(crop_units(CALIBRATION_CROP_S, 1 / SAMPLE_RATE, hop), longest)
        items = fixed_items(ctx.train.lengths, crop, CALIBRATION_CROPS, ctx.opts.seed + 1, hop)
        if not items:
            raise TrainError("--calibrate-gain needs a training clip of at least one VAE hop")
        wav = AudioStore(ctx.train).batch(items, crop).to(ctx.device)  # (N, T)
        self.vae.eval()
        rec = torch.cat([self.vae(wav[i : i + 8]).recon.float() for i in range(0, len(wav), 8)])  # (N, T)
        self.vae.train()
        losses = {db: float(mel_distance(rec * 10 ** (db / 20), wav)) for db in GAIN_GRID_DB}
        best = min(losses, key=losses.get)
        self.vae.decoder.scale_output(10 ** (best / 20))
        self.calibration = {"output_gain_db": best, "mel_before": losses[0.0], "mel_after": losses[best]}
        if ctx.dist.rank == 0:
            print(f"vae: output gain calibrated {best:+g} dB (mel distance {losses[0.0]:.4f} -> "
                  f"{losses[best]:.4f} on {len(items)} training crops of {crop / SAMPLE_RATE:g} s)",
                  flush=True)

    def export_meta(self) -> dict[str, Any]:
        return {"output_gain_calibration": dict(self.calibration)} if self.calibration else {}

    def extra_state(self) -> dict[str, Any]:
        return {"calibration": dict(self.calibration)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.calibration = dict(state.get("calibration") or {})

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.vae, "disc": self.disc}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.opt_g, "d": self.opt_d}

    def train_step(self, step: int) -> dict[str, float]:
        ctx, cfg = self.ctx, self.cfg
        wav = self.audio.batch(self.sampler.next(), self.crop).to(ctx.device)  # (B, T)
        b = wav.shape[0]
        with ctx.autocast():
            out = self.g(wav, self.training_opts.latent_noise)
        # losses (STFT, mel, spectrum, KL) in fp32 under --amp
        out = VAEOutput(*(None if t is None else t.float() for t in out))
        adversarial = step >= self.training_opts.adversarial_start_step
        values: dict[str, float] = {}
        disc_real = disc_fake = None
        if adversarial:
            with ctx.autocast():  # discriminator update on real vs detached reconstruction
                logits, _ = self.d(torch.cat([wav, out.recon.detach().to(wav.dtype)]))  # (2B, ...) each
                loss_d = discriminator_loss(([x[:b] for x in logits], []), ([x[b:] for x in logits], []), cfg)
            optimize(loss_d, self.opt_d, ctx.hp.grad_clip)
            values["disc"] = loss_d.item()
            self.disc.requires_grad_(False)
            with ctx.autocast():  # generator side: raw module, frozen weights, gradient to the recon only
                logits, fmaps = self.disc(torch.cat([wav, out.recon.to(wav.dtype)]))
            self.disc.requires_grad_(True)
            disc_real = ([x[:b] for x in logits], [[f[:b] for f in fm] for fm in fmaps])
            disc_fake = ([x[b:] for x in logits], [[f[b:] for f in fm] for fm in fmaps])
        terms = generator_loss_terms(out, wav, cfg, disc_real, disc_fake)
        optimize(terms["total"], self.opt_g, ctx.hp.grad_clip)
        values.update({("loss" if k == "total" else k): v.item() for k, v in terms.items()})
        return values

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        ctx, cfg = self.ctx, self.cfg
        if not self.valid_items:
            return {}
        self.vae.eval()
        sums: dict[str, float] = {}
        n = 0
        try:
            for items in batches(self.valid_items, ctx.hp.batch_size):
                wav = self.valid_audio.batch(items, self.crop).to(ctx.device)
                out = self.vae(wav)
                terms = generator_loss_terms(out, wav, cfg)
                terms["si_sdr"] = si_sdr(out.recon, wav).mean()
                for k, v in terms.items():
                    key = "loss" if k == "total" else k
                    sums[key] = sums.get(key, 0.0) + float(v) * len(items)
                n += len(items)
        finally:
            self.vae.train()
        return {k: v / n for k, v in sums.items()}
