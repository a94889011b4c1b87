"""The controller: finds node agents, admits them, watches their status, derives the node table."""
