"""Chat front ends on /v1 and /ollama: their background tasks (Open WebUI's title, tags,
follow-ups, query generation, autocomplete and emoji; LibreChat's title) are recognised from
the real request bodies in tests/data/clients, answered in the JSON or text their prompt asks
for, and never charged or recorded; a real question, even one saying "task" or "title", is
still a question, with a Sources footer in its text; and the Ollama surface Open WebUI calls
is complete. Served in this process by a real uvicorn, so the official clients and the `llm`
CLI talk to it over HTTP."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import select

from server.chat.client_tasks import answer as task_reply
from server.chat.client_tasks import as_question, recognise, title_of
from server.components import Components
from server.db import AnswerMetric, read_session
from server.main import create_app
from tests.conftest import ROOT, settings_for
from tests.helpers import bearer, model_held, sign_up
from tests.servers import BIN, copy_data, serving

pytestmark = pytest.mark.one_pass  # quotas and records are tested on both engines elsewhere

CLIENTS = ROOT / "tests" / "data" / "clients"
FIXTURES = sorted(CLIENTS.glob("*.json"))
TASK_FIXTURES = [p for p in FIXTURES if not p.stem.endswith("-chat")]
LIMITS = {"chat_user_limit": "1000/minute", "chat_guest_limit": "1000/minute"}
# The kind each fixture carries, from its name; the reply's JSON key where Open WebUI parses one.
KINDS = {
    "follow-ups": ("follow_ups", "follow_ups"),
    "autocomplete": ("autocomplete", "text"),
    "queries": ("queries", "queries"),
    "emoji": ("emoji", None),
    "tags": ("tags", "tags"),
    "title": ("title", "title"),
}
SOURCES_LINE = re.compile(r"^- (?:\[\d+\])+ (.+)$", re.M)


@pytest.fixture(scope="module")
def served(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Components]]:
    data = copy_data(shared_data, tmp_path_factory.mktemp("client-tasks") / "data")
    app = create_app(settings_for(data, backends="extractive", **LIMITS))
    with serving(app) as url:
        yield url, app.state.components


@pytest.fixture(scope="module")
def user(served: tuple[str, Components]) -> dict[str, str]:
    """A signed-in user's API key, as a front end is configured with, and their headers."""
    url, _ = served
    with httpx.Client(base_url=url, timeout=60) as http:
        headers = sign_up(http, "frontend@example.com")
        key = http.post("/api/users/me/api-keys", json={"name": "open webui"}, headers=headers)
    return {"key": key.json()["key"], **bearer(key.json()["key"])}


def used_today(url: str, user: dict[str, str]) -> int:
    status = httpx.get(f"{url}/api/billing/status", headers=bearer(user["key"]), timeout=30)
    return int(status.json()["used_today"])


def records(components: Components) -> list[AnswerMetric]:
    with read_session(components.engine) as session:
        return list(session.exec(select(AnswerMetric).order_by(AnswerMetric.id)).all())  # type: ignore[arg-type]


def record_count(components: Components) -> int:
    with read_session(components.engine) as session:
        return int(session.exec(select(func.count()).select_from(AnswerMetric)).one())


def load(path: Path) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads(path.read_text())
    assert fixture["source"], f"{path.name} must say where it came from"
    return fixture


def kind_of(path: Path) -> tuple[str, str | None]:
    found = next((kinds for name, kinds in KINDS.items() if name in path.stem), None)
    assert found, f"{path.name}: name the task (one of {sorted(KINDS)}) in the file name"
    if path.stem.startswith("openwebui") or "response_format" in load(path)["body"]:
        return found  # a JSON object with the task's key
    return (found[0], None)  # the others take plain text


def reply_text(path: str, reply: httpx.Response) -> str:
    """The text a client shows, from either API, streamed or not."""
    assert reply.status_code == 200, reply.text
    if path.startswith("/ollama"):
        lines = [json.loads(line) for line in reply.text.splitlines() if line.strip()]
        return "".join((line.get("message") or {}).get("content", "") for line in lines)
    if reply.headers["content-type"].startswith("text/event-stream"):
        chunks = [json.loads(b[6:]) for b in reply.text.split("\n\n") if b.startswith("data: {")]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    return str(reply.json()["choices"][0]["message"]["content"])


