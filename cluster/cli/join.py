"""`cluster join-token`: what an agent needs to join this cluster, as one copy-pasteable string.

Run on the head (it reads the secret from the config dir). The token is the secret itself, so it
goes to stdout only, for the admin to hand to `node-agent --join-token` or METERLESS_JOIN_TOKEN.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator

from cluster.access import secret_store
from cluster.cli.admin_client import CliError
from cluster.paths import config_dir
from node_agent.trust import encode_token


@contextlib.contextmanager
def secret_errors() -> Iterator[None]:
    """Turn a secret file problem into the CLI's one-line error."""
    try:
        yield
    except secret_store.SecretFileError as exc:
        raise CliError(str(exc)) from None


def _join_token(args: argparse.Namespace) -> int:
    with secret_errors():
        secret, created = secret_store.load_or_create(config_dir())
    if created:
        print(
            f"created the cluster secret in {config_dir() / secret_store.FILE_NAME}",
            file=sys.stderr,
        )
    token = encode_token(secret)
    if args.json:
        print(json.dumps({"join_token": token, "cluster": secret.fingerprint}))
    else:
        print(token)
    return 0


def add_join_token(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `cluster join-token`."""
    p = sub.add_parser(
        "join-token",
        help="print the token agents need to join this cluster",
        description="Print the join token (the cluster secret and the fingerprint of the "
        "cluster's certificate). Agents started with `node-agent --join-token TOKEN` "
        "(or METERLESS_JOIN_TOKEN) serve over TLS and accept calls only from this "
        "cluster; the controller admits only them. Keep it like a password. Creates "
        "the secret if `cluster up` has not yet.",
    )
    p.add_argument("--json", action="store_true", help="print JSON with the cluster fingerprint")
    p.set_defaults(func=_join_token)
