"""Generate the gRPC stubs in node_agent/_proto from protos/, or check that they are current."""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "node_agent" / "_proto"
SOURCES = ("meterless/agent/v1/agent.proto",)


def generate(out: Path) -> None:
    """Run protoc for every source into `out`, with package-relative imports."""
    out.mkdir(parents=True, exist_ok=True)
    for src in SOURCES:
        args = [
            "protoc",
            f"-I{PROTOS}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(PROTOS / src),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {src}")
    for path in out.rglob("*_grpc.py"):
        # protoc writes absolute imports; the stubs live inside node_agent._proto.
        text = re.sub(
            r"^from meterless\.agent\.v1 import", "from . import", path.read_text(), flags=re.M
        )
        path.write_text(text)
    for d in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()


def differences(a: Path, b: Path) -> list[str]:
    """Paths of generated files that differ between two trees."""
    names = {p.relative_to(root) for root in (a, b) for p in root.rglob("*.py*")}

    def same(n: Path) -> bool:
        return (a / n).exists() and (b / n).exists() and filecmp.cmp(a / n, b / n, False)

    return sorted(str(n) for n in names if not same(n))


def main() -> int:
    """Entry point: regenerate, or with --check fail when the committed stubs are stale."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the stubs are not current")
    args = parser.parse_args()
    if not args.check:
        generate(OUT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = differences(Path(tmp), OUT)
    if stale:
        print("stale gRPC stubs (run `make protos`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