def last_extra(path: str, reply: httpx.Response) -> dict[str, Any]:
    """The `rodeoai` field of a reply: on its body, or on its last chunk or line."""
    if path.startswith("/ollama"):
        return dict(json.loads(reply.text.strip().splitlines()[-1])["rodeoai"])
    if reply.headers["content-type"].startswith("text/event-stream"):
        chunks = [json.loads(b[6:]) for b in reply.text.split("\n\n") if b.startswith("data: {")]
        return dict(chunks[-1]["rodeoai"])
    return dict(reply.json()["rodeoai"])


# --- recognition and answers, from the clients' own request bodies ----------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("fixture", TASK_FIXTURES, ids=lambda p: p.stem)
def test_a_front_ends_task_is_answered_in_its_shape_and_never_charged_or_recorded(
    served: tuple[str, Components], user: dict[str, str], fixture: Path, stream: bool
) -> None:
    url, components = served
    request = load(fixture)
    kind, key = kind_of(fixture)
    used, count = used_today(url, user), record_count(components)
    body = {**request["body"], "stream": stream}
    reply = httpx.post(f"{url}{request['path']}", json=body, headers=user, timeout=60)
    text = reply_text(request["path"], reply)
    assert last_extra(request["path"], reply) == {"task": kind}
    if key is not None:  # Open WebUI parses the object between the first { and the last }
        value = json.loads(text)[key]
        assert isinstance(value, list if kind in {"tags", "follow_ups", "queries"} else str)
    if kind == "title":
        title = json.loads(text)["title"] if key else text
        assert 1 <= len(title.split()) <= 8 and not re.search(r"[\"{}\[\]#*]", title), title
    assert used_today(url, user) == used and record_count(components) == count


def test_task_answers_come_from_the_question_and_the_knowledge_base() -> None:
    owui = {p.stem: load(p)["body"]["messages"] for p in FIXTURES if "openwebui" in p.stem}
    title = recognise(owui["openwebui-0.12.4-title"])
    assert title is not None and title.client == "open-webui" and title.as_json
    assert title.first_question == "What is the penalty for a heeler catching one hind leg?"
    librechat = recognise(load(CLIENTS / "librechat-title.json")["body"]["messages"])
    assert librechat is not None and (librechat.kind, librechat.client) == ("title", "librechat")
    assert not librechat.as_json
    assert librechat.first_question == "What task does the hazer do in steer wrestling?"
    structured = recognise(load(CLIENTS / "librechat-title-structured.json")["body"]["messages"])
    assert structured is not None and structured.as_json and structured.kind == "title"
    assert json.loads(task_reply(structured, lambda q, k: []))["language"] == "English"
    assert recognise(owui["openwebui-0.12.4-chat"]) is None  # the question itself


def test_tags_and_follow_ups_name_what_the_knowledge_base_holds(
    served: tuple[str, Components], user: dict[str, str]
) -> None:
    url, _ = served
    reply = {}
    for name in ("tags", "follow-ups"):
        request = load(CLIENTS / f"openwebui-0.12.4-{name}.json")
        answer = httpx.post(f"{url}{request['path']}", json=request["body"], headers=user)
        reply[name] = json.loads(reply_text(request["path"], answer))
    tags = reply["tags"]["tags"]
    assert tags[0] == "Rodeo" and any("Roping" in t or "Heeling" in t for t in tags), tags
    follow_ups = reply["follow-ups"]["follow_ups"]
    assert 1 <= len(follow_ups) <= 5 and all(f.endswith("?") for f in follow_ups), follow_ups
    assert len(set(follow_ups)) == len(follow_ups)


@pytest.mark.parametrize(
    ("question", "title"),
    [
        ("What are the penalties in barrel racing?", "Penalties in barrel racing"),
        ("How long must a goat tie hold?", "Goat tie hold"),
        ("How do I keep my dally safe?", "Keep dally safe"),
        (
            "What is the penalty for a heeler catching one hind leg?",
            "Penalty for heeler catching one hind leg",
        ),
        ("Dally safety?", "Dally safety"),
    ],
)
def test_a_title_is_the_questions_own_words_without_the_question_words(
    question: str, title: str
) -> None:
    assert title_of(question) == title


