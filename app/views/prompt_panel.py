"""Left panel: prompt (with history and examples), style audio, seed, steps, guidance, length, model.

`settings()` turns the controls into `GenerationSettings` (seed None = random unless locked);
`apply_settings()` restores a take's settings (seed recall). While "keep playing" runs, prompt and
style-weight edits are reported (debounced) through `steer` so the stream follows them.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QKeyEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.views.dropzone import DropZone
from melody_core.generation import GenerationSettings
from melody_core.models.controls import prompt_with_controls

EXAMPLE_PROMPTS = (
    "A calm piano ballad with soft strings, slow tempo",
    "Upbeat funk groove with slap bass, brass stabs and tight drums",
    "Baroque chorale for organ, four voices, solemn",
    "Lo-fi hip hop beat with mellow electric piano and vinyl crackle",
    "Energetic drum and bass with a deep reese bass, 174 bpm",
    "Acoustic folk guitar fingerpicking, warm and intimate",
)
HISTORY_LIMIT = 30
COMBO_CHARS = 12  # visible characters of the prompt-history / example combos
STEER_DEBOUNCE_MS = 400
SEED_MAX = 2**31 - 1
ADHERENCE_DEFAULT = -0.25  # the "Prompt adherence" box at its minimum: the model's own LM guidance
DEVICES = (("Auto", "auto"), ("CPU", "cpu"), ("GPU (CUDA)", "cuda"))
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
KEYS = tuple(f"{n} {m}" for m in ("major", "minor") for n in NOTE_NAMES)
BPM_MAX = 300.0
TAP_WINDOW = 6  # taps averaged by "Tap"
TAP_RESET_S = 2.0  # a pause this long starts a new tap sequence


def musical_prompt(prompt: str | None, bpm: float | None, key: str | None) -> str | None:
    """The prompt with the BPM and key appended as text ("..., 92 bpm, A minor"): how they reach a
    model whose LM has no BPM/key condition tokens (core's `prompt_with_controls`)."""
    return prompt_with_controls(prompt, bpm, key)


class _CtrlEnterFilter(QObject):
    """The prompt editor would insert a newline for Ctrl+Enter: turn it into Generate instead."""

    def __init__(self, callback: Any) -> None:
        super().__init__()
        self._callback = callback

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and event.modifiers() & (
                    Qt.KeyboardModifier.ControlModifier):
                self._callback(bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier))
                return True
        return False


