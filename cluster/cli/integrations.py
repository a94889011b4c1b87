"""`cluster integrations [CLIENT]`: a working configuration for each client, to paste.

The guides are pure (`guides`): the endpoint, the models it serves and a key go in, text comes
out. The command asks the endpoint's `/v1/models` which models there are, as any client would.
Coding agents ask for their vendor's model names (Claude Code for `claude-…`, Codex for
`gpt-…`): each guide says which alias to set so that those names reach a local model.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from cluster.cli.admin_client import CliError, add_url, verify_for

KEY_ENV = "METERLESS_API_KEY"  # the variable every guide reads the key from
CLIENTS = ("claude-code", "codex", "opencode", "open-webui", "continue", "aider")


@dataclass(frozen=True)
class Guide:
    """How one client reaches the cluster: variables, files, aliases to set, the command."""

    client: str
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # path -> content
    aliases: dict[str, str] = field(default_factory=dict)  # name or glob -> model
    run: str = ""
    notes: tuple[str, ...] = ()


def guides(url: str, models: Sequence[str], key: str = "") -> dict[str, Guide]:
    """Every client's guide for the endpoint at `url` serving `models` (the first is the one
    the guides use); `key` is written where a client needs it, else ${METERLESS_API_KEY}."""
    if not models:
        raise ValueError("the cluster serves no model yet: `cluster deploy MODEL` first")
    base, model = url.rstrip("/"), models[0]
    secret = key or f"${{{KEY_ENV}}}"
    key_env = {KEY_ENV: key or "<a key from: cluster keys create NAME>"}
    return {
        g.client: g
        for g in (
            _claude_code(base, model, secret),
            _codex(base, model, key_env),
            _opencode(base, models, key_env),
            _open_webui(base, secret),
            _continue(base, model, key or "<your API key>"),
            _aider(base, model, secret),
        )
    }


def _claude_code(base: str, model: str, secret: str) -> Guide:
    return Guide(
        "claude-code",
        env={
            "ANTHROPIC_BASE_URL": base,
            "ANTHROPIC_AUTH_TOKEN": secret,
            "ANTHROPIC_MODEL": model,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "API_TIMEOUT_MS": "3000000",  # a long prompt on a small node takes a while
        },
        aliases={"claude-*": model},
        run="claude",
        notes=(
            "Claude Code speaks Anthropic Messages (/v1/messages), which meterless serves.",
            "The alias lets `/model` and any claude-… name reach the local model.",
        ),
    )


def _codex(base: str, model: str, key_env: dict[str, str]) -> Guide:
    config = f"""\
        model = "{model}"
        model_provider = "meterless"

        [model_providers.meterless]
        name = "meterless"
        base_url = "{base}/v1"
        wire_api = "responses"
        env_key = "{KEY_ENV}"
        """
    return Guide(
        "codex",
        env=key_env,
        files={"~/.codex/config.toml": textwrap.dedent(config)},
        aliases={"gpt-*": model},
        run="codex",
        notes=(
            "Codex speaks the Responses API (/v1/responses), stateless, as meterless serves it.",
        ),
    )


def _opencode(base: str, models: Sequence[str], key_env: dict[str, str]) -> Guide:
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "meterless": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "meterless",
                "options": {"baseURL": f"{base}/v1", "apiKey": f"{{env:{KEY_ENV}}}"},
                "models": {m: {"name": m} for m in models},
            }
        },
    }
    return Guide(
        "opencode",
        env=key_env,
        files={"opencode.json": json.dumps(config, indent=2) + "\n"},
        run=f"opencode --model meterless/{models[0]}",
    )


def _open_webui(base: str, secret: str) -> Guide:
    return Guide(
        "open-webui",
        env={"OPENAI_API_BASE_URL": f"{base}/v1", "OPENAI_API_KEY": secret},
        run=(
            "docker run -d -p 3000:8080 -e OPENAI_API_BASE_URL -e OPENAI_API_KEY "
            "-v open-webui:/app/backend/data ghcr.io/open-webui/open-webui:main"
        ),
        notes=("From inside Docker, 127.0.0.1 is the container: use the head's LAN address.",),
    )


def _continue(base: str, model: str, secret: str) -> Guide:
    config = f"""\
        name: meterless
        version: 1.0.0
        schema: v1
        models:
          - name: {model}
            provider: openai
            model: {model}
            apiBase: {base}/v1
            apiKey: {secret}
            roles: [chat, edit, apply, autocomplete]
        """
    return Guide("continue", files={"~/.continue/config.yaml": textwrap.dedent(config)})


def _aider(base: str, model: str, secret: str) -> Guide:
    return Guide(
        "aider",
        env={"OPENAI_API_BASE": f"{base}/v1", "OPENAI_API_KEY": secret},
        run=f"aider --model openai/{model}",
    )


def render(guide: Guide, url: str) -> str:
    """A guide as text to read and paste."""
    lines = [f"# {guide.client}"]
    lines += [f"# {note}" for note in guide.notes]
    lines += [f"export {name}={_quote(value)}" for name, value in guide.env.items()]
    for path, content in guide.files.items():
        lines += [f"# {path}:", content.rstrip("\n")]
    for name, model in guide.aliases.items():
        lines.append(f"cluster alias {_quote(name)} {model} --url {url}  # once, on the head")
    if guide.run:
        lines.append(guide.run)
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    # Double quotes: a ${METERLESS_API_KEY} in a value is the shell's to expand.
    return value if value.replace("-", "").replace("_", "").isalnum() else f'"{value}"'


def served_models(url: str, key: str) -> list[str]:
    """The models the endpoint serves to this key (aliases left out); CliError in one line."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.get(
            f"{url.rstrip('/')}/v1/models", headers=headers, timeout=30, verify=verify_for(url)
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the cluster at {url}: {exc}") from None
    if r.status_code != 200:
        raise CliError(f"{url}/v1/models: {r.status_code} (give a key with --key?)")
    return [m["id"] for m in r.json()["data"] if "alias_of" not in m]  # models, not aliases


def _integrations(args: argparse.Namespace) -> int:
    models = [args.model] if args.model else served_models(args.url, args.key)
    try:
        found = guides(args.url, models, args.key)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    chosen = [found[args.client]] if args.client else list(found.values())
    if args.json:
        print(json.dumps({g.client: asdict(g) for g in chosen}, indent=2))
    else:
        print("\n".join(render(g, args.url) for g in chosen), end="")
    return 0


def add_commands(sub: Any) -> None:
    """Register `integrations`."""
    p = sub.add_parser(
        "integrations",
        help="print a working configuration for Claude Code, Codex and other clients",
        description="Print, for each client (or the one named), the variables, files, "
        "aliases and command that point it at this cluster. Use the head's LAN address as "
        "--url for other machines.",
    )
    p.add_argument("client", nargs="?", choices=CLIENTS, help="only this client")
    add_url(p)
    p.add_argument("--model", help="the model to configure (default: the first one served)")
    p.add_argument(
        "--key",
        default=os.environ.get(KEY_ENV, ""),
        help=f"an API key to write into the configuration (default ${KEY_ENV}; without "
        "one, the configuration reads it from that variable)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_integrations)
