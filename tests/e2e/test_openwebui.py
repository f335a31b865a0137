"""Open WebUI 0.12.4, the real one from PyPI, pointed at RodeoAI's /v1 with a user's API key,
as a new user would set it up. One question is asked through Open WebUI's own API exactly as
its front end asks it (Chat.svelte's sendMessageSocket body), so Open WebUI also runs its
background tasks (title, tags, follow-ups) through the same model. Then: one question typed
must cost one, leave one answer record, give the chat a title from the question's words, and
show the cited source's title in the answer text.

A recording proxy between the two keeps every request body; with --save-client-fixtures they
are written to tests/data/clients for the unit tests of client-task recognition.

Run: `make e2e-openwebui` (sets up the cached venv), or
`pytest tests/e2e/test_openwebui.py --openwebui`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from server.db import make_engine
from tests.conftest import ROOT, settings_for
from tests.e2e.openwebui import VERSION, Exchange, OpenWebUIClient, RecordingProxy, open_webui
from tests.servers import copy_data, rodeoai_server, serving

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.openwebui,
    pytest.mark.one_pass,
    # Starting Open WebUI alone takes about 30 s on 2 idle cores; a first run also builds its venv.
    pytest.mark.timeout(900),
]

QUESTION = "What is the penalty for a heeler catching one hind leg?"
QUESTION_WORDS = {"penalty", "heeler", "catching", "hind", "leg"}
PASSWORD = "a long enough password"
COMPLETIONS = "/v1/chat/completions"
CAPTURES = ROOT / "build" / "openwebui"
FIXTURES = ROOT / "tests" / "data" / "clients"
# The first line of each of Open WebUI's default task prompts (open_webui/config.py).
TASK_MARKERS = {
    "title": "Generate a concise title",
    "tags": "Generate 1-3 broad tags",
    "follow_ups": "Predict 3-5 useful messages",
    "queries": "generating search queries",
}


@dataclass(repr=False)  # a failure shows the assertion's own message, not all of this
class Observed:
    """What one question through Open WebUI left behind, read once all its tasks finished."""

    used_before: int
    used_after: int
    answers: list[dict[str, Any]]
    chat: dict[str, Any]
    tags: list[str]
    assistant: dict[str, Any]
    completions: list[Exchange]
    query_tasks: dict[str, Exchange]
    every: list[Exchange]  # all that went through the proxy, GETs included

    def of_kind(self, kind: str) -> list[Exchange]:
        return [e for e in self.completions if kind_of(e.body) == kind]


def kind_of(body: Any) -> str:
    """`chat` for a user's question; else which of Open WebUI's task prompts it carries."""
    messages = body.get("messages", []) if isinstance(body, dict) else []
    prompt = " ".join(str(m.get("content", "")) for m in messages)
    if "### Task:" not in prompt:
        return "chat"
    for kind, marker in TASK_MARKERS.items():
        if marker in prompt:
            return kind
    return "other_task"


def rodeoai_login(url: str, email: str) -> dict[str, str]:
    httpx.post(f"{url}/api/auth/register", json={"email": email, "password": PASSWORD})
    reply = httpx.post(f"{url}/api/auth/login", json={"email": email, "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


def used_today(url: str, email: str) -> int:
    status = httpx.get(f"{url}/api/billing/status", headers=rodeoai_login(url, email))
    assert status.status_code == 200, status.text
    return int(status.json()["used_today"])


def answer_records(data: Path) -> list[dict[str, Any]]:
    engine = make_engine(settings_for(data).engine_url, upgrade=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT question, response, sources_json, api, user_id FROM answermetric")
            ).mappings()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


def wait_until_settled(
    owui: OpenWebUIClient, proxy: RecordingProxy, chat_id: str, reply_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Until the answer is stored, Open WebUI has no task left for the chat, and nothing has
    gone through the proxy for two seconds (the initial title task runs on its own)."""
    deadline = time.monotonic() + 300  # a cap for a stuck client, not a timing check
    quiet_since: float | None = None
    seen = 0
    while True:
        chat = owui.chat(chat_id)
        message = chat["chat"]["history"]["messages"].get(reply_id, {})
        idle = message.get("done") and not owui.busy(chat_id) and proxy.in_flight() == 0
        count = len(proxy.exchanges)
        if idle and count == seen:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 2:
                return chat, message
        else:
            quiet_since = None
        seen = count
        assert time.monotonic() < deadline, f"Open WebUI never settled: {message}"
        time.sleep(0.3)


