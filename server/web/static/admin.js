// The admin page: upload a document and watch it ingest, remove documents, change users.
"use strict";
(() => {
  const { api, errorOf, el } = window.RodeoAI;
  const $ = (id) => document.getElementById(id);
  const status = $("admin-status");
  const say = (text, error = false) => { status.textContent = text; status.classList.toggle("error", error); };

  async function* events(response) { // server-sent events from a fetch body
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message"; const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) yield { name, data: JSON.parse(data.join("\n")) };
      }
    }
  }

  $("upload").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("upload-file");
    if (!input.files.length) { say("Choose a file first.", true); return; }
    const body = new FormData();
    body.append("file", input.files[0]);
    const bar = $("ingest-progress"), text = $("ingest-text");
    $("ingest").hidden = false;
    bar.removeAttribute("value"); // indeterminate while the file travels
    text.textContent = "Uploading " + input.files[0].name + "…";
    say("");
    let response;
    try {
      response = await api("/api/admin/documents", { method: "POST", body });
    } catch (err) {
      say("Cannot reach the box; nothing was changed.", true);
      return;
    }
    if (!response.ok) { $("ingest").hidden = true; say((await errorOf(response)).message, true); return; }
    let source = "";
    try {
      for await (const { name, data } of events(response)) {
        if (name === "saved") { source = data.source; text.textContent = "Reading " + source + "…"; }
        if (name === "progress") {
          bar.max = Math.max(data.total, 1); bar.value = data.done;
          text.textContent = `${data.done} of ${data.total} chunks`;
        }
        if (name === "done") {
          bar.max = 1; bar.value = 1;
          const errors = data.errors || [];
          if (errors.length) { say(`${source}: ${errors[0].message}`, true); text.textContent = "Not added"; }
          else { const n = data.added_chunks; text.textContent = `Done: ${n} chunk${n === 1 ? "" : "s"} added`; say(`${source} is in the knowledge base.`); }
          await refreshDocuments();
          input.value = "";
          return;
        }
      }
      say("The connection dropped; ingestion goes on in the box. Reload to see the result.", true);
    } catch (err) {
      say("The connection dropped; ingestion goes on in the box. Reload to see the result.", true);
    }
  });

  async function refreshDocuments() {
    const response = await api("/api/admin/documents");
    if (!response.ok) return;
    const rows = (await response.json()).map((d) => el("tr", { "data-source": d.source },
      el("td", {}, el("code", { text: d.source })), el("td", { text: d.title }), el("td", { text: String(d.chunks) }),
      el("td", {}, el("button", { type: "button", className: "danger small", "data-remove": d.source, "aria-label": "Remove " + d.source, text: "Remove" }))));
    $("documents").tBodies[0].replaceChildren(...rows);
  }

  $("documents").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-remove]");
    if (!button) return;
    if (!button.dataset.confirm) {
      button.dataset.confirm = "1"; button.textContent = "Sure?";
      button.setAttribute("aria-label", "Confirm remove " + button.dataset.remove);
      return;
    }
    const response = await api("/api/admin/documents?source=" + encodeURIComponent(button.dataset.remove), { method: "DELETE" });
    if (!response.ok) { say((await errorOf(response)).message, true); return; }
    const removed = await response.json();
    say(`Removed ${button.dataset.remove} (${removed.removed_chunks} chunks).`);
    button.closest("tr").remove();
  });

  $("rebuild-index").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    say("Rebuilding the search index…");
    const response = await api("/api/admin/index/rebuild", { method: "POST" }).catch(() => null);
    button.disabled = false;
    if (!response) { say("Cannot reach the box; nothing was changed.", true); return; }
    if (!response.ok) { say((await errorOf(response)).message, true); return; }
    const done = await response.json();
    say(`Search index rebuilt: ${done.vectors} passages in ${done.seconds} s.`);
  });

  $("users").addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-save]");
    if (!button) return;
    const id = button.dataset.save;
    const body = { role: $("role-" + id).value, disabled: $("disabled-" + id).checked };
    const response = await api("/api/admin/users/" + id, { method: "PATCH", body: JSON.stringify(body) });
    say(response.ok ? "Saved." : (await errorOf(response)).message, !response.ok);
  });
})();
