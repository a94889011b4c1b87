"""`cluster cost plan`: would a machine pay for itself? The arithmetic, shown step by step.

The demand is declared (`--monthly-tokens`) or read from the ledger's last 30 days through the
admin API; the machine is declared; the cloud prices come from the price table in force on this
machine (cluster/ledger/prices.py). Everything else is cluster/ledger/plan.py.
"""

from __future__ import annotations

import argparse
import json
import re
from fractions import Fraction
from typing import Any

from cluster.cli.admin_client import CliError, add_url, admin_get
from cluster.ledger import prices
from cluster.ledger.cost import SECONDS_PER_DAY, Price, Profile
from cluster.ledger.plan import Demand, Machine, Plan, num, plan, usd
from cluster.paths import config_dir

LEDGER_DAYS = 30
_NUMBER = re.compile(r"^\d+(\.\d+)?$")

EXAMPLES = """\
examples:
  cluster cost plan --monthly-tokens 200000000,40000000 --price 2000 --watts 60 \\
      --tokens-per-s 40 --kwh-usd 0.30 --model gpt-4o
  cluster cost plan --price 2000 --watts 60 --tokens-per-s 40   # demand: the last 30 days
"""


def add_plan(cost: argparse.ArgumentParser) -> None:
    """Register `cost plan` under `cost`."""
    actions = cost.add_subparsers(dest="action", metavar="ACTION")
    p = actions.add_parser(
        "plan",
        help="months to breakeven and the monthly saving of buying a machine",
        description="Would buying a machine pay for itself against renting the same tokens? "
        "Prints every step of the arithmetic, with the numbers it used.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--monthly-tokens",
        metavar="IN,OUT",
        help=f"prompt and completion tokens a month (default: the ledger's last {LEDGER_DAYS} "
        "days, scaled to a month)",
    )
    p.add_argument("--price", required=True, metavar="USD", help="what the machine costs")
    p.add_argument("--watts", required=True, metavar="W", help="its power while generating")
    p.add_argument(
        "--tokens-per-s", required=True, metavar="N", help="completion tokens it generates a second"
    )
    p.add_argument("--idle-watts", default="0", metavar="W", help="its power when idle (default 0)")
    p.add_argument(
        "--kwh-usd",
        metavar="USD",
        help="electricity price per kWh (default, with the ledger's demand: the highest of "
        "the cluster's nodes; required with --monthly-tokens)",
    )
    months = Profile().amortize_months
    p.add_argument(
        "--amortize-months",
        default=str(months),
        metavar="MONTHS",
        help=f"months the price is written off over (default {months}, as for nodes)",
    )
    p.add_argument("--model", help="the cloud model to compare with (default: the table's default)")
    add_url(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """`cluster cost plan`."""
    table = prices.load(config_dir())
    reference = args.model or table.default
    if reference not in table.prices:
        raise CliError(f"no price for {reference!r}; the table has: {', '.join(table.prices)}")
    kwh = None if args.kwh_usd is None else exact(args.kwh_usd, "--kwh-usd")
    if args.monthly_tokens is not None:
        if kwh is None:
            raise CliError("give --kwh-usd, the electricity price per kWh, with --monthly-tokens")
        demand = declared(args.monthly_tokens)
    else:
        demand, kwh = from_ledger(args.url, kwh)
    machine = Machine(
        price_usd=exact(args.price, "--price"),
        watts=exact(args.watts, "--watts"),
        idle_watts=exact(args.idle_watts, "--idle-watts"),
        tokens_per_s=exact(args.tokens_per_s, "--tokens-per-s", positive=True),
        kwh_usd=kwh,
        amortize_months=exact(args.amortize_months, "--amortize-months", positive=True),
    )
    price = table.prices[reference]
    result = plan(demand, machine, reference, price)
    if args.json:
        print(json.dumps(plan_json(result, machine, reference, price, table.as_of), indent=2))
    else:
        print(plan_text(result, machine, reference, price, table.as_of))
    return 0


def exact(text: str, flag: str, *, positive: bool = False) -> Fraction:
    """A decimal the admin typed, exactly; CliError names the flag when it is not one."""
    if not _NUMBER.match(text.strip()) or (positive and Fraction(text.strip()) == 0):
        what = "a positive number" if positive else "a number, 0 or more"
        raise CliError(f"{flag} {text!r}: give {what} (e.g. 2000 or 0.30)")
    return Fraction(text.strip())


def declared(text: str) -> Demand:
    """`IN,OUT` tokens a month."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise CliError(f"--monthly-tokens {text!r}: give IN,OUT, e.g. 200000000,40000000")
    prompt, completion = (Fraction(int(p)) for p in parts)
    if completion == 0:
        raise CliError("--monthly-tokens: give some completion tokens; the plan sizes by them")
    return Demand(prompt=prompt, completion=completion)


def from_ledger(url: str, kwh: Fraction | None) -> tuple[Demand, Fraction]:
    """The ledger's last 30 days of tokens, and the kWh price (the nodes' highest if not given)."""
    data = admin_get(url, f"/admin/cost?since={LEDGER_DAYS}d")
    tokens = data["total"]["tokens"]
    if not tokens["completion"]:
        raise CliError(
            f"the ledger has no completion tokens in the last {LEDGER_DAYS} days; "
            "give --monthly-tokens IN,OUT"
        )
    if kwh is None:
        kwh = max((Fraction(n["profile"]["kwh_usd"]) for n in data["nodes"]), default=Fraction(0))
        if not kwh:
            raise CliError("no node has an electricity price; give --kwh-usd")
    window = Fraction(LEDGER_DAYS * SECONDS_PER_DAY)
    demand = Demand(
        prompt=Fraction(tokens["prompt"]),
        completion=Fraction(tokens["completion"]),
        window_s=window,
    )
    return demand, kwh


def plan_text(p: Plan, m: Machine, reference: str, price: Price, as_of: str) -> str:
    """The plan for people: the inputs, each step numbered, then the verdict."""
    lines = [
        f"machine: {usd(m.price_usd)}, {num(m.watts)} W generating, {num(m.idle_watts)} W idle, "
        f"{num(m.tokens_per_s)} completion tokens/s; electricity {usd(m.kwh_usd)}/kWh; "
        f"written off over {num(m.amortize_months)} months",
        f"rented: {reference} at {usd(price.input)} in, {usd(price.output)} out per million "
        f"tokens (price table as of {as_of})",
        "",
    ]
    for i, s in enumerate(p.steps, 1):
        unit = f" {s.unit}" if s.unit and s.unit != "USD" else ""
        value = usd(s.value) if s.unit == "USD" else f"{num(s.value)}{unit}"
        lines.append(f"{i:>2}. {s.label} = {s.formula} = {value}")
    return "\n".join([*lines, "", *verdict(p, m)])


def verdict(p: Plan, m: Machine) -> list[str]:
    """What the steps come to, in words: capacity, saving, breakeven."""
    out = []
    if not p.fits:
        out.append(
            f"CAPACITY: at {num(m.tokens_per_s)} tokens/s the machine cannot serve this demand: "
            f"it serves {num(p.served_share * 100)}% of it, and the rest stays rented"
        )
    if p.breakeven_months is None:
        loss = usd(-p.monthly_saving_usd)
        out.append(
            f"NEVER breaks even: its electricity costs {loss} a month more than renting these "
            "tokens does"
            if p.monthly_saving_usd
            else "NEVER breaks even: its electricity costs what renting these tokens does"
        )
        return out
    within = "within" if p.breakeven_months <= m.amortize_months else "AFTER"
    out.append(f"saves {usd(p.monthly_saving_usd)} a month before the write-off")
    out.append(
        f"breaks even in {num(p.breakeven_months)} months, {within} the "
        f"{num(m.amortize_months)}-month write-off"
    )
    return out


def plan_json(p: Plan, m: Machine, reference: str, price: Price, as_of: str) -> dict[str, Any]:
    """The plan as JSON: every step's value as a number and exactly (`n/d`)."""
    return {
        "machine": {k: str(getattr(m, k)) for k in m.__dataclass_fields__},
        "reference": {
            "model": reference,
            "input": str(price.input),
            "output": str(price.output),
            "as_of": as_of,
        },
        "steps": [
            {
                "key": s.key,
                "label": s.label,
                "formula": s.formula,
                "value": float(s.value),
                "exact": str(s.value),
                "unit": s.unit,
            }
            for s in p.steps
        ],
        "fits": p.fits,
        "served_share": float(p.served_share),
        "monthly_saving_usd": float(p.monthly_saving_usd),
        "breaks_even": p.breakeven_months is not None,
        "breakeven_months": None if p.breakeven_months is None else float(p.breakeven_months),
        "verdict": verdict(p, m),
    }
