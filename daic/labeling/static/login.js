// Reads the token from the link's fragment (never sent to the server in a URL), posts it once,
// and lets the server set an HttpOnly cookie; then forgets the fragment and opens the tasks.
// Runs on load and when only the fragment changes (a login link opened on this very page).
"use strict";
async function login() {
  const status = document.getElementById("status");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (!token) { status.textContent = "No token in this link."; return; }
  history.replaceState(null, "", "/login");
  status.textContent = "Logging in…";
  const res = await fetch("/api/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: token }),
  });
  if (!res.ok) {
    status.textContent = `Login refused: ${(await res.json()).error}`;
    status.className = "error";
    return;
  }
  location.replace("/");
}
window.addEventListener("hashchange", login);
login();
