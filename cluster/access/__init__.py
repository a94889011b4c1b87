"""Who may do what: API keys, the admin token, the cluster secret on disk, exposure, the gate."""
