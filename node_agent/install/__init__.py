"""Running the agent and the head as services: systemd units, launchd jobs, and their install."""
