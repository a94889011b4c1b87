"""Desired state: deployment specs and their store, pure placement and planning, the deploy loop."""
