"""Builds the whole app (store, session, player, playback, controller, window) in one call.

Used by `main()` and by the tests, which pass their own engine factory, output backend and data
folder. `backend="auto"` tries PortAudio and falls back to no playback with a readable reason.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from app.audio.backend import BackendUnavailable, OutputBackend, SoundDeviceBackend
from app.audio.player import Player
from app.controller import Controller
from app.engine import EngineFactory, real_pipeline
from app.main_window import MainWindow
from app.playback import Playback
from app.session import SessionModel
from app.store import SessionStore, default_data_dir
from melody_core import SAMPLE_RATE

log = logging.getLogger(__name__)



def pipeline_threads() -> int:
    """All cores but one: the GUI and audio threads keep a core to themselves."""
    return max(1, (os.cpu_count() or 1) - 1)


def open_backend(backend: OutputBackend | str | None) -> tuple[OutputBackend | None, str]:
    if backend != "auto":
        return (None, "disabled") if backend is None else (backend, "")  # type: ignore[return-value]
    try:
        return SoundDeviceBackend(), ""
    except BackendUnavailable as exc:
        log.warning("no audio output: %s", exc)
        return None, str(exc)


@dataclass
class Studio:
    store: SessionStore
    session: SessionModel
    player: Player
    playback: Playback
    controller: Controller
    window: MainWindow

    @classmethod
    def create(cls, data_dir: str | Path | None = None, engine_factory: EngineFactory = real_pipeline,
               backend: OutputBackend | str | None = "auto", bundle: str | None = None,
               device: str | None = None, threads: int | None = None, load_engine: bool = True,
               theme_mode: str = "system") -> Studio:
        from melody_core.audio.levels import preload

        preload()  # the limiter's and the loudness meter's imports, before the event loop runs
        store = SessionStore(default_data_dir() if data_dir is None else data_dir)
        session = SessionModel(store)
        out, reason = open_backend(backend)
        player = Player(out, SAMPLE_RATE, unavailable_reason=reason)
        output_device = store.pref("output_device")
        if out is not None and output_device is not None:
            if any(d.index == output_device for d in out.devices()):
                player.set_device(output_device)
        playback = Playback(player, session)
        controller = Controller(session, playback, engine_factory, threads or pipeline_threads())
        window = MainWindow(session, controller, playback, theme_mode)
        session.storage_message.connect(window.show_message)
        notices = session.startup_notices()  # recovered data, takes whose audio is missing
        if notices:
            window.show_message("warning", " ".join(notices))
        if bundle is not None:
            window.panel.bundle.setText(bundle)
        if device is not None:
            idx = window.panel.device.findData(device)
            window.panel.device.setCurrentIndex(max(idx, 0))
        if load_engine:
            controller.load_engine(window.panel.bundle_path(), window.panel.device_name())
        return cls(store, session, player, playback, controller, window)

    def close(self) -> None:
        self.window.close()
        self.controller.shutdown()
        self.player.shutdown()
        self.store.close()
