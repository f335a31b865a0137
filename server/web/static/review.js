// The review queue: each form saves one expert review, and the answer leaves the queue.
"use strict";
(() => {
  const { api, errorOf } = window.RodeoAI;
  const status = document.getElementById("review-status");
  document.getElementById("queue").addEventListener("submit", async (event) => {
    const form = event.target.closest("form.review-form");
    if (!form) return;
    event.preventDefault();
    const item = form.closest("[data-answer]");
    const data = new FormData(form);
    if (!data.get("rating")) { status.textContent = "Choose a rating first."; form.rating.focus(); return; }
    const body = { rating: Number(data.get("rating")) };
    for (const field of ["corrected_answer", "knowledge_gap", "note"]) {
      const value = String(data.get(field) || "").trim();
      if (value) body[field] = value;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const response = await api("/api/review/" + item.dataset.answer, { method: "POST", body: JSON.stringify(body) });
    button.disabled = false;
    if (!response.ok) { status.textContent = (await errorOf(response)).message; return; }
    status.textContent = "Review saved.";
    item.remove();
  });
})();