def test_headings_become_questions_a_user_would_ask() -> None:
    assert as_question("What Barrel Racing Is") == "What is barrel racing?"
    assert as_question("The Six-Second Rule in Goat Tying") == (
        "What is the six-second rule in goat tying?"
    )
    assert as_question("PRCA Rules for Heelers") == "Can you explain PRCA rules for heelers?"


# --- questions stay questions ----------------------------------------------------------------
@pytest.mark.parametrize(
    "question",
    [
        "What's the title of the NFR's team roping rulebook?",
        "What task does the hazer do in steer wrestling?",
        "Give me a title for a clinic about heeling and a summary of the conversation topics",
    ],
)
def test_a_rodeo_question_saying_task_or_title_is_answered_as_a_question(
    served: tuple[str, Components], user: dict[str, str], question: str
) -> None:
    url, components = served
    assert recognise([{"role": "user", "content": question}]) is None
    used, count = used_today(url, user), record_count(components)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=user["key"], max_retries=0)
    reply = client.chat.completions.create(
        model="rodeoai", messages=[{"role": "user", "content": question}]
    )
    assert reply.model_extra and reply.model_extra["rodeoai"]["answer_id"]
    assert used_today(url, user) == used + 1 and record_count(components) == count + 1
    assert records(components)[-1].question == question


def test_one_question_through_open_webui_costs_one_and_records_one(
    served: tuple[str, Components], user: dict[str, str]
) -> None:
    """The question as Open WebUI's front end sends it (with its tools), then the title, tags,
    follow-ups and query generation it sends after: one question typed, one question paid."""
    url, components = served
    used, count = used_today(url, user), record_count(components)
    chat = load(CLIENTS / "openwebui-0.12.4-chat.json")
    answer = httpx.post(f"{url}{chat['path']}", json=chat["body"], headers=user, timeout=60)
    text = reply_text(chat["path"], answer)
    for name in ("title", "tags", "follow-ups", "queries"):
        task = load(CLIENTS / f"openwebui-0.12.4-{name}.json")
        done = httpx.post(f"{url}{task['path']}", json=task["body"], headers=user, timeout=60)
        assert last_extra(task["path"], done)["task"]
    assert used_today(url, user) == used + 1
    new = records(components)[count:]
    question = chat["body"]["messages"][-1]["content"]
    assert [r.question for r in new] == [question]
    cited = [s["title"] for s in last_extra(chat["path"], answer)["sources"] if s["cited"]]
    assert cited and all(title in text.split("\n\nSources:\n")[-1] for title in cited)


# --- the Sources footer ----------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/ollama/api/chat"])
def test_the_answer_text_ends_with_its_sources_which_the_record_does_not_repeat(
    served: tuple[str, Components], path: str, stream: bool
) -> None:
    url, components = served
    body = {"model": "rodeoai", "stream": stream}
    body["messages"] = [{"role": "user", "content": "How long must a goat tie hold?"}]
    reply = httpx.post(f"{url}{path}", json=body, timeout=60)
    text, extra = reply_text(path, reply), last_extra(path, reply)
    answer, footer = text.split("\n\nSources:\n")
    shown = SOURCES_LINE.findall(footer)
    cited = [s for s in extra["sources"] if s["cited"]]
    assert shown and all(any(s["title"] in line for line in shown) for s in cited)
    assert "http" not in footer and "](" not in footer
    stored = next(r for r in records(components) if r.id == extra["answer_id"])
    assert "\n\nSources:\n" not in stored.response and stored.response.strip() in answer


# --- the task model, the setting, and the LLM slot -------------------------------------------
def test_the_task_model_is_listed_and_answers_only_tasks(
    served: tuple[str, Components], user: dict[str, str]
) -> None:
    url, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=user["key"], max_retries=0)
    assert [m.id for m in client.models.list()] == ["rodeoai", "rodeoai-tasks"]
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(
            model="rodeoai-tasks", messages=[{"role": "user", "content": "What is a hazer?"}]
        )
    assert refused.value.response.json()["error"]["code"] == "not_a_task"
    local = ollama.Client(host=f"{url}/ollama")
    assert [m.model for m in local.list().models] == ["rodeoai:latest", "rodeoai-tasks:latest"]


