"""Test environment: CPU only, no display, no sound card, offline."""

import os
import tempfile

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # unset/empty aborts Qt in a headless run
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# per-user settings (recent projects, presets) of every test run go to a throwaway folder, never ~/.config
os.environ["MELODY_STUDIO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="melody-test-config-")

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same global RNG states, whatever ran before it: a trainer test seeds
    python's `random` (train.state.seed_all), and the app's random seeds then depended on test order
    (two random takes of the fake pipeline share a tone for 1 seed pair in 440; CI hit one)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
