// Plan actions on the billing page, through the JSON API with the session cookie. With a
// Stripe publishable key the page also loads Stripe.js: the card goes from Stripe's own
// field to Stripe, and only the payment method's id comes to this box.
"use strict";
(() => {
  const { api, errorOf } = window.RodeoAI;
  const actions = document.getElementById("billing-actions");
  const status = document.getElementById("billing-status");
  const field = document.getElementById("card-element");
  const done = {
    subscribe: "Subscription started. Pro begins when the payment is confirmed.",
    purchase: "Order placed. Credits arrive when the payment is confirmed.",
    cancel: "Pro will end at the close of the paid period.",
    resume: "Pro continues.",
  };
  let stripe = null, card = null;
  if (field) {
    if (window.Stripe) {
      stripe = window.Stripe(field.dataset.key);
      card = stripe.elements().create("card");
      card.mount(field);
    } else {
      status.textContent = "Card entry needs a connection to Stripe, which this device does not have. Pay at the office instead.";
    }
  }

  async function pay(action) {
    // The card becomes a payment method at Stripe; this box only sees its id.
    if (!card) return { body: "{}" };
    if (action === "subscribe") {
      const made = await stripe.createPaymentMethod({ type: "card", card });
      if (made.error) return { error: made.error.message };
      return { body: JSON.stringify({ payment_method: made.paymentMethod.id }) };
    }
    return { body: "{}" };
  }

  actions?.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    button.disabled = true;
    status.textContent = "Working…";
    const paying = action === "subscribe" || action === "purchase";
    const prepared = paying ? await pay(action) : {};
    if (prepared.error) { button.disabled = false; status.textContent = prepared.error; return; }
    const response = await api("/api/billing/" + action, { method: "POST", body: prepared.body });
    if (!response.ok) { button.disabled = false; status.textContent = (await errorOf(response)).message; return; }
    if (action === "purchase" && card) {
      // Stripe confirms the payment with the card, asking the bank for 3-D Secure if needed.
      const order = await response.json();
      const confirmed = await stripe.confirmCardPayment(order.client_secret, { payment_method: { card } });
      button.disabled = false;
      status.textContent = confirmed.error ? confirmed.error.message : done.purchase;
      return;
    }
    button.disabled = false;
    status.textContent = done[action];
    if (action === "cancel" || action === "resume") window.location.reload();
  });
})();
