// Sign-in: the token goes in a JSON POST body (never a URL); the answer sets an HttpOnly cookie.
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token");
  const error = document.getElementById("error");
  error.textContent = "";
  const r = await fetch("/console/login", {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({token: input.value}),
  });
  input.value = "";
  if (r.ok) { location.replace("/"); return; }
  error.textContent = r.status === 401 ? "Wrong token." : "Sign-in failed (" + r.status + ").";
});
