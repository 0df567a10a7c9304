"""The MeLoDy model family. Component table: `melody_core.config.COMPONENTS`."""
