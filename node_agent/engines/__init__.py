"""Inference engines. Each engine is one module named after it, implementing `base.Engine`."""
