// Shared by every page script: the CSRF token and one fetch helper for the JSON API.
"use strict";
window.RodeoAI = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

  // Same-origin fetch with the session cookie and the CSRF header. When the access cookie
  // has expired, renew it once with the refresh cookie and try again.
  async function api(path, options = {}, renewed = false) {
    const headers = { "X-CSRF-Token": csrf, ...(options.headers || {}) };
    // JSON bodies are strings; a FormData body sets its own multipart type.
    if (typeof options.body === "string" && !headers["Content-Type"]) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { credentials: "same-origin", ...options, headers });
    if (response.status === 401 && !renewed) {
      const body = await response.clone().json().catch(() => ({}));
      if (body?.error?.code === "invalid_token") {
        const again = await fetch("/web/session/refresh", {
          method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
        });
        const state = await again.json().catch(() => ({}));
        if (state.signed_in) return api(path, options, true);
        window.location.reload(); // signed out elsewhere: show the page as a guest
      }
    }
    return response;
  }

  // The API's one error shape: {"error": {"code", "message"}}.
  async function errorOf(response) {
    const body = await response.json().catch(() => null);
    const error = body?.error || { code: "http_" + response.status, message: response.statusText };
    error.status = response.status;
    error.retryAfter = Number(response.headers.get("Retry-After")) || 0;
    return error;
  }

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  return { csrf, api, errorOf, el };
})();
