"""Make the README's dashboard pictures: docs/img/overview.png and docs/img/money.png.

    .venv/bin/python -m scripts.screenshots

Starts `cluster up --demo` in a scratch directory, gives its one node the cost profile of a
desk machine (an example: a demo node costs nothing by default), sends it some traffic with the
official client, and photographs two pages in headless chromium (Debian's, as the tests use).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import openai
from playwright.sync_api import sync_playwright

from tests.harness import ClusterProcess

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "img"
CHROMIUM = "/usr/bin/chromium"
EXAMPLE_COST = {
    "price_usd": 1499.0,
    "amortize_months": 36,
    "idle_watts": 7.0,
    "busy_watts": 40.0,
    "kwh_usd": 0.30,
}
SIZE = {"width": 1366, "height": 768}


def traffic(cluster: ClusterProcess, requests: int = 24) -> None:
    """Chat completions through the endpoint, as any OpenAI client sends them."""
    client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
    for i in range(requests):
        client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": f"Write a line about desk number {i}."}],
            max_tokens=48,
        )


def photograph(cluster: ClusterProcess) -> None:
    """Sign in and save the Overview and Money pages."""
    token = (cluster.config_dir / "admin-token").read_text().strip()
    IMAGES.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=SIZE)
        page.goto(f"{cluster.url}/ui/")
        page.fill("#token", token)
        page.click("#sign-in button[type=submit]")
        page.wait_for_selector(".node")
        page.wait_for_timeout(10_000)  # a few polls: the sparkline has points
        page.screenshot(path=str(IMAGES / "overview.png"))
        page.click("nav button[data-tab=money]")
        page.select_option("#range", "hour")
        page.wait_for_selector("#money-body svg circle.point")
        page.screenshot(path=str(IMAGES / "money.png"), full_page=True)
        browser.close()


def main() -> None:
    """Start, send, photograph, stop."""
    with tempfile.TemporaryDirectory(prefix="meterless-screenshots-") as tmp:
        cluster = ClusterProcess(Path(tmp), args=("--demo",))
        cluster.start()
        try:
            node = cluster.nodes()[0]["node_id"]
            r = httpx.post(
                f"{cluster.url}/admin/nodes/{node}/cost",
                json=EXAMPLE_COST,
                headers=cluster.admin_headers,
                timeout=30,
            )
            r.raise_for_status()
            traffic(cluster)
            photograph(cluster)
        finally:
            cluster.stop()
    print(f"wrote {IMAGES / 'overview.png'} and {IMAGES / 'money.png'}")


if __name__ == "__main__":
    main()
