// Reads the token from the link's fragment (never sent to the server in a URL), posts it once,
// and lets the server set an HttpOnly cookie; then forgets the fragment and opens the tasks.
"use strict";
(async () => {
  const status = document.getElementById("status");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", "/login");
  if (!token) { status.textContent = "No token in this link."; return; }
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
})();
