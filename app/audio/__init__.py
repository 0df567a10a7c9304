"""Playback: a lock-free ring buffer and a sounddevice output stream fed from it."""
