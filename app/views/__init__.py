"""Widgets of the main window: waveform/arrangement, prompt panel, transport, history."""
