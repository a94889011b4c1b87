// One confirmation dialog for every admin action: what will happen, then Confirm or Cancel.

import { h } from "./dom.js";

export function confirm(title, ...body) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-body").replaceChildren(...body.map((b) => (b instanceof Node ? b : h("p", {}, b))));
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}
