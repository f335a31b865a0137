// The experiments page: start one from the form, stop it, promote a variant.
"use strict";
(() => {
  const { api, errorOf } = window.RodeoAI;
  const $ = (id) => document.getElementById(id);
  const status = $("experiments-status");
  const say = (text, error = false) => { status.textContent = text; status.classList.toggle("error", error); };

  // One variant from its fieldset: empty fields keep the server's defaults.
  function variantOf(fieldset) {
    const value = (name) => fieldset.querySelector(`[name="${name}"]`).value.trim();
    const variant = { name: value("name"), weight: Number(value("weight") || 1),
      prompt_style: value("prompt_style"), retrieval: value("retrieval") };
    if (value("backend")) variant.backend = value("backend");
    if (value("model")) variant.model = value("model");
    if (value("top_k")) variant.top_k = Number(value("top_k"));
    return variant;
  }

  async function post(path, body, done) {
    const response = await api(path, { method: "POST", body: JSON.stringify(body) }).catch(() => null);
    if (!response) { say("Cannot reach the box; nothing was changed.", true); return; }
    if (!response.ok) { say((await errorOf(response)).message, true); return; }
    say(done);
    window.location.reload();
  }

  const form = $("start-experiment");
  if (form) {
    $("add-variant").addEventListener("click", () => {
      const all = form.querySelectorAll("fieldset.variant");
      if (all.length >= 6) { say("At most six variants.", true); return; }
      const copy = all[0].cloneNode(true); // a fresh variant: every field at its default
      copy.querySelectorAll("input").forEach((input) => { input.value = input.defaultValue; });
      copy.querySelectorAll("select").forEach((select) => { select.selectedIndex = 0; });
      copy.querySelector("legend").textContent = `Variant ${all.length + 1}`;
      copy.querySelector('[name="name"]').value = `variant-${all.length + 1}`;
      $("variants").append(copy);
      copy.querySelector('[name="name"]').focus();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const name = $("experiment-name").value.trim();
      if (!name) { say("Give the experiment a name.", true); $("experiment-name").focus(); return; }
      const variants = [...form.querySelectorAll("fieldset.variant")].map(variantOf);
      post("/api/admin/experiments", { name, variants }, "Started.");
    });
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-stop], button[data-promote]");
    if (!button) return;
    const id = button.closest("[data-experiment]").dataset.experiment;
    if (button.dataset.promote !== undefined) {
      post(`/api/admin/experiments/${id}/promote`, { variant: button.dataset.promote },
        `${button.dataset.promote} now answers every question.`);
    } else {
      post(`/api/admin/experiments/${id}/stop`, {}, "Stopped.");
    }
  });
})();
