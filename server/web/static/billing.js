// Plan actions on the billing page, through the JSON API with the session cookie.
"use strict";
(() => {
  const { api, errorOf } = window.RodeoAI;
  const actions = document.getElementById("billing-actions");
  const status = document.getElementById("billing-status");
  const done = {
    subscribe: "Subscription started. Pro begins when the payment is confirmed.",
    purchase: "Order placed. Credits arrive when the payment is confirmed.",
    cancel: "Pro will end at the close of the paid period.",
    resume: "Pro continues.",
  };
  actions?.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    button.disabled = true;
    status.textContent = "Working…";
    const body = action === "subscribe" || action === "purchase" ? "{}" : undefined;
    const response = await api("/api/billing/" + action, { method: "POST", body });
    button.disabled = false;
    status.textContent = response.ok ? done[action] : (await errorOf(response)).message;
    if (response.ok && (action === "cancel" || action === "resume")) window.location.reload();
  });
})();
