"""Convert musicnn's MSD_musicnn TensorFlow checkpoint to safetensors and write the parity fixture.

TensorFlow is never a dependency of melody-studio: this script runs once, by hand, inside a throwaway
virtualenv, and its outputs are committed. From the repository root:

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf_keras==2.21.0 librosa==0.11.0 \
        numpy==1.26.4 ml_dtypes==0.5.1 safetensors soundfile
    /tmp/tfenv/bin/pip install --no-deps musicnn==0.1.0    # wheel sha256 f38a4890...cfa
    /tmp/tfenv/bin/python packaging/tools/convert_musicnn.py

Why these pins:
- tf_keras + TF_USE_LEGACY_KERAS=1 (set below): musicnn builds its graph with tf.compat.v1.layers,
  which TensorFlow >= 2.16 only provides through the legacy Keras 2 package.
- numpy 1.x: musicnn computes `np.log10(10000 * mel_f16 + 1)` on a float16 array. Under numpy 1.x
  value-based casting `10000 * float16` promotes to float32 (min_scalar_type(10000) = uint16); under
  numpy 2 (NEP 50) it stays float16 and overflows to inf for mel power > 6.55, which is common in
  music. The checkpoint's finite batch-norm statistics show training never saw those infs, so the
  numpy-1 behaviour is the one the model was trained with. ml_dtypes 0.5.1 is the last numpy-1 build.
- librosa >= 0.10 changed the STFT default pad_mode from "reflect" to "constant"; musicnn (2019,
  librosa 0.6/0.7) used "reflect", which is restored here by wrapping librosa's melspectrogram.

Outputs (paths relative to the repository root):
- resources/eval/musicnn/msd_musicnn.safetensors: the 792,079 checkpoint values (optimizer slots
  dropped) under PyTorch names and layouts (see `convert_weights`), loaded by melody_core/eval/musicnn.py.
- tests/fixtures/musicnn_reference.npz: TensorFlow outputs (penultimate, max_pool, mean_pool,
  taggram) for the signals of tests/musicnn_signals.py, computed by musicnn's own code (its
  batch_data front end, its models.py graph, its Saver restore), cross-checked against its unmodified
  `extractor()`; plus librosa's mel filterbank and mel power of one signal for the front-end test.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.compat.v1.layers needs Keras 2 (tf_keras)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa  # noqa: E402
import musicnn  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import tensorflow as tf  # noqa: E402
from musicnn import configuration as mconfig  # noqa: E402
from musicnn import extractor as mextractor  # noqa: E402
from musicnn import models as mmodels  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL = "MSD_musicnn"
WEIGHTS_NAME = "msd_musicnn.safetensors"
N_TAGS = 50
HOP_SECONDS = 1.0  # patch hop of the reference (musicnn's input_overlap)
MEL_CHECK_SIGNAL, MEL_CHECK_FRAMES = "clicks", 64  # librosa mel power stored for the front-end test
NET_CHECK_SIGNAL = "chord"  # its first patch's float16 mel is stored for the network-only test
PATCH_SAMPLES = 3 * mconfig.SR  # short clips are zero-padded to one 3 s patch (as the port does)

# TF variable scope -> PyTorch module name, in graph-construction order (models.py build_musicnn).
CONVS = {  # TF conv2d scope -> (torch prefix, kind); kind "2d": NCHW conv, "1d": Conv1d over time
    "conv2d": ("timbral.0", "2d"),  # 7 x 38 (0.4 * 96 mel bands), 204 filters
    "conv2d_1": ("timbral.1", "2d"),  # 7 x 67 (0.7 * 96), 204 filters
    "conv2d_2": ("temporal.0", "2d"),  # 128 x 1, 51 filters
    "conv2d_3": ("temporal.1", "2d"),  # 64 x 1
    "conv2d_4": ("temporal.2", "2d"),  # 32 x 1
    "conv2d_5": ("midend.0", "1d"),  # 7 x 561 (whole front-end width) -> Conv1d(561, 64, 7)
    "conv2d_6": ("midend.1", "1d"),
    "conv2d_7": ("midend.2", "1d"),
}
BNS = {
    "batch_normalization": "input_bn",
    "batch_normalization_1": "timbral.0.bn",
    "batch_normalization_2": "timbral.1.bn",
    "batch_normalization_3": "temporal.0.bn",
    "batch_normalization_4": "temporal.1.bn",
    "batch_normalization_5": "temporal.2.bn",
    "batch_normalization_6": "midend.0.bn",
    "batch_normalization_7": "midend.1.bn",
    "batch_normalization_8": "midend.2.bn",
    "batch_normalization_9": "pool_bn",
    "batch_normalization_10": "dense_bn",
}
DENSES = {"dense": "dense", "dense_1": "out"}
BN_FIELDS = {  # TF batch-norm variable -> FrozenBatchNorm buffer
    "gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var",
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_prefix() -> str:
    # musicnn's checkpoints are saved with an empty file stem: "<dir>/.index", "<dir>/.data-*"
    return str(Path(musicnn.__file__).parent / MODEL) + "/"


def convert_weights(reader: tf.compat.v1.train.NewCheckpointReader) -> dict[str, np.ndarray]:
    """Checkpoint variables -> PyTorch-named, PyTorch-laid-out float32 arrays (all of them, or fail)."""
    out: dict[str, np.ndarray] = {}
    used = set()
    for scope, (name, kind) in CONVS.items():
        k = reader.get_tensor(f"{scope}/kernel")  # TF (kh, kw, in, out)
        if kind == "2d":
            w = k.transpose(3, 2, 0, 1)  # -> (out, in, kh, kw)
            out[f"{name}.conv.weight"] = w
        else:
            w = k[:, :, 0, :].transpose(2, 1, 0)  # (7, C, 1, out) -> (out, C, 7)
            out[f"{name}.conv.weight"] = w
        out[f"{name}.conv.bias"] = reader.get_tensor(f"{scope}/bias")
        used.update({f"{scope}/kernel", f"{scope}/bias"})
    for scope, name in BNS.items():
        for tf_field, torch_field in BN_FIELDS.items():
            out[f"{name}.{torch_field}"] = reader.get_tensor(f"{scope}/{tf_field}")
            used.add(f"{scope}/{tf_field}")
    for scope, name in DENSES.items():
        out[f"{name}.weight"] = reader.get_tensor(f"{scope}/kernel").T  # (in, out) -> (out, in)
        out[f"{name}.bias"] = reader.get_tensor(f"{scope}/bias")
        used.update({f"{scope}/kernel", f"{scope}/bias"})
    left = {k for k in reader.get_variable_to_shape_map() if "Adam" not in k and "power" not in k} - used
    if left:
        raise SystemExit(f"unconverted checkpoint variables: {sorted(left)}")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


class TFMusicnn:
    """musicnn's own graph (models.py) with the checkpoint restored strictly (no silent failure)."""

    def __init__(self, n_frames: int) -> None:
        tf.compat.v1.disable_eager_execution()
        tf.compat.v1.reset_default_graph()
        with tf.name_scope("model"):
            self.x = tf.compat.v1.placeholder(tf.float32, [None, n_frames, mconfig.N_MELS])
            self.is_training = tf.compat.v1.placeholder(tf.bool)
            y, *_feats, mean_pool, max_pool, penultimate = mmodels.define_model(
                self.x, self.is_training, MODEL, N_TAGS
            )
            self.fetch = {"taggram": tf.nn.sigmoid(y), "penultimate": penultimate,
                          "max_pool": max_pool, "mean_pool": mean_pool}
        self.sess = tf.compat.v1.Session()
        tf.compat.v1.train.Saver().restore(self.sess, checkpoint_prefix())

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.sess.run(self.fetch, feed_dict={self.x: batch, self.is_training: False})