def scrub(value: Any, secrets: dict[str, str]) -> Any:
    """The captured bodies with the test accounts' identifiers replaced by placeholders."""
    raw = json.dumps(value)
    for secret, placeholder in secrets.items():
        raw = raw.replace(secret, placeholder)
    return json.loads(raw)


def save_captures(observed: Observed, secrets: dict[str, str], *, to_fixtures: bool) -> None:
    """One JSON file per kind of request: the user's question and each background task."""
    captured = {
        "chat": (
            "its front end's POST /api/chat/completions for a new chat",
            observed.of_kind("chat"),
        ),
        "title": ("its title task after that question", observed.of_kind("title")),
        "tags": ("its tags task after that question", observed.of_kind("tags")),
        "follow_ups": ("its follow-up task after that question", observed.of_kind("follow_ups")),
    }
    asked = "its query-generation task, POST /api/v1/tasks/queries/completions"
    queries = observed.query_tasks
    if len({json.dumps(e.body, sort_keys=True) for e in queries.values()}) == 1:
        kinds = " and ".join(f"type={kind}" for kind in queries)
        captured["queries"] = (f"{asked} ({kinds} send the same body)", list(queries.values()))
    else:
        for kind, exchange in queries.items():
            captured[f"queries_{kind}"] = (f"{asked} type={kind}", [exchange])
    folders = [CAPTURES] + ([FIXTURES] if to_fixtures else [])
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for kind, (how, exchanges) in captured.items():
        if not exchanges:
            continue
        record = {
            "source": f"open-webui {VERSION}, captured by the recording proxy of "
            f"tests/e2e/openwebui.py from {how}",
            "path": COMPLETIONS,
            "body": scrub(exchanges[0].body, secrets),
        }
        for folder in folders:
            path = folder / f"openwebui-{VERSION}-{kind.replace('_', '-')}.json"
            path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        # RodeoAI's replies, for whoever reads a failure (never a fixture: they change).
        replies = [{"status": e.status, "reply": e.reply} for e in exchanges]
        (CAPTURES / f"reply-{kind}.json").write_text(json.dumps(replies, indent=2) + "\n")
    summary = {
        "used_today": [observed.used_before, observed.used_after],
        "answer_records": [a["question"][:120] for a in observed.answers],
        "title": observed.chat["title"],
        "tags": observed.tags,
        "follow_ups": observed.assistant.get("followUps"),
        "answer_shown": observed.assistant.get("content"),
        "requests": [
            f"{e.method} {e.path} {e.status}"
            + (f" {kind_of(e.body)}" if e.path == COMPLETIONS else "")
            for e in observed.every
        ],
    }
    (CAPTURES / "observed.json").write_text(json.dumps(summary, indent=2) + "\n")


@pytest.fixture(scope="module")
def observed(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Observed]:
    data = copy_data(shared_data, tmp_path_factory.mktemp("openwebui") / "data")
    rider = "rider@example.com"
    with rodeoai_server(
        data,
        access_mode="accounts",
        backends="extractive",
        chat_user_limit="1000/minute",
    ) as url:
        key = httpx.post(
            f"{url}/api/users/me/api-keys",
            json={"name": "open-webui"},
            headers=rodeoai_login(url, rider),
        )
        assert key.status_code == 201, key.text
        used_before = used_today(url, rider)
        proxy = RecordingProxy(url)
        with (
            serving(proxy.app()) as proxy_url,
            open_webui(
                f"{proxy_url}/v1", key.json()["key"], log_path=CAPTURES / "open-webui.log"
            ) as owui_url,
        ):
            owui = OpenWebUIClient(owui_url)
            admin = owui.sign_up_admin(PASSWORD)
            model = owui.model("rodeoai")
            chat_id, reply_id = owui.ask_in_new_chat(model, admin, QUESTION)
            chat, assistant = wait_until_settled(owui, proxy, chat_id, reply_id)
            used_after = used_today(url, rider)
            answers = answer_records(data)
            tags = owui.tags(chat_id)
            completions = proxy.posts(COMPLETIONS)
            # After the counts above are read: the query tasks are only captured, not counted.
            query_tasks: dict[str, Exchange] = {}
            for kind in ("retrieval", "web_search"):
                before = len(proxy.posts(COMPLETIONS))
                owui.generate_queries(model["id"], chat_id, kind, QUESTION)
                sent = proxy.posts(COMPLETIONS)[before:]
                if sent:
                    query_tasks[kind] = sent[0]
            found = Observed(
                used_before,
                used_after,
                answers,
                chat,
                tags,
                assistant,
                completions,
                query_tasks,
                list(proxy.exchanges),
            )
            secrets = {
                admin["email"]: "user@example.com",
                admin["name"]: "User",
                admin["id"]: "user-id",
            }
            save_captures(
                found, secrets, to_fixtures=request.config.getoption("--save-client-fixtures")
            )
            yield found


