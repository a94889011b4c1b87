"""meterless controller and gateway: many nodes, one OpenAI-compatible endpoint."""

__version__ = "0.1.0"
