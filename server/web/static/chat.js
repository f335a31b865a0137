// The chat page: streams an answer over SSE, then shows the checked answer rendered by the
// server, with citation chips that open the cited passage. The question is never lost: on
// any failure it goes back into the box with a Retry button.
"use strict";
(() => {
  const { api, errorOf, el } = window.RodeoAI;
  const $ = (id) => document.getElementById(id);
  const main = $("main"), thread = $("thread"), form = $("ask"), question = $("question");
  const send = $("send"), stop = $("stop"), statusLine = $("status"), skill = $("skill");
  const dialog = $("passage"), list = $("chat-list");
  const signedIn = Boolean(list);
  let conversationId = Number(main.dataset.conversation) || null;
  let controller = null;
  const guestTurns = []; // a guest's earlier exchange, sent along for follow-up questions

  // --- status line -------------------------------------------------------------------
  function say(text, { error = false, retry = null, link = null } = {}) {
    statusLine.replaceChildren(text);
    statusLine.classList.toggle("error", error);
    if (link) statusLine.append(" ", el("a", { href: link.href, text: link.text }));
    if (retry) {
      const button = el("button", { type: "button", text: "Retry" });
      button.addEventListener("click", retry);
      statusLine.append(button);
    }
  }

  function busy(on) {
    send.disabled = on;
    stop.hidden = !on;
    question.setAttribute("aria-busy", on ? "true" : "false");
  }

  // --- messages ----------------------------------------------------------------------
  function addUser(text) {
    $("welcome")?.remove();
    const node = el("article", { className: "msg user" }, el("p", { text }));
    thread.append(node);
    return node;
  }

  function addAnswer() {
    const body = el("div", { className: "body" }, el("p", { className: "draft" }));
    const node = el("article", { className: "msg assistant streaming" }, body);
    thread.append(node);
    node.scrollIntoView({ block: "end" });
    return node;
  }

  function sourceList(sources) {
    const items = sources.map((s) => {
      const button = el("button", {
        type: "button", className: "source" + (s.cited ? " cited" : ""),
        "data-n": s.n, "data-chunk": s.chunk_id,
      }, el("span", { className: "n", text: String(s.n) }), " " + s.title);
      if (s.location) button.append(" ", el("span", { className: "muted", text: "· " + s.location }));
      return el("li", {}, button);
    });
    return el("ol", { className: "sources", "aria-label": "Sources" }, ...items);
  }

  function metaLine(answer) {
    const parts = [answer.backend, answer.model, answer.latency_ms + " ms"];
    const removed = new Set((answer.dropped || []).map((d) => `dropped '${d.sentence}': ${d.reason}`));
    const skipped = (answer.skipped_backends || [])
      .filter((s) => !removed.has(s.reason)) // listed under the answer instead
      .map((s) => `${s.backend}: ${s.reason}`);
    let text = parts.filter(Boolean).join(" · ");
    if (skipped.length) text += " · skipped " + skipped.join("; ");
    if (answer.replaced) text += " · the draft was replaced by the checked answer";
    return el("p", { className: "meta", text });
  }

  // The support check's removals, named rather than hidden: the reader saw them in the draft.
  function droppedNote(answer) {
    const dropped = answer.dropped || [];
    if (!dropped.length || answer.replaced) return null;
    const many = dropped.length > 1;
    const summary = `${dropped.length} sentence${many ? "s" : ""} of the draft removed: ` +
      `the sources do not support ${many ? "them" : "it"}`;
    const items = dropped.map((d) => el("li", {}, el("q", { text: d.sentence }), " (" + d.reason + ")"));
    return el("details", { className: "dropped" }, el("summary", { text: summary }), el("ul", {}, ...items));
  }

  async function showFinal(node, answer) {
    const rendered = await api("/web/render", {
      method: "POST", body: JSON.stringify({ text: answer.response, citations: answer.sources.length }),
    });
    const body = node.querySelector(".body");
    if (rendered.ok) body.innerHTML = (await rendered.json()).html; // sanitised by the server
    else body.replaceChildren(el("p", { text: answer.response }));
    node.classList.remove("streaming");
    node.dataset.sources = JSON.stringify(answer.sources);
    if (answer.answer_id) node.dataset.answerId = answer.answer_id;
    if (answer.sources.length) node.append(sourceList(answer.sources));
    const dropped = droppedNote(answer);
    if (dropped) node.append(dropped);
    node.append(metaLine(answer));
    if (answer.answer_id) node.append(feedbackBar(answer));
  }

  // --- feedback ------------------------------------------------------------------------
  function feedbackBar(answer, rating = "") {
    // Words, not emoji: a box's tablet may have no emoji font.
    const up = el("button", { type: "button", className: "small", "aria-pressed": String(rating === "up"), text: "Helpful" });
    const down = el("button", { type: "button", className: "small", "aria-pressed": String(rating === "down"), text: "Not helpful" });
    const note = el("span", { className: "muted small", role: "status" });
    const bar = el("div", { className: "feedback" }, up, down, note);
    const send = async (rating, comment) => {
      const body = { rating };
      if (comment) body.comment = comment;
      if (answer.feedback_token) body.feedback_token = answer.feedback_token;
      const response = await api(`/api/answers/${answer.answer_id}/feedback`, { method: "POST", body: JSON.stringify(body) });
      if (!response.ok) { note.textContent = (await errorOf(response)).message; return false; }
      up.setAttribute("aria-pressed", String(rating === "up"));
      down.setAttribute("aria-pressed", String(rating === "down"));
      note.textContent = "Thanks for the feedback.";
      return true;
    };
    up.addEventListener("click", () => { bar.querySelector("form")?.remove(); send("up"); });
    down.addEventListener("click", async () => {
      if (bar.querySelector("form")) return;
      if (!(await send("down"))) return;
      const id = "why-" + answer.answer_id;
      const box = el("textarea", { id, rows: "2", maxlength: "2000" });
      const form = el("form", { className: "stack" },
        el("label", { for: id, text: "What was wrong? (optional)" }), box,
        el("button", { type: "submit", text: "Send comment" }));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        if (await send("down", box.value.trim())) form.replaceWith(el("span", { className: "muted small", text: "Comment sent; an expert will look at it." }));
      });
      bar.append(form);
      box.focus();
    });
    return bar;
  }

  // --- asking ------------------------------------------------------------------------
  function requestBody(text) {
    const body = { messages: [...guestTurns.slice(-6), { role: "user", content: text }] };
    if (skill.value) body.skill_level = skill.value;
    if (conversationId) body.conversation_id = conversationId;
    return body;
  }

  function failed(text, userNode, answerNode, message, options = {}) {
    answerNode?.remove();
    userNode.remove();
    question.value = text; // nothing typed is lost
    say(message, { error: true, ...options });
    busy(false);
  }

  async function ask(text, attempt = 0) {
    say("");
    const userNode = addUser(text);
    const answerNode = addAnswer();
    question.value = "";
    busy(true);
    controller = new AbortController();
    const retry = () => { say(""); ask(question.value.trim() || text); };
    let response;
    try {
      response = await api("/api/chat/stream", {
        method: "POST", body: JSON.stringify(requestBody(text)), signal: controller.signal,
        headers: { Accept: "text/event-stream" },
      });
    } catch (err) {
      if (controller.signal.aborted) return stopped(answerNode);
      return failed(text, userNode, answerNode, "Cannot reach the RodeoAI box. Your question is kept.", { retry });
    }
    if (!response.ok) return refused(text, userNode, answerNode, await errorOf(response), attempt);
    say("Answering…");
    try {
      const finished = await readStream(response, answerNode);
      if (finished === "done") { say(""); busy(false); return; }
      if (finished !== "error") {
        failed(text, userNode, answerNode, "Connection lost before the answer finished. Your question is kept.", { retry });
      }
    } catch (err) {
      if (controller.signal.aborted) return stopped(answerNode);
      failed(text, userNode, answerNode, "Connection lost before the answer finished. Your question is kept.", { retry });
    }
  }

  function stopped(answerNode) {
    answerNode.classList.remove("streaming");
    answerNode.append(el("p", { className: "meta", text: "Stopped." }));
    say("Stopped. Ask again when you are ready.");
    busy(false);
  }

  function refused(text, userNode, answerNode, error, attempt) {
    const retry = () => { say(""); ask(question.value.trim() || text, attempt + 1); };
    if ((error.code === "busy" || error.code === "starting") && attempt < 3) {
      const wait = Math.min(error.retryAfter || 3, 30);
      failed(text, userNode, answerNode, `${error.message} Retrying in ${wait} s…`);
      setTimeout(() => { if (question.value.trim() === text) { question.value = ""; ask(text, attempt + 1); } }, wait * 1000);
      return;
    }
    if (error.code === "quota_exceeded") {
      return failed(text, userNode, answerNode, error.message, { link: { href: "/billing", text: "Upgrade or buy credits" } });
    }
    if (error.code === "rate_limited") {
      const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
      return failed(text, userNode, answerNode, "Too many questions at once." + wait, { retry });
    }
    if (error.status === 401) {
      return failed(text, userNode, answerNode, error.message, { link: { href: "/sign-in?next=/", text: "Sign in" } });
    }
    failed(text, userNode, answerNode, error.message, { retry });
  }

  // Server-sent events over fetch (EventSource cannot POST): blocks split by a blank line.
  async function readStream(response, answerNode) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const draft = answerNode.querySelector(".draft");
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "eof";
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = parseEvent(block);
        if (!event) continue;
        if (event.name === "sources") {
          if (event.data.conversation_id) adopt(event.data.conversation_id);
        } else if (event.name === "token") {
          draft.textContent += event.data.text;
        } else if (event.name === "done") {
          if (event.data.conversation_id) adopt(event.data.conversation_id);
          await showFinal(answerNode, event.data);
          rememberTurn(event.data);
          return "done";
        } else if (event.name === "error") {
          answerNode.classList.remove("streaming");
          say(event.data.error?.message || "The answer failed part-way.", { error: true });
          busy(false);
          return "error";
        }
      }
    }
  }

  function parseEvent(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // keep-alive ping
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length) return null;
    return { name, data: JSON.parse(data.join("\n")) };
  }

  function rememberTurn(answer) {
    if (signedIn) return; // saved conversations carry their own history
    const last = thread.querySelectorAll(".msg.user");
    guestTurns.push({ role: "user", content: last[last.length - 1].textContent });
    guestTurns.push({ role: "assistant", content: answer.response });
  }

  function adopt(id) {
    if (!signedIn || conversationId === id) return;
    conversationId = id;
    history.replaceState(null, "", "/c/" + id);
    loadChats();
  }

  // --- passages ----------------------------------------------------------------------
  async function openPassage(chunkId, number) {
    const response = await api("/api/passages/" + chunkId);
    if (!response.ok) {
      say((await errorOf(response)).message, { error: true });
      return;
    }
    const passage = await response.json();
    $("passage-title").textContent = `[${number}] ${passage.title}`;
    $("passage-where").textContent = [passage.source, passage.location].filter(Boolean).join(" · ");
    $("passage-text").textContent = passage.text;
    dialog.showModal();
  }

  thread.addEventListener("click", (event) => {
    const target = event.target.closest(".cite, .source");
    if (!target) return;
    const article = target.closest(".msg");
    let chunk = target.dataset.chunk;
    if (!chunk) {
      const match = article.querySelector(`.source[data-n="${target.dataset.n}"]`);
      chunk = match?.dataset.chunk;
    }
    if (chunk) openPassage(chunk, target.dataset.n);
  });

  // --- conversations (signed in) -----------------------------------------------------
  async function loadChats() {
    if (!list) return;
    const q = $("chat-search-q").value.trim();
    const response = await api("/api/conversations?limit=50" + (q ? "&q=" + encodeURIComponent(q) : ""));
    if (!response.ok) {
      list.replaceChildren(el("li", { className: "muted", text: (await errorOf(response)).message }));
      return;
    }
    const page = await response.json();
    if (!page.items.length) {
      list.replaceChildren(el("li", { className: "muted", text: q ? "No chats match." : "No saved chats yet." }));
      return;
    }
    list.replaceChildren(...page.items.map(chatItem));
  }

  function chatItem(chat) {
    const link = el("a", { href: "/c/" + chat.id, text: chat.title || "Untitled", title: chat.title });
    const rename = el("button", { type: "button", text: "Rename", "aria-label": "Rename " + chat.title });
    const remove = el("button", { type: "button", className: "danger", text: "Delete", "aria-label": "Delete " + chat.title });
    const item = el("li", { className: chat.id === conversationId ? "current" : "" }, link,
      el("span", { className: "tools" }, rename, remove));
    rename.addEventListener("click", () => renameChat(item, chat));
    remove.addEventListener("click", () => {
      if (remove.dataset.confirm) return deleteChat(chat);
      remove.dataset.confirm = "1";
      remove.textContent = "Sure?";
      remove.setAttribute("aria-label", "Confirm delete " + chat.title);
    });
    return item;
  }

  function renameChat(item, chat) {
    const input = el("input", { value: chat.title, maxlength: "200", "aria-label": "New title" });
    const save = el("button", { type: "submit", text: "Save" });
    const editor = el("form", { className: "row" }, input, save);
    editor.addEventListener("submit", async (event) => {
      event.preventDefault();
      const title = input.value.trim();
      if (!title) return input.focus();
      const response = await api("/api/conversations/" + chat.id, {
        method: "PATCH", body: JSON.stringify({ title }),
      });
      if (!response.ok) say((await errorOf(response)).message, { error: true });
      loadChats();
    });
    item.replaceChildren(editor);
    input.focus();
    input.select();
  }

  async function deleteChat(chat) {
    const response = await api("/api/conversations/" + chat.id, { method: "DELETE" });
    if (!response.ok && response.status !== 404) {
      say((await errorOf(response)).message, { error: true });
      return;
    }
    if (chat.id === conversationId) window.location.assign("/");
    else loadChats();
  }

  // --- wiring ------------------------------------------------------------------------
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = question.value.trim();
    if (!text) {
      say("Type a question first.", { error: true });
      question.focus();
      return;
    }
    if (!send.disabled) ask(text);
  });
  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stop.addEventListener("click", () => controller?.abort());
  window.addEventListener("offline", () => say("You are offline. Your question will wait in the box.", { error: true }));
  window.addEventListener("online", () => say("Back online."));
  if (list) {
    let timer = null;
    $("chat-search-q").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(loadChats, 250); });
    $("chat-search").addEventListener("submit", (event) => { event.preventDefault(); loadChats(); });
    loadChats();
  }
  // A reloaded conversation's answers can be rated too, showing the rating already given.
  for (const node of thread.querySelectorAll(".msg.assistant[data-answer-id]")) {
    node.append(feedbackBar({ answer_id: Number(node.dataset.answerId) }, node.dataset.rating || ""));
  }
  thread.lastElementChild?.scrollIntoView({ block: "end" });
})();
