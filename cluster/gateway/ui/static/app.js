// The dashboard's single page: sign-in, tabs, and the overview poll every few seconds that
// keeps every page live. Each page module renders from data and owns nothing else.

import { SignedOut, get, signIn, signOut } from "./api.js";
import * as overview from "./overview.js";
import * as models from "./models.js";
import * as traffic from "./traffic.js";
import * as money from "./money.js";
import * as keys from "./keys.js";

const PAGES = { overview, models, traffic, money, keys };
const POLL_MS = 3000;
const HISTORY = 40; // sparkline points kept per node

const state = { tab: "overview", overview: null, history: {}, timer: null };
const $ = (id) => document.getElementById(id);

function showSignIn(message) {
  clearTimeout(state.timer);
  $("tabs").hidden = $("sign-out").hidden = true;
  $("banner").hidden = true;
  $("page").replaceChildren();
  $("sign-in").hidden = false;
  $("sign-in-error").hidden = !message;
  $("sign-in-error").textContent = message || "";
}

function banner(data) {
  const lost = data.nodes.filter((n) => ["lost", "rejected", "incompatible"].includes(n.state));
  const lines = [...data.controller.problems,
    ...lost.map((n) => `node ${n.name} is ${n.state}${n.reason ? `: ${n.reason}` : ""}`)];
  $("banner").hidden = lines.length === 0;
  $("banner").textContent = lines.join(" · ");
}

function remember(data) {
  for (const n of data.nodes) {
    const h = (state.history[n.node_id] ||= []);
    h.push(n.decode_tps || 0);
    if (h.length > HISTORY) h.shift();
  }
}

async function poll() {
  try {
    const data = await get("/ui/api/overview");
    state.overview = data;
    remember(data);
    banner(data);
    PAGES[state.tab].refresh?.($("page"), state);
  } catch (err) {
    if (err instanceof SignedOut) return showSignIn();
    $("banner").hidden = false;
    $("banner").textContent = `The head is not answering: ${err.message}`;
  }
  state.timer = setTimeout(poll, POLL_MS);
}

function show(tab) {
  state.tab = tab;
  for (const b of $("tabs").querySelectorAll("button")) b.classList.toggle("active", b.dataset.tab === tab);
  location.hash = tab;
  PAGES[tab].render($("page"), state);
}

async function start() {
  $("sign-in").hidden = true;
  $("tabs").hidden = $("sign-out").hidden = false;
  const tab = location.hash.slice(1);
  state.tab = tab in PAGES ? tab : "overview";
  clearTimeout(state.timer);
  await poll();
  show(state.tab);
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await signIn($("token").value);
    $("token").value = "";
    await start();
  } catch (err) {
    showSignIn(err.message);
  }
});
$("sign-out").addEventListener("click", async () => { await signOut(); showSignIn(); });
for (const b of $("tabs").querySelectorAll("button")) b.addEventListener("click", () => show(b.dataset.tab));

// Signed in (as far as the page can tell: the CSRF cookie is there) → start; a stale session
// comes back as a 401 from the first poll, which shows the sign-in.
if (document.cookie.includes("meterless_csrf=")) start(); else showSignIn();
