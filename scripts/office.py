"""Start an office of N hosts on this machine (network namespaces, as root) and break it by hand.

    sudo .venv/bin/python -m scripts.office --hosts 3 [--dir DIR]

One namespace runs `cluster up`, each of the others a `node-agent` serving `demo`; they find each
other over mDNS on their own bridge. It prints the endpoint and how to get into each host, then
reads commands on stdin (`help` lists them). Ctrl-C (or `quit`) tears everything down.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from node_agent.demo_model import ensure_demo_model
from tests.harness import share_models
from tests.multihost import netns
from tests.multihost.office import AGENT_PORT, Agent, Head

HELP = """commands (NAME is a host):
  nodes                       the head's node table
  kill NAME | start NAME      SIGKILL the host's agent | start it again
  cut NAME | restore NAME     unplug the host's link | plug it back in
  impair NAME MS LOSS%        delay and drop what the host sends (impair NAME 0 0 heals)
  no-multicast NAME           drop multicast to and from the host
  kill-head | start-head      SIGKILL cluster up and its Ray | start it again (same data dir)
  quit"""


def build_parser() -> argparse.ArgumentParser:
    """The script's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.office",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--hosts", type=int, default=3, help="agent hosts (default 3)")
    parser.add_argument("--dir", type=Path, help="where data and logs go (default: a temp dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Build, print, take commands, tear down."""
    args = build_parser().parse_args(argv)
    if why := netns.usable():
        print(f"office: {why}", file=sys.stderr)
        return 2
    root = args.dir or Path(tempfile.mkdtemp(prefix="meterless-office-"))
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` tears down as Ctrl-C does
    netns.sweep()
    net = netns.Office()
    agents: dict[str, Agent] = {}
    head: Head | None = None
    try:
        models = ensure_demo_model(root / "shared").parent
        head = Head(net.add_host("head"), _mkdir(root / "head")).start()
        for i in range(1, args.hosts + 1):
            name = f"a{i}"
            host = net.add_host(name, wired=True)  # so that `impair` works on any of them
            agents[name] = Agent(host, share_models(root / name, models))
        print(f"starting Ray and {len(agents)} agents (a minute or two)...", flush=True)
        head.wait_up()
        for agent in agents.values():
            agent.start()
        for agent in agents.values():
            agent.wait_listening()
        _describe(net, head, agents, root)
        _repl(net, head, agents)
    except KeyboardInterrupt:
        pass
    finally:
        print("tearing down...", flush=True)
        for agent in agents.values():
            agent.kill()
        if head is not None:
            head.stop()
        net.close()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _describe(net: netns.Office, head: Head, agents: dict[str, Agent], root: Path) -> None:
    print(f"""
endpoint   {head.url}/v1   (from this shell: the root namespace is {net.client_address} on the LAN)
nodes      cluster nodes --url {head.url}
try        curl {head.url}/v1/chat/completions -H 'content-type: application/json' \\
             -d '{{"model": "demo", "messages": [{{"role": "user", "content": "Hi"}}]}}'
hosts      {net.hosts["head"].address:<15} head   ip netns exec {net.hosts["head"].ns} bash""")
    for name, agent in agents.items():
        print(
            f"           {agent.host.address:<15} {name:<6} ip netns exec {agent.host.ns} bash"
            f"   (agent on :{AGENT_PORT})"
        )
    print(f"logs       {root}/<host>/\n\n{HELP}", flush=True)


def _repl(net: netns.Office, head: Head, agents: dict[str, Agent]) -> None:
    actions: dict[str, Callable[..., object]] = {
        "nodes": lambda: print(json.dumps(head.nodes(), indent=1)),
        "kill": lambda n: agents[n].kill(),
        "start": lambda n: agents[n].start().wait_listening(),
        "cut": lambda n: net.cut(net.hosts[n]),
        "restore": lambda n: net.restore(net.hosts[n]),
        "impair": lambda n, ms, loss: net.impair(net.hosts[n], float(ms), float(loss)),
        "no-multicast": lambda n: net.block_multicast(net.hosts[n]),
        "kill-head": head.kill,
        "start-head": lambda: head.start().wait_up(),
    }
    for line in sys.stdin:
        words = shlex.split(line)
        if not words:
            continue
        if words[0] == "quit":
            return
        try:
            actions[words[0]](*words[1:])
            print("ok", flush=True)
        except (KeyError, TypeError):
            print(HELP, flush=True)
        except Exception as exc:  # a command that fails must not end the office
            print(f"error: {exc}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