def test_open_webui_sent_the_question_and_its_background_tasks_through_rodeoai(
    observed: Observed,
) -> None:
    """The harness itself: without these requests the checks below would prove nothing."""
    kinds = [kind_of(e.body) for e in observed.completions]
    assert kinds.count("chat") == 1, kinds
    assert {"title", "tags", "follow_ups"} <= set(kinds), kinds
    assert all(e.status == 200 for e in observed.completions), [
        (kind_of(e.body), e.status, e.reply[:300]) for e in observed.completions
    ]


def test_one_question_typed_costs_one(observed: Observed) -> None:
    tasks = [kind_of(e.body) for e in observed.completions if kind_of(e.body) != "chat"]
    assert tasks, "Open WebUI sent no background task, so this proves nothing"
    assert observed.used_after - observed.used_before == 1, (
        f"used_today rose by {observed.used_after - observed.used_before} for one question "
        f"(tasks sent: {tasks})"
    )


def test_only_the_users_question_is_recorded_as_an_answer(observed: Observed) -> None:
    questions = [a["question"][:80] for a in observed.answers]
    assert len(observed.answers) == 1, questions
    assert observed.answers[0]["question"] == QUESTION
    assert observed.answers[0]["api"] == "openai"


def test_the_chat_title_is_built_from_the_questions_words(observed: Observed) -> None:
    title = observed.chat["title"]
    assert title and title != "New Chat", title
    assert "###" not in title and len(title) <= 80, title
    words = set(re.findall(r"[a-z]+", title.lower()))
    assert len(words & QUESTION_WORDS) >= 2, title


def test_the_title_task_is_answered_with_the_json_open_webui_asked_for(
    observed: Observed,
) -> None:
    """Open WebUI falls back to the question itself when the reply holds no JSON title, so
    the title above could pass without RodeoAI answering the task; this checks the reply."""
    (exchange,) = observed.of_kind("title")[:1] or pytest.fail("no title task was sent")
    content = exchange.reply_json()["choices"][0]["message"]["content"]
    start, end = content.find("{"), content.rfind("}")
    assert 0 <= start < end, f"no JSON object in RodeoAI's reply to the title task: {content}"
    parsed = json.loads(content[start : end + 1])
    assert parsed.get("title") == observed.chat["title"], content


def test_tags_and_follow_ups_reach_open_webui(observed: Observed) -> None:
    assert observed.tags, "Open WebUI found no tags in RodeoAI's reply to its tags task"
    assert observed.assistant.get("followUps"), "no follow-up suggestions under the answer"


def test_the_answer_shown_names_the_cited_sources_title(observed: Observed) -> None:
    assert len(observed.answers) >= 1
    record = next(a for a in observed.answers if a["question"] == QUESTION)
    sources = json.loads(record["sources_json"])
    shown = observed.assistant["content"]
    cited = [s for s in sources if s.get("cited")] or [s for s in sources if f"[{s['n']}]" in shown]
    assert cited, f"the answer cites no source: {shown[:500]}"
    titles = [str(s["title"]) for s in cited]
    assert any(t in shown for t in titles), f"none of {titles} in the answer shown:\n{shown}"