class PromptPanel(QWidget):
    generate_requested = Signal()
    keep_playing_requested = Signal()
    cancel_requested = Signal()
    model_requested = Signal(object, str)  # bundle path or None, device
    style_file_dropped = Signal(str)
    style_cleared = Signal()
    steer = Signal(str, float)  # prompt, style weight (debounced)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.explicit_controls: tuple[str, ...] = ()  # the loaded LM's controls (set_explicit_controls)
        layout = QVBoxLayout(self)
        # prompt
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Describe the music… (Ctrl+Enter to generate)")
        self.prompt.setMaximumHeight(110)
        self._filter = _CtrlEnterFilter(lambda shift: (self.keep_playing_requested if shift
                                                      else self.generate_requested).emit())
        self.prompt.installEventFilter(self._filter)
        self.history = QComboBox()
        self.history.setPlaceholderText("Recent prompts")
        self.history.activated.connect(lambda i: self.prompt.setPlainText(self.history.itemText(i)))
        self.examples = QComboBox()
        self.examples.setPlaceholderText("Examples")
        self.examples.addItems(EXAMPLE_PROMPTS)
        self.examples.activated.connect(lambda i: self.prompt.setPlainText(EXAMPLE_PROMPTS[i]))
        for combo in (self.history, self.examples):  # long prompts must not widen the panel
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(COMBO_CHARS)
        pick = QHBoxLayout()
        pick.addWidget(self.history, 2)
        pick.addWidget(self.examples, 1)
        layout.addWidget(QLabel("<b>Prompt</b>"))
        layout.addWidget(self.prompt)
        layout.addLayout(pick)
        # style audio
        self.drop = DropZone()
        self.drop.file_dropped.connect(self.style_file_dropped)
        self.drop.cleared.connect(self.style_cleared)
        self.weight = QSlider(Qt.Orientation.Horizontal)
        self.weight.setRange(0, 100)
        self.weight.setValue(50)
        self.weight.setToolTip("How much the style audio counts against the text prompt")
        weight_row = QHBoxLayout()
        weight_row.addWidget(QLabel("Text"))
        weight_row.addWidget(self.weight)
        weight_row.addWidget(QLabel("Audio"))
        layout.addWidget(self.drop)
        layout.addLayout(weight_row)
        layout.addWidget(self._settings_box())
        layout.addWidget(self._model_box())
        # actions
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate a new segment (Ctrl+Enter)")
        self.generate_button.clicked.connect(self.generate_requested)
        self.keep_button = QPushButton("Keep playing")
        self.keep_button.setToolTip("Generate endlessly while playing; edit the prompt to steer "
                                    "(Ctrl+Shift+Enter)")
        self.keep_button.clicked.connect(self.keep_playing_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Cancel the running generation (Esc)")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_requested)
        actions = QHBoxLayout()
        for b in (self.generate_button, self.keep_button, self.cancel_button):
            actions.addWidget(b)
        layout.addLayout(actions)
        layout.addStretch(1)
        self._steer_timer = QTimer(self, singleShot=True, interval=STEER_DEBOUNCE_MS)
        self._steer_timer.timeout.connect(lambda: self.steer.emit(self._prompt() or "", self.style_weight()))
        self.prompt.textChanged.connect(self._steer_timer.start)
        self.weight.valueChanged.connect(self._steer_timer.start)

    def _settings_box(self) -> QGroupBox:
        box = QGroupBox("Settings")
        form = QFormLayout(box)
        self.seed = QSpinBox()
        self.seed.setRange(0, SEED_MAX)
        self.seed_lock = QCheckBox("Lock")
        self.seed_lock.setToolTip("Locked: reuse this seed. Unlocked: a new random seed each time")
        copy = QToolButton(text="Copy")
        copy.setToolTip("Copy the seed (Ctrl+Shift+C)")
        copy.clicked.connect(self.copy_seed)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.seed_lock)
        seed_row.addWidget(copy)
        self.steps = QSpinBox()
        self.steps.setRange(1, 200)
        self.steps.setValue(10)
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 10.0)
        self.guidance.setSingleStep(0.25)
        self.guidance.setValue(2.5)
        self.guidance.setToolTip("Diffusion classifier-free guidance (ρ, §5.1)")
        self.adherence = QDoubleSpinBox()  # semantic LM guidance; the minimum means the model's default
        self.adherence.setRange(ADHERENCE_DEFAULT, 10.0)
        self.adherence.setSingleStep(0.25)
        self.adherence.setSpecialValueText("model default")
        self.adherence.setValue(ADHERENCE_DEFAULT)
        self.adherence.setToolTip("Semantic LM guidance: how closely the music follows the prompt "
                                  "(1 = off, higher = closer, less varied)")
        self.length = QDoubleSpinBox()
        self.length.setRange(1.0, 600.0)
        self.length.setSuffix(" s")
        self.length.setValue(10.0)
        form.addRow("Seed", seed_row)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)
        form.addRow("Prompt adherence", self.adherence)
        form.addRow("Length", self.length)
        self.bpm = QDoubleSpinBox()
        self.bpm.setRange(0.0, BPM_MAX)
        self.bpm.setDecimals(1)
        self.bpm.setSpecialValueText("off")
        self.bpm.setToolTip("Tempo: added to the prompt text, tagged in exported files (ACID tempo)")
        tap = QToolButton(text="Tap")
        tap.setToolTip("Tap the beat to set the tempo")
        tap.clicked.connect(self.tap_tempo)
        self._taps: list[float] = []
        bpm_row = QHBoxLayout()
        bpm_row.addWidget(self.bpm, 1)
        bpm_row.addWidget(tap)
        self.key = QComboBox()
        self.key.addItem("off", None)
        for k in KEYS:
            self.key.addItem(k, k)
        self.key.setToolTip("Key: added to the prompt text and to exported files' tags")
        form.addRow("BPM", bpm_row)
        form.addRow("Key", self.key)
        return box

    def tap_tempo(self, now: float | None = None) -> None:
        import time

        t = time.monotonic() if now is None else now
        if self._taps and t - self._taps[-1] > TAP_RESET_S:
            self._taps = []
        self._taps = [*self._taps, t][-TAP_WINDOW:]
        if len(self._taps) >= 2:
            beat = (self._taps[-1] - self._taps[0]) / (len(self._taps) - 1)
            self.bpm.setValue(round(min(BPM_MAX, 60.0 / beat), 1))

    def set_explicit_controls(self, controls: tuple[str, ...]) -> None:
        """The loaded model's LM controls ("bpm", "key"): those fields then set the settings' `bpm` /
        `key` instead of being written into the prompt text."""
        self.explicit_controls = tuple(controls)
        for field, name in ((self.bpm, "bpm"), (self.key, "key")):
            how = "the model's tempo/key control" if name in controls else "added to the prompt text"
            field.setToolTip(f"{name.upper() if name == 'bpm' else 'Key'}: {how}, tagged in exported files")

    def _prompt(self) -> str | None:
        """The prompt text sent to the model: with the BPM / key fields the LM has no control for."""
        bpm, key = self.musical()
        ctl = self.explicit_controls
        return musical_prompt(self.prompt_text() or None, None if "bpm" in ctl else bpm,
                              None if "key" in ctl else key)

    def musical(self) -> tuple[float | None, str | None]:
        """(BPM or None, key or None)."""
        return (self.bpm.value() or None), self.key.currentData()

    def _model_box(self) -> QGroupBox:
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.bundle = QLineEdit()
        self.bundle.setPlaceholderText("bundled model")
        browse = QToolButton(text="…")
        browse.clicked.connect(self._browse_bundle)
        row = QHBoxLayout()
        row.addWidget(self.bundle, 1)
        row.addWidget(browse)
        self.device = QComboBox()
        for label, value in DEVICES:
            self.device.addItem(label, value)
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(
            lambda: self.model_requested.emit(self.bundle_path(), self.device_name()))
        self.engine_label = QLabel("no model")
        self.engine_label.setWordWrap(True)
        dev_row = QHBoxLayout()
        dev_row.addWidget(self.device, 1)
        dev_row.addWidget(self.load_button)
        form.addRow("Bundle", row)
        form.addRow("Device", dev_row)
        form.addRow(self.engine_label)
        return box

    def _browse_bundle(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model bundle folder")
        if path:
            self.bundle.setText(path)

    # ------------------------------------------------------------------ values
    def prompt_text(self) -> str:
        return self.prompt.toPlainText().strip()

    def style_weight(self) -> float:
        return self.weight.value() / 100.0

    def lm_guidance(self) -> float | None:
        value = self.adherence.value()
        return None if value <= ADHERENCE_DEFAULT else value

    def bundle_path(self) -> str | None:
        return self.bundle.text().strip() or None

    def device_name(self) -> str:
        return str(self.device.currentData())

    def settings(self) -> GenerationSettings:
        bpm, key = self.musical()
        ctl = self.explicit_controls
        return GenerationSettings(prompt=self._prompt(),
                                  bpm=bpm if "bpm" in ctl else None, key=key if "key" in ctl else None,
                                  style_audio_path=self.drop.path,
                                  style_weight=self.style_weight(), seconds=self.length.value(),
                                  seed=self.seed.value() if self.seed_lock.isChecked() else None,
                                  steps=self.steps.value(), guidance=self.guidance.value(),
                                  lm_guidance=self.lm_guidance(),
                                  # live playback: the first window grows chunk by chunk, so the
                                  # first sound comes after one chunk's steps, not the whole window's
                                  start="progressive")

    def apply_settings(self, settings: dict[str, Any]) -> None:
        """Restore every control from a take's settings (the seed is locked to reproduce it)."""
        self.prompt.setPlainText(settings.get("prompt") or "")
        self.weight.setValue(round(100 * float(settings.get("style_weight", 0.5))))
        self.length.setValue(float(settings.get("seconds", self.length.value())))
        self.steps.setValue(int(settings.get("steps", self.steps.value())))
        self.guidance.setValue(float(settings.get("guidance", self.guidance.value())))
        lm_guidance = settings.get("lm_guidance")
        self.adherence.setValue(ADHERENCE_DEFAULT if lm_guidance is None else float(lm_guidance))
        if settings.get("bpm"):
            self.bpm.setValue(float(settings["bpm"]))
        if settings.get("key"):
            idx = self.key.findData(settings["key"])
            if idx >= 0:
                self.key.setCurrentIndex(idx)
        if settings.get("seed") is not None:
            self.seed.setValue(int(settings["seed"]))
            self.seed_lock.setChecked(True)

    def set_seed(self, seed: int) -> None:
        if not self.seed_lock.isChecked():
            self.seed.setValue(seed)

    def copy_seed(self) -> None:
        QGuiApplication.clipboard().setText(str(self.seed.value()))

    def remember_prompt(self, prompt: str | None) -> None:
        if not prompt:
            return
        idx = self.history.findText(prompt)
        if idx >= 0:
            self.history.removeItem(idx)
        self.history.insertItem(0, prompt)
        while self.history.count() > HISTORY_LIMIT:
            self.history.removeItem(self.history.count() - 1)
        self.history.setCurrentIndex(-1)

    def prompts(self) -> list[str]:
        return [self.history.itemText(i) for i in range(self.history.count())]

    def set_busy(self, busy: bool, kind: str = "") -> None:
        self.generate_button.setEnabled(not busy)
        self.keep_button.setEnabled(not busy)
        self.load_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.cancel_button.setText("Stop" if kind == "stream" else "Cancel")
