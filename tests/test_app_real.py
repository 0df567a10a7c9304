"""The app on the real `MelodyPipeline` with a random tiny bundle: generate, extend, inpaint, a bundle
that fails validation, time to first sound, and a responsive GUI thread while torch works."""

from __future__ import annotations

import json
import shutil

import numpy as np
from app_fake_audio import FakeBackend
from app_fixtures import (  # noqa: F401, E501
    WAIT_MS,
    counting,
    generate,
    make_studio,
    run_job,
    ticks_during_generation,
    tiny_bundle,
)

from app.engine import real_pipeline
from melody_core import SAMPLE_RATE
from melody_core.generation.jobs import INPAINT_CROSSFADE_S

SR = SAMPLE_RATE


def test_real_pipeline_generate_extend_inpaint(qtbot, make_studio, tiny_bundle):  # noqa: ANN001, F811
    studio = make_studio(factory=real_pipeline, bundle=str(tiny_bundle), device="cpu",
                         backend=FakeBackend(speed=4.0))
    assert studio.controller.engine.model_hash[:12] in studio.window.panel.engine_label.text()
    first = generate(qtbot, studio, "calm piano", 2.0, steps=4)
    take = studio.session.take(first)
    assert len(studio.session.audio(first)) == 2 * SR and np.isfinite(studio.session.audio(first)).all()
    assert take.metadata["model_hash"] == studio.controller.engine.model_hash
    assert take.metadata["seed"] == take.seed
    assert studio.controller.last_first_sound_ms is not None  # measured through the (fake) device
    studio.window.panel.length.setValue(1.0)
    ext = run_job(qtbot, studio, lambda: studio.window.extend(0))
    assert studio.session.take_ids == [first, ext] and len(studio.session.audio(ext)) == SR
    before = studio.session.audio(first).copy()
    studio.window.arrangement.set_selection((0.5, 1.5))
    new = run_job(qtbot, studio, lambda: studio.window.inpaint(0))
    after = studio.session.audio(new)
    fade = round(INPAINT_CROSSFADE_S * SR)  # the core's crossfades just outside the region
    np.testing.assert_array_equal(after[: SR // 2 - fade], before[: SR // 2 - fade])
    np.testing.assert_array_equal(after[3 * SR // 2 + fade :], before[3 * SR // 2 + fade :])
    assert not np.array_equal(after[SR // 2: 3 * SR // 2], before[SR // 2: 3 * SR // 2])
    assert studio.session.take_ids == [new, ext]


def test_real_bundle_that_fails_validation(qtbot, make_studio, tiny_bundle, tmp_path):  # noqa: ANN001, F811
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    manifest = json.loads((bad / "config.json").read_text())
    manifest["components"]["dpd"]["sha256"] = "0" * 64  # a tampered tensor file
    (bad / "config.json").write_text(json.dumps(manifest))
    studio = make_studio(factory=real_pipeline, bundle=str(bad), device="cpu", wait=False)
    qtbot.waitUntil(lambda: not studio.controller.loading, timeout=WAIT_MS)
    msg = studio.window.messages.text()
    assert studio.controller.engine is None and msg.startswith("cannot load") and "bad" in msg
    studio.window.panel.bundle.setText(str(tmp_path / "missing"))
    studio.window.panel.load_button.click()
    qtbot.waitUntil(lambda: not studio.controller.loading, timeout=WAIT_MS)
    assert "missing" in studio.window.messages.text()


def test_gui_responsive_during_real_generation(qtbot, make_studio, tiny_bundle):  # noqa: ANN001, F811
    """The GUI thread's timer keeps firing between the real pipeline's events (ordering, not wall time)."""
    studio = make_studio(factory=counting(real_pipeline), bundle=str(tiny_bundle), device="cpu")
    panel = studio.window.panel
    panel.prompt.setPlainText("busy torch")
    panel.length.setValue(6.0)
    panel.steps.setValue(8)
    seen, total = ticks_during_generation(qtbot, studio, studio.window.generate)
    during = sorted({n for n in seen if 0 < n < total})
    print(f"GUI timer ticks: {len(seen)}, at {len(during)} distinct points of {total} pipeline events")
    assert total > 10 and len(during) >= 5, f"GUI thread blocked: ticks at pipeline events {during}"
