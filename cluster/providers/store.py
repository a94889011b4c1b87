"""Providers on the head's disk: `providers.json` in the config dir, and each key in its own file.

    <config dir>/providers.json          the providers, no keys (mode 0600)
    <config dir>/provider-keys/NAME      NAME's key alone (mode 0600, directory 0700)
    <config dir>/routes.json             models served by a provider (`cluster route`)

Keys are kept apart so that the list can be read, printed and shipped to the gateways while a
key is read only where a request is sent to its provider. Every write goes to a new owner-only
file that then replaces the old one, so a reader never sees half a file and a key is never,
even briefly, readable by others.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from cluster.ledger.cost import Price
from cluster.paths import private_dir, write_private
from cluster.providers.specs import (
    Provider,
    ProviderError,
    Route,
    check_name,
    check_route,
    from_json,
    provider_json,
    route_from_json,
    route_json,
)

logger = logging.getLogger(__name__)

FILE_NAME = "providers.json"
ROUTES_FILE = "routes.json"
KEYS_DIR = "provider-keys"


def load(directory: Path) -> list[Provider]:
    """The providers stored in `directory`, by name; none when there is no file yet."""
    path = directory / FILE_NAME
    try:
        data = json.loads(path.read_text())
        return sorted((from_json(p) for p in data["providers"]), key=lambda p: p.name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ProviderError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderError(f"{path} is malformed ({type(exc).__name__}: {exc})") from None


def prices_by_provider(directory: Path) -> dict[str, Mapping[str, Price]]:
    """Each provider's list prices, for the ledger's reports; none when they cannot be read."""
    try:
        return {p.name: p.prices for p in load(directory)}
    except ProviderError as exc:
        logger.error("rented requests unpriced: %s", exc)
        return {}


def has_key(directory: Path, name: str) -> bool:
    """Whether `name` has a key file (its content is not read)."""
    return (directory / KEYS_DIR / check_name(name)).is_file()


def key(directory: Path, name: str) -> str:
    """`name`'s key; ProviderError if it is missing or others could read it."""
    path = directory / KEYS_DIR / check_name(name)
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise ProviderError(f"cannot read {name}'s key {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProviderError(f"{path} is open to other users; run `chmod 600 {path}`")
    return text


def put(directory: Path, provider: Provider, api_key: str) -> None:
    """Store `provider` with its key, replacing one of the same name (and its key)."""
    keys = private_dir(private_dir(directory) / KEYS_DIR)
    _replace(keys / provider.name, api_key + "\n")
    others = [p for p in load(directory) if p.name != provider.name]
    _save(directory, [*others, provider])


def remove(directory: Path, name: str) -> Provider:
    """Forget the provider `name` and delete its key; ProviderError if there is none."""
    providers = load(directory)
    found = [p for p in providers if p.name == name]
    if not found:
        known = ", ".join(p.name for p in providers) or "none"
        raise ProviderError(f"no provider named {name!r}; providers: {known}")
    used = [r.model for r in routes(directory) if r.provider == name]
    if used:
        raise ProviderError(f"{name} serves {', '.join(used)}; `cluster route rm` those first")
    _save(directory, [p for p in providers if p.name != name])
    (directory / KEYS_DIR / check_name(name)).unlink(missing_ok=True)
    return found[0]


def routes(directory: Path) -> list[Route]:
    """The models routed to providers, by model; none when there is no file yet."""
    path = directory / ROUTES_FILE
    try:
        data = json.loads(path.read_text())
        rows = [route_from_json(r) for r in data["routes"]]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ProviderError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderError(f"{path} is malformed ({type(exc).__name__}: {exc})") from None
    return sorted(rows, key=lambda r: r.model)


def put_route(directory: Path, route: Route) -> Route:
    """Route `route.model` to its provider, replacing the model's route if it had one."""
    check_route(route, load(directory))
    _save_routes(directory, [*(r for r in routes(directory) if r.model != route.model), route])
    return route


def remove_route(directory: Path, model: str) -> Route:
    """Stop routing `model` to a provider; ProviderError if it was not."""
    rows = routes(directory)
    found = [r for r in rows if r.model == model]
    if not found:
        known = ", ".join(r.model for r in rows) or "none"
        raise ProviderError(f"no route for {model!r}; routed models: {known}")
    _save_routes(directory, [r for r in rows if r.model != model])
    return found[0]


def _save_routes(directory: Path, rows: list[Route]) -> None:
    body = {"routes": [route_json(r) for r in sorted(rows, key=lambda r: r.model)]}
    _replace(private_dir(directory) / ROUTES_FILE, json.dumps(body, indent=2) + "\n")


def _save(directory: Path, providers: list[Provider]) -> None:
    rows = []
    for p in sorted(providers, key=lambda p: p.name):
        row = provider_json(p, key_set=True)
        del row["key_set"]  # derived from the key file when read, never stored
        rows.append(row)
    _replace(private_dir(directory) / FILE_NAME, json.dumps({"providers": rows}, indent=2) + "\n")


def _replace(path: Path, text: str) -> None:
    """Write `path` whole, owner-only from the start, by renaming a new file over it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_private(tmp, text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ProviderError(f"cannot write {path}: {exc.strerror}") from None
