"""Files a DAW reads: WAV/FLAC, 16/24-bit, 24/44.1/48 kHz, mono/dual-mono, ID3 + bext + ACID + smpl,
Vorbis comments -- each file read back by a separate process with soundfile and mutagen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from melody_core.audio import read_metadata, save_audio
from melody_core.audio.daw_tags import daw_fields, root_note

META = {"prompt": "warm lofi piano, vinyl crackle", "seed": "1234", "model_hash": "f7d891487849",
        "model_name": "tiny-cpu", "settings": json.dumps({"steps": 12, "guidance": 2.5, "bpm": 92,
                                                           "key": "A minor"})}

READER = r"""
import json, sys, struct
import soundfile as sf, mutagen
path = sys.argv[1]
info = sf.info(path)
tags = mutagen.File(path)
out = {"rate": info.samplerate, "channels": info.channels, "subtype": info.subtype,
       "frames": info.frames, "tags": {k: str(v) for k, v in (tags.tags or {}).items()}}
chunks = {}
data = open(path, "rb").read()
if data[:4] == b"RIFF":
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos+4].decode("latin-1"), struct.unpack("<I", data[pos+4:pos+8])[0]
        chunks[cid] = data[pos+8:pos+8+size].hex()
        pos += 8 + size + (size & 1)
out["chunks"] = chunks
print(json.dumps(out))
"""


def read_in_other_process(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", READER, str(path)], capture_output=True, text=True,
                          check=True, timeout=60)
    return json.loads(done.stdout)


def tone(rate: int, seconds: float = 1.0) -> torch.Tensor:
    t = np.arange(int(rate * seconds)) / rate
    return torch.from_numpy((0.5 * np.sin(2 * np.pi * 330 * t)).astype(np.float32))


@pytest.mark.parametrize(("name", "subtype", "rate", "channels"), [
    ("a.wav", "PCM_16", 48_000, 2), ("b.wav", "PCM_24", 44_100, 1), ("c.flac", "PCM_24", 24_000, 2),
    ("d.flac", "PCM_16", 48_000, 1)])
def test_file_and_tags_read_by_another_process(tmp_path: Path, name: str, subtype: str, rate: int,
                                               channels: int) -> None:
    p = save_audio(tmp_path / name, tone(rate), rate, META, subtype=subtype, channels=channels)
    got = read_in_other_process(p)
    assert (got["rate"], got["channels"], got["subtype"], got["frames"]) == (rate, channels, subtype, rate)
    assert read_metadata(p) == META  # our own JSON round trip still holds
    tags = got["tags"]
    if name.endswith(".wav"):
        assert tags["TIT2"] == META["prompt"] and tags["TBPM"] == "92" and tags["TKEY"] == "A minor"
        for field, value in (("seed", "1234"), ("steps", "12"), ("guidance", "2.5"), ("model", "tiny-cpu"),
                             ("model_hash", "f7d891487849")):
            assert tags[f"TXXX:{field}"] == value
        bext = bytes.fromhex(got["chunks"]["bext"])
        assert bext[:256].rstrip(b"\0").decode().startswith("warm lofi piano, vinyl crackle | seed 1234")
        assert bext[256:288].rstrip(b"\0") == b"MeLoDy Studio"
        acid = bytes.fromhex(got["chunks"]["acid"])
        flags, root, _, _, beats, den, num, tempo = __import__("struct").unpack("<IHHfIHHf", acid)
        assert tempo == 92.0 and root == 69 and (num, den) == (4, 4) and beats == round(92 / 60)
        assert "smpl" not in got["chunks"]  # not a loop
        assert list(got["chunks"]).index("bext") < list(got["chunks"]).index("data")
    else:
        assert tags["title"] == f"['{META['prompt']}']" and tags["bpm"] == "['92']"
        assert tags["melody_seed"] == "['1234']" and tags["melody_model_hash"] == "['f7d891487849']"
        assert tags["melody_steps"] == "['12']" and tags["melody_guidance"] == "['2.5']"


def test_loop_gets_smpl_loop_points_and_no_bpm_means_no_acid(tmp_path: Path) -> None:
    import struct

    p = save_audio(tmp_path / "loop.wav", tone(24_000, 2.0), 24_000, META, subtype="PCM_24",
                   loop=(0, 48_000))
    chunks = read_in_other_process(p)["chunks"]
    smpl = bytes.fromhex(chunks["smpl"])
    assert struct.unpack("<I", smpl[28:32])[0] == 1
    assert struct.unpack("<6I", smpl[36:60])[2:4] == (0, 47_999)  # inclusive end, as the format wants
    flags = struct.unpack("<I", bytes.fromhex(chunks["acid"])[:4])[0]
    assert flags & 0x04 and not flags & 0x01  # a stretchable loop, not a one-shot
    plain = {k: v for k, v in META.items() if k != "settings"}
    q = save_audio(tmp_path / "plain.wav", tone(24_000), 24_000, plain)
    chunks = read_in_other_process(q)["chunks"]
    assert "acid" not in chunks and "bext" in chunks and "id3 " in chunks


def test_fields_and_root_notes() -> None:
    assert daw_fields(META)["bpm"] == "92" and daw_fields({"prompt": "x"}) == {"prompt": "x"}
    assert [root_note(k) for k in ("A minor", "F#m", "Eb major", "h", "")] == [69, 66, 63, None, None]
