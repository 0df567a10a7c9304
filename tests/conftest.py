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

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
