"""The `cluster` command: `cluster up` starts the head; the rest are thin calls to the admin API."""