def test_with_recognition_and_the_footer_off_only_the_task_model_gets_tasks(
    shared_data: Path, tmp_path: Path
) -> None:
    data = copy_data(shared_data, tmp_path / "data")
    settings = settings_for(
        data, backends="extractive", detect_client_tasks=False, sources_footer=False, **LIMITS
    )
    title = load(CLIENTS / "openwebui-0.12.4-title.json")["body"]
    with TestClient(create_app(settings)) as http:
        as_question = http.post("/v1/chat/completions", json=title).json()
        assert as_question["rodeoai"]["answer_id"]  # answered (and recorded) as a question
        assert "\n\nSources:\n" not in as_question["choices"][0]["message"]["content"]
        named = http.post("/v1/chat/completions", json={**title, "model": "rodeoai-tasks"})
        assert named.json()["rodeoai"] == {"task": "title"}
        assert json.loads(named.json()["choices"][0]["message"]["content"])["title"]


def test_a_task_neither_waits_for_a_busy_model_nor_spends_the_chat_limit(
    shared_data: Path, tmp_path: Path
) -> None:
    data = copy_data(shared_data, tmp_path / "data")
    settings = settings_for(
        data, backends="llamacpp", llm_slots=1, llm_queue=0, chat_guest_limit="1/minute"
    )
    title = load(CLIENTS / "openwebui-0.12.4-title.json")["body"]
    question = {"messages": [{"role": "user", "content": "What is a hazer?"}]}
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        backend = http.app.state.components.chain.backends[0]  # type: ignore[attr-defined]
        with model_held(backend):  # the only slot, as a long answer would hold it
            for _ in range(3):  # more tasks than the guest's chat limit allows questions
                done = http.post("/v1/chat/completions", json=title)
                assert done.status_code == 200 and done.json()["rodeoai"]["task"] == "title"
            busy = http.post("/v1/chat/completions", json=question)
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "busy"
        limited = http.post("/v1/chat/completions", json=question)
        assert limited.status_code == 429  # the one question this minute was the busy one


# --- the Ollama surface Open WebUI calls -----------------------------------------------------
def test_the_ollama_surface_has_version_tags_ps_and_show(served: tuple[str, Components]) -> None:
    url, _ = served
    version = httpx.get(f"{url}/ollama/api/version").json()["version"]
    # Open WebUI picks the lowest version of its backends this way (routers/ollama.py).
    assert all(n >= 0 for n in map(int, re.sub(r"^v|-.*", "", version).split(".")))
    local = ollama.Client(host=f"{url}/ollama")
    for entry in httpx.get(f"{url}/ollama/api/tags").json()["models"]:
        assert {"name", "model", "modified_at", "size", "digest", "details"} <= entry.keys()
    running = local.ps().models
    assert [m.model for m in running] == ["rodeoai:latest", "rodeoai-tasks:latest"]
    raw = httpx.get(f"{url}/ollama/api/ps").json()["models"][0]["expires_at"]
    assert datetime.fromisoformat(raw).year > 2100  # Open WebUI parses it so
    shown = local.show("rodeoai")
    assert shown.details and shown.details.family == "rodeoai"
    assert shown.capabilities == ["completion"]
    with pytest.raises(ollama.ResponseError) as missing:
        local.show("llama3")
    assert missing.value.status_code == 404


# --- the llm CLI, as the README sets it up ---------------------------------------------------
def test_the_llm_cli_asks_one_question_with_the_readme_settings(
    served: tuple[str, Components], user: dict[str, str], tmp_path: Path
) -> None:
    url, _ = served
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: rodeoai\n  model_name: rodeoai\n  api_base: {url}/v1\n"
        "  api_key_name: rodeoai\n"
    )
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path)}
    llm = str(BIN / "llm")
    keys = [llm, "keys", "set", "rodeoai", "--value", user["key"]]
    subprocess.run(keys, env=env, check=True, capture_output=True, timeout=60)
    used = used_today(url, user)
    asked = subprocess.run(
        [llm, "-m", "rodeoai", "-n", "How long must a goat tie hold?"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert asked.returncode == 0, asked.stderr
    assert re.search(r"\[\d\]", asked.stdout) and "\nSources:\n- [" in asked.stdout
    assert "Goat Tying" in asked.stdout.split("Sources:")[-1]
    assert used_today(url, user) == used + 1