def load_signals() -> dict[str, np.ndarray]:
    spec = importlib.util.spec_from_file_location("musicnn_signals", REPO / "tests" / "musicnn_signals.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_signals()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-weights", type=Path, default=REPO / "resources/eval/musicnn" / WEIGHTS_NAME)
    ap.add_argument("--out-fixture", type=Path, default=REPO / "tests" / "fixtures" / "musicnn_reference.npz")
    args = ap.parse_args()
    if int(np.__version__.split(".")[0]) != 1:
        raise SystemExit("run with numpy 1.x: musicnn's float16 log compression needs its promotion rules")

    # librosa < 0.10 padded the STFT by reflection; musicnn was trained with that.
    mel_reflect = functools.partial(librosa.feature.melspectrogram, pad_mode="reflect")
    librosa.feature.melspectrogram = mel_reflect

    to_frames = functools.partial(librosa.time_to_frames, sr=mconfig.SR, n_fft=mconfig.FFT_SIZE,
                                  hop_length=mconfig.FFT_HOP)
    n_frames = int(to_frames(3)) + 1  # as musicnn's extractor: 187
    step = int(to_frames(HOP_SECONDS))  # musicnn's `overlap` (really a hop): 61 for 1 s
    prefix = checkpoint_prefix()
    data_file = Path(prefix + ".data-00000-of-00001")
    provenance = {
        "source": f"musicnn {getattr(musicnn, '__version__', '0.1.0')} (PyPI), musicnn/{MODEL}/",
        "licence": "ISC, Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019",
        "checkpoint_data_sha256": sha256(data_file),
        "checkpoint_index_sha256": sha256(Path(prefix + ".index")),
        "converter": "packaging/tools/convert_musicnn.py",
    }

    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    weights = convert_weights(reader)
    n_values = sum(v.size for v in weights.values())
    args.out_weights.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(args.out_weights), metadata={**provenance, "n_values": str(n_values)})
    args.out_weights.chmod(0o644)
    print(f"wrote {args.out_weights} ({n_values} values, {args.out_weights.stat().st_size} bytes)")

    net = TFMusicnn(n_frames)
    fixture: dict[str, np.ndarray] = {}
    signals = load_signals()
    with tempfile.TemporaryDirectory() as tmp:
        for name, y in signals.items():
            fixture[f"{name}__stats"] = np.array([y.mean(), y.std(), np.abs(y).max()], dtype=np.float64)
            if y.size < PATCH_SAMPLES:
                y = np.pad(y, (0, PATCH_SAMPLES - y.size))
            wav = Path(tmp) / f"{name}.wav"
            sf.write(wav, y, mconfig.SR, subtype="FLOAT")
            batch, _ = mextractor.batch_data(str(wav), n_frames, step)  # musicnn's own front end
            if batch.dtype != np.float32 or not np.all(np.isfinite(batch)):
                raise SystemExit(f"{name}: musicnn front end gave {batch.dtype} / non-finite values")
            outs = net(batch)
            for key, val in outs.items():
                fixture[f"{name}__{key}"] = val.astype(np.float32)
            # cross-check: musicnn's unmodified extractor (batch size 1, its own graph and restore).
            # Its loop over patches 2.. appends the stale `penultimate_` of patch 1 (it unpacks the
            # fresh value as `backend_`), so only row 0 of its penultimate is comparable.
            worst = 0.0
            taggram, _, feats = mextractor.extractor(str(wav), model=MODEL, input_length=3,
                                                     input_overlap=HOP_SECONDS, extract_features=True)
            for key, ref, rows in (("taggram", taggram, None), ("penultimate", feats["penultimate"], 1),
                                   ("max_pool", feats["max_pool"], None),
                                   ("mean_pool", feats["mean_pool"], None)):
                ref = np.asarray(ref)[:rows]
                err = float(np.abs(ref - outs[key][:rows]).max() / max(1.0, np.abs(ref).max()))
                worst = max(worst, err)
                if err > 1e-5:  # oneDNN picks different conv algorithms for batch 1 and batch N
                    raise SystemExit(f"{name}/{key}: batched run differs from extractor() by {err}")
            print(f"{name}: {batch.shape[0]} patches, matches extractor() (max rel. diff {worst:.2e})")
            if name == NET_CHECK_SIGNAL:
                mel = librosa.feature.melspectrogram(y=y, sr=mconfig.SR, hop_length=mconfig.FFT_HOP,
                                                     n_fft=mconfig.FFT_SIZE, n_mels=mconfig.N_MELS).T
                fixture["net_patch_mel_f16"] = mel[:n_frames].astype(np.float16)
            if name == MEL_CHECK_SIGNAL:
                mel = librosa.feature.melspectrogram(y=y, sr=mconfig.SR, hop_length=mconfig.FFT_HOP,
                                                     n_fft=mconfig.FFT_SIZE, n_mels=mconfig.N_MELS)
                fixture["mel_power"] = mel[:, :MEL_CHECK_FRAMES].astype(np.float32)  # (96, frames)
    # the network-only check feeds this float16 mel; make sure it is what TF saw for that patch
    net_in = np.log10(10000 * fixture["net_patch_mel_f16"] + 1)[None]
    err = float(np.abs(net(net_in)["penultimate"] - fixture[f"{NET_CHECK_SIGNAL}__penultimate"][:1]).max())
    if err > 1e-5:
        raise SystemExit(f"net_patch_mel_f16 does not reproduce {NET_CHECK_SIGNAL}'s first patch ({err})")
    fixture["mel_basis"] = librosa.filters.mel(sr=mconfig.SR, n_fft=mconfig.FFT_SIZE, n_mels=mconfig.N_MELS)
    fixture["meta"] = np.array(json.dumps({
        **provenance, "hop_seconds": HOP_SECONDS, "step_frames": step, "n_frames": int(n_frames),
        "mel_check_signal": MEL_CHECK_SIGNAL, "net_check_signal": NET_CHECK_SIGNAL,
        "tensorflow": tf.__version__, "librosa": librosa.__version__, "numpy": np.__version__,
        "python": sys.version.split()[0],
    }))
    args.out_fixture.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out_fixture, **fixture)
    print(f"wrote {args.out_fixture} ({args.out_fixture.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
