"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a real
`cluster up --demo` with traffic from the official client: sign-in, every page with the
cluster's own data, admin actions from the page, its layout at a laptop's and a phone's width,
and its calls refused without a session or from another site. Screenshots go to
test-artifacts/dashboard/."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.harness import (
    AgentProcess,
    ClusterProcess,
    cli,
    deployed,
    peered_office,
    share_models,
    wait_for,
)

pytestmark = pytest.mark.timeout(600)

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
LAPTOP, PHONE = (1366, 768), (390, 844)
DATA_CALLS = ("/ui/api/overview", "/ui/api/traffic?range=hour", "/ui/api/money?range=day")

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def head(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[ClusterProcess]:
    """`cluster up --demo`, with some traffic sent through the official client."""
    root = tmp_path_factory.mktemp("dashboard")
    cluster = ClusterProcess(share_models(root / "head", demo_model_dir.parent), args=("--demo",))
    cluster.start(timeout=300)  # a loaded 2-core machine has taken over 180 s
    try:
        client = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused", max_retries=0)
        for i in range(4):
            client.chat.completions.create(
                model="demo",
                messages=[{"role": "user", "content": f"Count to {i + 3}."}],
                max_tokens=16,
            )
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium: Debian's, never a downloaded one."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is missing: `make tools` installs Debian's chromium")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def token(head: ClusterProcess) -> str:
    """The admin token `cluster up` made."""
    return (head.config_dir / "admin-token").read_text().strip()


def signed_in_page(
    browser: Any, head: ClusterProcess, size: tuple[int, int]
) -> tuple[Any, list[str]]:
    """A page signed in with the admin token, and the console errors it will collect."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{head.url}/ui/")
    page.fill("#token", token(head))
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector(".node")
    return page, errors


@contextlib.contextmanager
def session(head: ClusterProcess) -> Iterator[httpx.Client]:
    """An HTTP client holding a dashboard session (its cookies) and nothing else."""
    with httpx.Client(base_url=head.url, timeout=30) as client:
        r = client.post("/ui/api/sign-in", json={"token": token(head)})
        assert r.status_code == 200, r.text
        yield client


def test_without_the_session_every_dashboard_call_gets_a_401(head: ClusterProcess) -> None:
    for path in (*DATA_CALLS, "/admin/nodes", "/admin/keys"):
        r = httpx.get(f"{head.url}{path}", timeout=30)
        assert r.status_code == 401, path
        assert set(r.json()) == {"error"}, path
    forged = {"meterless_session": "9999999999.nonce.00", "meterless_csrf": "00"}
    r = httpx.get(f"{head.url}/ui/api/overview", cookies=forged, timeout=30)
    assert r.status_code == 401


def test_a_wrong_token_does_not_sign_in(head: ClusterProcess, browser: Any) -> None:
    r = httpx.post(f"{head.url}/ui/api/sign-in", json={"token": "ml-admin-wrong"}, timeout=30)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    page = browser.new_page()
    page.goto(f"{head.url}/ui/")
    page.fill("#token", "ml-admin-wrong")
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#sign-in-error:not([hidden])")
    assert "admin token" in page.inner_text("#sign-in-error")
    assert page.locator(".node").count() == 0
    page.close()


def test_the_session_cookie_is_httponly_strict_and_expires(head: ClusterProcess) -> None:
    r = httpx.post(f"{head.url}/ui/api/sign-in", json={"token": token(head)}, timeout=30)
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("meterless_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=" in cookie
    with session(head) as client:
        assert client.get("/ui/api/overview").status_code == 200
        client.post("/ui/api/sign-out", headers={"origin": head.url})
        assert client.get("/ui/api/overview").status_code == 401


def test_a_cross_site_change_is_refused(head: ClusterProcess) -> None:
    with session(head) as client:
        csrf = client.cookies["meterless_csrf"]
        no_token = client.post("/admin/keys", json={"name": "from-nowhere"})
        elsewhere = client.post(
            "/admin/keys",
            json={"name": "from-evil"},
            headers={"origin": "http://evil.example", "x-csrf-token": csrf},
        )
        assert (no_token.status_code, elsewhere.status_code) == (403, 403)
        assert (
            client.post(
                "/ui/api/sign-in",
                json={"token": token(head)},
                headers={"origin": "http://evil.example"},
            ).status_code
            == 403
        )
        names = [k["name"] for k in client.get("/admin/keys").json()["keys"]]
        assert "from-nowhere" not in names and "from-evil" not in names
        same = client.post(
            "/admin/keys", json={"name": "from-page"}, headers={"x-csrf-token": csrf}
        )
        assert same.status_code == 200 and same.json()["key"]


@pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_every_page_shows_the_clusters_data(
    head: ClusterProcess, browser: Any, size: tuple[int, int]
) -> None:
    page, errors = signed_in_page(browser, head, size)
    node = head.nodes()[0]["name"]
    shots = ARTIFACTS / f"{size[0]}x{size[1]}"
    shots.mkdir(parents=True, exist_ok=True)

    def visit(tab: str, ready: str) -> str:
        page.click(f"nav button[data-tab={tab}]")
        page.wait_for_selector(ready)
        page.screenshot(path=str(shots / f"{tab}.png"), full_page=True)
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{tab} overflows sideways: {width}"
        return str(page.inner_text("#page"))

    text = visit("overview", ".node")
    assert node in text and "demo" in text and "ready" in text
    tokens_per_s = page.inner_text(".totals .figure:nth-child(2) .value")
    assert float(tokens_per_s.replace(",", "")) > 0  # the traffic the fixture sent
    text = visit("models", "#models-body table")
    assert "demo" in text and node in text
    text = visit("traffic", "#traffic-body svg circle.point")
    assert "demo" in page.inner_text("#traffic-body .legend")
    assert page.locator("#traffic-body svg circle.point").count() > 10
    text = visit("money", "#money-body table")
    assert node in text and "cloud-equivalent" in text and "As of" in text
    assert page.locator("#money-body svg circle.point").count() > 10
    row = page.locator("#money-body tbody tr", has_text=node).first.inner_text()
    assert int(row.split("\t")[1].replace(",", "")) > 0  # its tokens
    visit("keys", "#keys-body")
    assert errors == []
    page.close()


def test_csv_export_holds_the_traffic(head: ClusterProcess) -> None:
    with session(head) as client:
        r = client.get("/ui/api/traffic", params={"range": "hour", "by": "model", "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    demo = [line.split(",") for line in r.text.splitlines() if ",demo," in line]
    assert sum(int(cells[2]) for cells in demo) >= 4


def confirm_dialog(page: Any) -> str:
    """Confirm the open confirmation dialog; what it said."""
    page.wait_for_selector("#confirm[open]")
    said = str(page.inner_text("#confirm"))
    page.click("#confirm-ok")
    return said


def test_drain_and_uncordon_from_the_page(head: ClusterProcess, browser: Any) -> None:
    page, errors = signed_in_page(browser, head, LAPTOP)
    page.click("nav button[data-tab=models]")
    page.click("button[data-action=drain]")
    assert "Drain" in confirm_dialog(page)
    wait_for(lambda: "draining" in cli(head, "nodes").stdout, 30, "the node to drain")
    page.click("button[data-action=uncordon]")
    confirm_dialog(page)
    wait_for(lambda: head.nodes()[0]["state"] == "ready", 30, "the node to be ready again")
    assert errors == []
    page.close()


def test_deploy_from_the_page_shows_its_placement_first(head: ClusterProcess, browser: Any) -> None:
    page, errors = signed_in_page(browser, head, LAPTOP)
    page.click("nav button[data-tab=models]")
    page.fill("#deploy-form input[name=model]", "demo")
    page.click("#deploy-form button[type=submit]")
    said = confirm_dialog(page)
    assert "1 replica(s)" in said and head.nodes()[0]["name"] in said
    wait_for(lambda: deployed(head).get("desired") == 1, 30, "the deployment")
    assert "demo" in cli(head, "models").stdout
    page.wait_for_selector("button[data-action=undeploy]")
    assert errors == []
    page.close()


def test_traffic_by_client_names_the_official_client(head: ClusterProcess) -> None:
    with session(head) as client:
        r = client.get("/ui/api/traffic", params={"range": "hour", "by": "client"})
    groups = r.json()["groups"]
    assert sum(groups["openai-python"]["requests"]) >= 4  # the fixture's traffic


def test_a_lost_node_raises_the_banner(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, browser: Any
) -> None:
    root = tmp_path_factory.mktemp("dashboard-lost")
    agents = [
        AgentProcess(
            share_models(root / name, demo_model_dir.parent),
            name=name,
            args=("--model", "demo", "--no-mdns"),
        )
        for name in ("desk-a", "desk-b")
    ]
    cluster = ClusterProcess(root / "head")
    cluster.data_dir.mkdir()
    with peered_office(cluster, agents) as (head, (_, victim)):
        page, errors = signed_in_page(browser, head, LAPTOP)
        assert page.is_hidden("#banner")
        victim.kill()
        page.wait_for_selector("#banner:not([hidden])", timeout=60_000)
        assert "desk-b is lost" in page.inner_text("#banner")
        page.screenshot(path=str(ARTIFACTS / "lost-node.png"))
        assert errors == []
        page.close()
