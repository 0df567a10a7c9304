"""Builds the whole app (store, session, player, playback, controller, window) in one call.

Used by `main()` and by the tests, which pass their own engine factory, output backend and data
folder. `backend="auto"` tries PortAudio and falls back to no playback with a readable reason.

A project switch (File > New / Open / Open Recent / Save As, `app.projects`) builds the same parts
again for the other folder -- a new window in the old one's place, the loaded model kept -- and
closes the old ones; the `Studio` object stays the same, so its owner notices nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from app.audio.backend import BackendUnavailable, OutputBackend, SoundDeviceBackend
from app.audio.player import Player
from app.controller import Controller
from app.engine import EngineFactory, real_pipeline
from app.main_window import MainWindow
from app.playback import Playback
from app.projects import ProjectError, RecentProjects, check_existing, check_new, project_name
from app.session import SessionModel
from app.store import SessionStore, StorageError, StoreLocked, default_data_dir
from melody_core import SAMPLE_RATE

log = logging.getLogger(__name__)
TITLE = "MeLoDy Studio"


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
class _Options:
    """What a project switch builds the next window with."""

    engine_factory: EngineFactory
    backend: OutputBackend | None  # opened once, shared by every project's player
    backend_reason: str
    threads: int | None
    theme_mode: str
    config_dir: Path | None  # per-user settings (None: the platform's)


@dataclass
class Studio:
    store: SessionStore
    session: SessionModel
    player: Player
    playback: Playback
    controller: Controller
    window: MainWindow
    options: _Options | None = None
    _retired: list[MainWindow] = field(default_factory=list, repr=False)  # closed; Qt deletes them later

    @classmethod
    def create(cls, data_dir: str | Path | None = None, engine_factory: EngineFactory = real_pipeline,
               backend: OutputBackend | str | None = "auto", bundle: str | None = None,
               device: str | None = None, threads: int | None = None, load_engine: bool = True,
               theme_mode: str = "system", config_dir: str | Path | None = None) -> Studio:
        from melody_core.audio.levels import preload

        preload()  # the limiter's and the loudness meter's imports, before the event loop runs
        store = SessionStore(default_data_dir() if data_dir is None else data_dir)
        out, reason = open_backend(backend)
        options = _Options(engine_factory, out, reason, threads, theme_mode,
                           None if config_dir is None else Path(config_dir))
        studio = cls._build(store, options)
        studio._install()
        window = studio.window
        if bundle is not None:
            window.panel.bundle.setText(bundle)
        if device is not None:
            idx = window.panel.device.findData(device)
            window.panel.device.setCurrentIndex(max(idx, 0))
        if load_engine:
            studio.controller.load_engine(window.panel.bundle_path(), window.panel.device_name())
        return studio

    @classmethod
    def _build(cls, store: SessionStore, options: _Options) -> Studio:
        """Everything above the store, for one project folder."""
        try:
            session = SessionModel(store)
        except BaseException:
            store.close()
            raise
        out = options.backend
        player = Player(out, SAMPLE_RATE, unavailable_reason=options.backend_reason)
        output_device = store.pref("output_device")
        if out is not None and output_device is not None:
            if any(d.index == output_device for d in out.devices()):
                player.set_device(output_device)
        playback = Playback(player, session)
        controller = Controller(session, playback, options.engine_factory,
                                options.threads or pipeline_threads())
        window = MainWindow(session, controller, playback, player, options.theme_mode)
        session.storage_message.connect(window.show_message)
        notices = session.startup_notices()  # recovered data, takes whose audio is missing
        if notices:
            window.show_message("warning", " ".join(notices))
        studio = cls(store, session, player, playback, controller, window, options)
        window.setWindowTitle(f"{project_name(store.folder)} — {TITLE}")
        window.setWindowFilePath(str(store.folder))
        RecentProjects(options.config_dir).add(store.folder)
        return studio

    def _install(self) -> None:
        from app.views.producer import install

        install(self)  # File > projects, Edit > Redo, Presets menu, Variations dock

    # ------------------------------------------------------------------ projects
    @property
    def project(self) -> Path:
        return self.store.folder

    def recent_projects(self) -> list[Path]:
        assert self.options is not None
        here = self.store.folder.absolute()
        return [p for p in RecentProjects(self.options.config_dir).list() if p != here]

    def open_project(self, folder: str | Path) -> None:
        """Switch to an existing project. Raises ProjectError (one line) and stays on this one when
        the folder is no project, is open in another window, or a generation is running."""
        self._switch(check_existing(folder))

    def new_project(self, folder: str | Path) -> None:
        """Create an empty project in `folder` (absent or empty) and switch to it."""
        target = check_new(folder, self.store.folder)
        self._check_idle()  # before the folder is made: a refusal leaves nothing behind
        try:
            target.mkdir(exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"cannot create {target}: {exc.strerror or exc}") from None
        self._switch(target)

    def save_project_as(self, folder: str | Path) -> None:
        """Copy this project (database through SQLite's backup API, audio and drag-out files) to a
        new folder and switch to the copy; the original stays as it was."""
        target = check_new(folder, self.store.folder)
        self._check_idle()
        if not self.session.flush():
            raise ProjectError("some work is not saved yet (the disk refused it): free some space first")
        try:
            self.store.copy_to(target)
        except StorageError as exc:
            raise ProjectError(str(exc)) from None
        self._switch(target)

    def _check_idle(self) -> None:
        if self.controller.busy:
            raise ProjectError("a generation is running: stop it before switching projects")

    def _switch(self, folder: Path) -> None:
        self._check_idle()
        if folder.absolute() == self.store.folder.absolute():
            return
        assert self.options is not None
        try:
            store = SessionStore(folder)  # the lock first: on refusal nothing here changes
        except StoreLocked as exc:
            raise ProjectError(str(exc)) from None
        except (StorageError, OSError) as exc:
            raise ProjectError(f"cannot open {folder}: {exc}") from None
        old = self.window
        old_engine, old_controller = self.controller.engine, self.controller
        panel = old.panel
        bundle, device = panel.bundle_path(), panel.device_name()
        new = self._build(store, self.options)
        new.window.setGeometry(old.geometry())  # the window stays where it was
        new.window.panel.bundle.setText(bundle or "")  # and the model with it
        new.window.panel.device.setCurrentIndex(max(new.window.panel.device.findData(device), 0))
        if old_engine is not None and not old_controller.loading:
            new.controller.adopt_engine(old_engine)
        else:
            new.controller.load_engine(bundle, device)
        new.window.show()
        self.close()  # the old window, controller, player and store
        old.deleteLater()  # not at once: the switch may run inside one of its menu actions
        self._retired.append(old)
        self.store, self.session, self.player = new.store, new.session, new.player
        self.playback, self.controller, self.window = new.playback, new.controller, new.window
        self._install()
        log.info("switched to project %s", folder)

    def close(self) -> None:
        self.window.close()
        self.controller.shutdown()
        self.player.shutdown()
        self.store.close()
