"""What an A/B experiment may change about how a question is answered, and the seam through
which the learning loop chooses it. Chat never imports the learning loop: it is handed a
`VariantPicker` and asks it, per question, which variant this asker gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

RetrievalMode = Literal["hybrid", "dense", "lexical"]
PromptStyle = Literal["standard", "concise", "detailed"]

PROMPT_STYLES: dict[str, str] = {
    "standard": "Answer in two or three sentences using only the facts.",
    "concise": "Answer in one or two short sentences using only the facts.",
    "detailed": "Answer in four to six sentences using only the facts, step by step.",
}


@dataclass(frozen=True)
class ChatVariant:
    """One way of answering. `backend` is tried first (the failover chain still stands
    behind it) and `model` applies to that backend only; unset fields keep the defaults."""

    name: str = "default"
    experiment_id: int | None = None
    backend: str | None = None
    model: str | None = None
    prompt_style: PromptStyle = "standard"
    top_k: int | None = None
    retrieval: RetrievalMode = "hybrid"


DEFAULT = ChatVariant()


class VariantPicker(Protocol):
    def pick(self, subject: str) -> ChatVariant:
        """The variant for this asker (`user:<id>` or `guest:<key>`); the same asker gets
        the same variant for as long as an experiment runs."""
        ...


def subject_of(user_id: int | None, guest_key: str | None) -> str:
    if user_id is not None:
        return f"user:{user_id}"
    return f"guest:{guest_key or 'anonymous'}"
