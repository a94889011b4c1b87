"""`python -m node_agent` is `node-agent`."""

from node_agent.cli import main

raise SystemExit(main())
