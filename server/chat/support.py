"""The sentence-level support check: each sentence of a model's draft must rest on the facts
the model was given, or it is dropped, with the reason recorded.

A sentence is kept only when every quantity it states is a quantity of the facts, its meaning
is close to one fact (embedding similarity), and it brings few content words that neither the
facts nor the question contain. Echoes of the question, boilerplate, list lead-ins and
refusals that the facts contradict say nothing a roper can use, so they go too. A sentence
that keeps the facts' words yet says the reverse (opposites swapped, a negation the facts
do not make, "only" where they make no such rule) goes as well: see contradictions.py.
The thresholds were set on tests/data/support/sentences.jsonl (labelled by hand).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from server.chat.contradictions import contradiction, negated, swapped_word, unsaid_opposite
from server.chat.quantities import NUMBER_WORDS, Quantity, quantities
from server.rag.embedder import Embedder

# Set on the labelled sentences (tests/chat/test_support.py reports precision and recall).
MIN_SIMILARITY = 0.55
MAX_NOVEL_SHARE = 0.3
MIN_CLAUSE_SIMILARITY = 0.25
# A quantity must come from a fact within this similarity of the sentence's closest fact.
NUMBER_MARGIN = 0.15
# A negation toggled against the closest fact counts only when the sentence is this close to it.
FLIP_SIMILARITY = 0.8

_MARKERS = re.compile(
    r"\[\s*(?:source\s*)?(?:\d{1,2}|n|x|\?|#)(?:\s*[,;]\s*\d{1,2})*\s*\]"
    r"|\(\s*(?:source\s*)?\d{1,2}(?:\s*[,;]\s*\d{1,2})*\s*\)|【[^】]*】",
    re.I,
)
_LIST_MARK = re.compile(r"^\s*(?:[-*+•]|\d{1,2}[.)]|step \d{1,2}\s*[:.)-])\s+", re.I)
_SPLIT = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[*A-Z0-9])")
# Clauses joined by "and"/"but" after a comma, or by a semicolon: each must hold on its own.
_CLAUSE = re.compile(r";\s+|,\s+(?:and|but|while|which|so)\s+|\s+but\s+(?:it|they|this)\s+", re.I)
_WORD = re.compile(r"[a-z][a-z']*")
_STOP = set(
    "a an the and or but if then so of to in on at by for with from into onto over under "
    "about as is are was were be been being am do does did doing have has had having it its "
    "this that these those there here their they them he she him her his hers you your yours "
    "we our us i me my mine who whom whose which what when where why how all any both each "
    "few more most other some such no nor not only own same than too very can could will "
    "would shall should may might must just also up down out off again further once s t "
    "don't isn't aren't it's that's what's let's get gets got make makes made one ones "
    "often usually typically generally always really well like way ways because since "
    "instead while unlike though although rather either neither whether per via lot lots bit "
    "thing things something anything everything even still yet already quite much many "
    "you're they're it'll you'll we're there's good need difference yes go goes going times "
    "dollars percent".split()
)
_BOILERPLATE = re.compile(
    r"^(?:i hope (?:this|that) helps|hope (?:this|that) helps|let me know|feel free|"
    r"great question|good question|in (?:conclusion|summary)|to (?:summarize|sum up)|"
    r"here (?:are|is)|the (?:answer|response) (?:is|to)|as an ai|i am an ai|"
    r"(?:the )?(?:key )?(?:facts|sources)(?: you are given)?(?: are| say)?\s*:?$)",
    re.I,
)
_REFUSAL = re.compile(
    r"\b(?:(?:do|does|did) not|don't|doesn't|didn't) (?:provide|mention|say|state|contain|"
    r"include|cover|specify|give|address|offer)\b|\bno (?:information|mention|details?)\b|"
    r"\bnot (?:mentioned|specified|provided|stated|covered|available)\b|"
    r"\bi (?:cannot|can't|can not|don't|do not) (?:know|find|answer|say|tell)\b|"
    r"\bunable to (?:find|answer|determine)\b",
    re.I,
)


@dataclass
class Verdict:
    sentence: str
    reason: str | None = None  # why it was dropped; None when kept

    @property
    def kept(self) -> bool:
        return self.reason is None


@dataclass
class Signs:
    claim: str
    words: int
    boilerplate: bool
    lead_in: bool
    refusal: bool
    echo: bool
    missing: list[str]  # quantities no fact states
    novel: list[str]  # content words no fact contains
    similarity: float  # to the closest fact
    weakest_clause: float  # the least supported clause's similarity to any fact
    negation_flip: bool  # negated where no fact close to its meaning is
    unbound: list[str]  # quantities found only in facts far from this sentence's meaning
    swapped: tuple[str, str] | None  # (claim's word, the opposite word the facts use)
    unanswered: list[str]  # words of the question the sentence uses that no fact contains
    contradiction: str | None  # how it says the reverse of the facts in their own words


@dataclass
class Checked:
    text: str  # the kept sentences, in their lines and order
    dropped: list[Verdict] = field(default_factory=list)


def claim_text(sentence: str) -> str:
    """The sentence as a claim: no citation markers or placeholders, list marks, bold."""
    text = sentence.replace("**", "").replace("__", "")
    text = _MARKERS.sub(" ", _LIST_MARK.sub("", text))
    return re.sub(r"\s+", " ", text).strip(" \"'“”")


def _stem(word: str) -> str:
    """A crude stem that folds the forms a paraphrase uses: lope, loping; trot, trotting."""
    word = word.removesuffix("'s").strip("'")
    for suffix in ("ing", "edly", "ed", "ies", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def content_words(text: str) -> set[str]:
    """The words that carry a claim, stemmed; number words are judged as quantities."""
    return {
        _stem(w)
        for w in _WORD.findall(text.lower())
        if w not in _STOP and w not in NUMBER_WORDS and len(w) > 1
    }


def split_claims(line: str) -> list[str]:
    """A line's sentences; a list mark and a bare citation after a full stop stay with
    their sentence."""
    mark = _LIST_MARK.match(line)
    body = line[mark.end() :] if mark else line
    parts = [p for p in _SPLIT.split(body.strip()) if p.strip()]
    if mark and parts:
        parts[0] = mark.group(0).strip() + " " + parts[0]
    merged: list[str] = []
    for part in parts:
        if merged and not _WORD.search(claim_text(part).lower()):
            merged[-1] = f"{merged[-1]} {part}"
        else:
            merged.append(part)
    return merged


class SupportCheck:
    def __init__(
        self,
        embedder: Embedder,
        *,
        min_similarity: float = MIN_SIMILARITY,
        max_novel_share: float = MAX_NOVEL_SHARE,
        min_clause_similarity: float = MIN_CLAUSE_SIMILARITY,
        margin: float = NUMBER_MARGIN,
        flip_similarity: float = FLIP_SIMILARITY,
    ) -> None:
        self.embedder = embedder
        self.min_similarity = min_similarity
        self.max_novel_share = max_novel_share
        self.min_clause_similarity = min_clause_similarity
        self.margin = margin
        self.flip_similarity = flip_similarity

    def check(
        self, text: str, facts: list[tuple[int, str]], question: str, context: str = ""
    ) -> Checked:
        """Keep the supported sentences of `text`, with its line layout; list the rest.
        `context` is the retrieved passages: a word of the question found nowhere in them
        is a part of the question the sources do not answer."""
        lines = [split_claims(line) for line in text.splitlines()]
        flat = [s for line in lines for s in line]
        verdicts = iter(self.verdicts(flat, [f for _, f in facts], question, context))
        kept_lines: list[str] = []
        dropped: list[Verdict] = []
        for line in lines:
            kept: list[str] = []
            for sentence in line:
                verdict = next(verdicts)
                if verdict.kept:
                    kept.append(sentence)
                else:
                    dropped.append(verdict)
            if kept or (not line and kept_lines and kept_lines[-1]):
                kept_lines.append(" ".join(kept))
        return Checked("\n".join(kept_lines).strip(), dropped)

    def verdicts(
        self, sentences: list[str], facts: list[str], question: str, context: str = ""
    ) -> list[Verdict]:
        signs = self.signs(sentences, facts, question, context)
        return [Verdict(s, self.judge(sign)) for s, sign in zip(sentences, signs, strict=True)]

    def signs(
        self, sentences: list[str], facts: list[str], question: str, context: str = ""
    ) -> list[Signs]:
        """What the check weighs for each sentence; `judge` turns them into a verdict, and
        thresholds can be tried on the labelled set without encoding again."""
        claims = [claim_text(s) for s in sentences]
        clauses = [
            [c for c in _CLAUSE.split(claim) if len(content_words(c)) >= 3] for claim in claims
        ]
        flat = [c for group in clauses for c in group]
        # The question is encoded with the facts: an echo sits closer to it than to any fact.
        both = self._similarity(claims + flat, [*facts, question])
        sims, to_question = both[:, : len(facts)], both[:, len(facts)]
        # Each text's quantities are read once per answer, not once per sentence.
        per_fact = [quantities(fact) for fact in facts]
        asked_quantities = quantities(question)
        known = [q for found in per_fact for q in found] + asked_quantities
        in_facts = content_words(" ".join(facts))
        in_sources = in_facts | content_words(context)
        asked = content_words(question)
        asked_pairs = {(q.value, q.unit) for q in asked_quantities}
        out: list[Signs] = []
        at = len(claims)
        for i, claim in enumerate(claims):
            words = content_words(claim)
            stated = quantities(claim)
            best = int(np.argmax(sims[i])) if facts else 0
            clause_sims = (
                [float(sims[at + j].max()) for j in range(len(clauses[i]))] if facts else []
            )
            at += len(clauses[i])
            closest_first = [facts[j] for j in np.argsort(-sims[i])] if facts else []
            out.append(
                Signs(
                    claim=claim,
                    words=len(words),
                    boilerplate=len(words) < 2 or bool(_BOILERPLATE.match(claim)),
                    lead_in=claim.rstrip().endswith(":"),
                    refusal=bool(_REFUSAL.search(claim)),
                    # An echo restates the question; a fact in the question's words ("keep
                    # the thumb up") sits closer to the fact than to the question.
                    echo=len(words - asked) <= 1
                    and all((q.value, q.unit) in asked_pairs for q in stated)
                    and (not facts or float(to_question[i]) >= float(sims[i][best])),
                    missing=[q.text for q in _unmatched(stated, known)],
                    novel=sorted(words - in_facts),
                    similarity=float(sims[i][best]) if facts else 0.0,
                    weakest_clause=min(clause_sims, default=1.0),
                    negation_flip=negated(claim)
                    and not any(map(negated, self._near(facts, sims[i]))),
                    unbound=self._unbound(stated, per_fact, sims[i], asked_quantities),
                    swapped=(swapped_word(claim, facts[best]) or unsaid_opposite(claim, facts))
                    if facts
                    else None,
                    unanswered=sorted((words & asked) - in_sources),
                    contradiction=contradiction(claim, closest_first, _stem),
                )
            )
        return out

    def judge(self, signs: Signs) -> str | None:
        """Why the sentence is dropped, or None when the facts support it."""
        if signs.boilerplate:
            return "boilerplate: says nothing about the question"
        if signs.lead_in:
            return "a lead-in to a list, not a fact"
        if signs.refusal:
            return "a refusal, though the facts speak to the question"
        if signs.echo:
            return "an echo of the question"
        if signs.missing:
            return f"states {', '.join(signs.missing)}, which the facts do not"
        if signs.unbound:
            return f"takes {', '.join(signs.unbound)} from a fact about something else"
        if signs.unanswered:
            return f"the facts say nothing of {', '.join(signs.unanswered)}"
        if signs.swapped:
            return f"says {signs.swapped[0]!r} where the facts say {signs.swapped[1]!r}"
        if len(signs.novel) / signs.words > self.max_novel_share:
            return f"words not in the facts: {', '.join(signs.novel[:6])}"
        if signs.similarity < self.min_similarity:
            return f"no fact says this (closest similarity {signs.similarity:.2f})"
        if signs.weakest_clause < self.min_clause_similarity:
            return f"a clause no fact says (similarity {signs.weakest_clause:.2f})"
        if signs.negation_flip and signs.similarity >= self.flip_similarity:
            return "negates what the closest fact says"
        if signs.contradiction:
            return signs.contradiction
        return None

    def _near(self, facts: list[str], sims: np.ndarray) -> list[str]:
        """The facts about as close to the sentence's meaning as the closest one."""
        return [f for f, sim in zip(facts, sims, strict=True) if sim >= sims.max() - self.margin]

    def _unbound(
        self,
        stated: list[Quantity],
        per_fact: list[list[Quantity]],
        sims: np.ndarray,
        asked: list[Quantity],
    ) -> list[str]:
        """Quantities the sentence takes from a fact it does not otherwise resemble: the
        right number from the wrong rule ("a one-leg catch adds 10 seconds")."""
        if not per_fact:
            return []
        floor = sims.max() - self.margin
        near = [
            q for found, sim in zip(per_fact, sims, strict=False) if sim >= floor for q in found
        ]
        return [q.text for q in _unmatched(stated, near + asked)]

    def _similarity(self, claims: list[str], facts: list[str]) -> np.ndarray:
        if not claims or not facts:
            return np.zeros((len(claims), max(len(facts), 1)), dtype=np.float32)
        vectors = self.embedder.encode_cached(claims + facts)
        return vectors[: len(claims)] @ vectors[len(claims) :].T


def _unmatched(stated: list[Quantity], known: list[Quantity]) -> list[Quantity]:
    return [q for q in stated if not any(q.matches(k) for k in known)]
