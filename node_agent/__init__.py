"""meterless node agent: serves one machine's models to the cluster over gRPC."""

__version__ = "0.1.0"
