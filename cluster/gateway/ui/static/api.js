// The calls the pages make: the dashboard's data calls and the admin API, with the session
// cookie; a change carries the CSRF token the sign-in set in a cookie the page can read.

export class SignedOut extends Error {}

function csrf() {
  const match = document.cookie.match(/(?:^|; )meterless_csrf=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function reason(r) {
  try {
    const body = await r.json();
    return body.error?.message || body.detail || `${r.status} ${r.statusText}`;
  } catch {
    return `${r.status} ${r.statusText}`;
  }
}

async function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") {
    init.headers["x-csrf-token"] = csrf();
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body ?? {});
  }
  const r = await fetch(path, init);
  if (r.status === 401) throw new SignedOut(await reason(r));
  if (!r.ok) throw new Error(await reason(r));
  return r.json();
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);

export async function signIn(token) {
  const r = await fetch("/ui/api/sign-in", {
    method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ token }),
  });
  if (!r.ok) throw new Error(await reason(r));
}

export async function signOut() {
  await fetch("/ui/api/sign-out", { method: "POST", credentials: "same-origin" });
}
