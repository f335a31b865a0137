"""Contradictions that keep the facts' words: a sentence can share almost every word with a
fact, and embed close to it, yet say the reverse. A small model does this by swapping a
word for its opposite or two words' places ("a short score favors fast horses"), by
asserting what a fact forbids ("give the horse a pain medication" against "do not give
medications without a vet"), or by making a rule absolute ("only open to professionals").
Each check here reads words and their order, which an embedding mostly ignores.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from server.chat.quantities import NUMBER_WORDS

_WORD = re.compile(r"[a-z][a-z']*")
# The parts of a sentence that a swap of opposites is looked for in, each on its own.
_PARTS = re.compile(r"[;,]\s+|\s+(?:because|so|while|whereas)\s+", re.I)
_TOKEN = re.compile(r"[a-z][a-z']*|\d+(?:[./]\d+)?")
# Words said two ways, folded so that "bigger riders" and "larger riders" read alike.
_SAME = {"large": "big", "huge": "big", "little": "small", "quick": "fast"}

# Words a small model swaps for their opposite ("tracks to the right", "headers prefer
# stiffer ropes"), and the roles of one run that it swaps ("the hazer throws the steer").
_OPPOSITES = [
    ("left", "right"), ("header", "heeler"), ("heading", "heeling"), ("head", "heel"),
    ("hazer", "bulldogger"), ("front", "hind"), ("inside", "outside"), ("soft", "stiff"),
    ("long", "short"), ("big", "small"), ("more", "less"),
    ("more", "fewer"), ("before", "after"), ("first", "last"), ("hot", "cold"),
    ("warm", "cold"), ("slow", "fast"), ("legal", "illegal"), ("early", "late"),
    ("heavy", "light"), ("open", "closed"), ("same", "different"), ("most", "least"),
    ("safest", "dangerous"), ("add", "subtract"), ("increase", "decrease"),
    ("start", "finish"), ("beginner", "experienced"), ("beginner", "advanced"),
    ("young", "old"), ("required", "optional"), ("ground", "air"), ("heat", "cold"),
    ("first", "second"), ("second", "third"), ("first", "third"), ("including", "without"),
]  # fmt: skip
# "One front leg and both hind legs": a quantifier swapped between two nouns. Too common to
# mark a word as swapped on its own, it counts only when the swap restores a fact's order.
_QUANTIFIERS = [("one", "both")]


def _table(pairs: list[tuple[str, str]]) -> dict[str, set[str]]:
    table: dict[str, set[str]] = {}
    for a, b in pairs:
        table.setdefault(a, set()).add(b)
        table.setdefault(b, set()).add(a)
    return table


_OPPOSITE = _table(_OPPOSITES)
_REVERSIBLE = _table(_OPPOSITES + _QUANTIFIERS)
# The words that make a rule absolute; a fact that says so uses one of them too.
_ABSOLUTE = {"only", "always", "never", "solely", "exclusively"}
# Superlatives that rank: "the safest event" is a judgement only a fact can make.
_SUPERLATIVE = set(
    "best worst safest easiest hardest fastest slowest strongest weakest greatest highest "
    "lowest toughest simplest riskiest".split()
)
_NEGATION = re.compile(
    r"\b(?:not|never|no|cannot|don't|doesn't|isn't|aren't|avoid|without|skip)\b|n't\b", re.I
)
# A verb negated, which denies what follows; "no time" or "without a saddle" names a thing.
_DENIAL = re.compile(r"\b(?:not|never|cannot)\b|n't\b", re.I)
# A negation reaches to the end of its clause: "is not legal, because ..." negates "legal".
_CLAUSE_END = re.compile(r"[;,.:]|\b(?:but|because|while|which|so|and)\b", re.I)
# Words too common to tie a sentence to a fact's subject or predicate.
_LIGHT = set(
    "a an the and or of to in on at by for with from is are was were be been it its this "
    "that as if then so can could will would should may might must do does did has have had "
    "usually commonly generally often most many some any all also only just very up out "
    "there their they them he she his her you your one".split()
)


def base(word: str) -> str:
    """The word's opposite-table form: "stiffer", "shorten", "loping" fold to their base,
    so "start longer and shorten later" pairs with "a shorter rope ... go longer"."""
    word = word.lower().removesuffix("'s")
    word = _SAME.get(word, word)
    if word in _REVERSIBLE:
        return word
    for cut, add in (("ier", "y"), ("est", ""), ("er", ""), ("en", ""), ("r", ""), ("s", "")):
        stem = word[: -len(cut)] + add if word.endswith(cut) else ""
        stem = _SAME.get(stem, stem)
        if stem in _REVERSIBLE:
            return stem
        if stem and stem[-1] == stem[-2:-1] and stem[:-1] in _REVERSIBLE:  # "bigger"
            return stem[:-1]
    return word


def tokens(text: str, stem: Callable[[str], str]) -> list[str]:
    """The text's words in order, light words left out, opposites in their base form.
    `stem` is the support check's stemmer, so both checks fold words the same way."""
    out: list[str] = []
    for word in _TOKEN.findall(text.lower()):
        folded = base(word)
        if folded in _REVERSIBLE:
            out.append(folded)
        elif word[0].isdigit() or word in NUMBER_WORDS:  # "fifteen-inch" and "15 inch" alike
            out.append(str(NUMBER_WORDS.get(word, word)))
        elif word not in _LIGHT and len(word) > 2:
            out.append(stem(word))
    return out


def _common(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence: how much of a's word order b keeps."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b):
            prev, row[j + 1] = row[j + 1], prev + 1 if x == y else max(row[j + 1], row[j])
    return row[-1]


def reversed_pair(claim: list[str], facts: list[list[str]]) -> tuple[str, str] | None:
    """A pair of opposites the claim uses the other way round from the facts: with the
    pair swapped, some fact keeps more of the claim's word order than any fact keeps of
    the claim as written ("a short score favors fast horses" against "a long score
    favors fast horses; a short score rewards quick reactions")."""
    if not facts:
        return None
    as_written = max(_common(claim, fact) for fact in facts)
    for word in dict.fromkeys(w for w in claim if w in _REVERSIBLE):
        for other in sorted(_REVERSIBLE[word]):
            swap = {word: other, other: word}
            swapped = [swap.get(w, w) for w in claim]
            best = max(_common(swapped, fact) for fact in facts)
            # The swapped reading must cover most of the claim, or the gain is chance.
            if best > as_written and best >= max(3, 0.6 * len(claim)):
                return word, other
    return None


def swapped_word(claim: str, fact: str) -> tuple[str, str] | None:
    """A word of the claim whose opposite the fact uses instead (and not the word itself)."""
    claim_words = {base(w) for w in _WORD.findall(claim.lower())}
    fact_words = {base(w) for w in _WORD.findall(fact.lower())}
    for word in sorted(claim_words - fact_words):
        for opposite in sorted(_OPPOSITE.get(word, set()) & fact_words - claim_words):
            return word, opposite
    return None


def unsaid_opposite(claim: str, facts: list[str]) -> tuple[str, str] | None:
    """A word of the claim that no fact uses while the facts use its opposite: the facts
    say "start with walking" and never "finish", so "finish with walking" is not theirs."""
    claim_words = {base(w) for w in _WORD.findall(claim.lower())}
    fact_words = {base(w) for fact in facts for w in _WORD.findall(fact.lower())}
    for word in sorted(claim_words - fact_words):
        for opposite in sorted(_OPPOSITE.get(word, set()) & fact_words):
            return word, opposite
    return None


def negated(text: str) -> bool:
    """Whether the text negates anything, a thing ("no time") or a verb ("does not")."""
    return bool(_NEGATION.search(text))


def _denials(fact: str, stem: Callable[[str], str]) -> list[tuple[set[str], list[str]]]:
    """Each negated clause of the fact: the words before the negation (its subject) and the
    words it denies, up to the end of the clause."""
    out: list[tuple[set[str], list[str]]] = []
    for clause in re.split(r"[;:]|\.\s", fact):
        found = _DENIAL.search(clause)
        if found:
            rest = clause[found.end() :]
            end = _CLAUSE_END.search(rest)
            scope = rest[: end.start()] if end else rest
            out.append((set(tokens(clause[: found.start()], stem)), tokens(scope, stem)))
    return out


def denied(claim: list[str], closest_first: list[str], stem: Callable[[str], str]) -> str | None:
    """What a negated clause of a fact denies and the claim, not negated, asserts of the
    same subject ("do not give medications" against "give the horse a pain medication"),
    unless a fact closer to the claim asserts it ("slips to the neck is still legal")."""
    words = set(claim)
    asserted: set[str] = set()
    for fact in closest_first:
        denials = _denials(fact, stem)
        for before, scope in denials:
            hits = [word for word in scope if word in words and word not in asserted]
            # Two subject words: one shared word ("barrel") ties too many sentences together.
            # A prohibition ("do not give medications") has no subject: two denied words then.
            if hits and (len(words & before) >= 2 or (not before and len(set(hits)) >= 2)):
                return hits[0]
        asserted |= set(tokens(fact, stem)) - {w for _, scope in denials for w in scope}
    return None


def absolute(claim: str, facts: list[str]) -> str | None:
    """An absolute word ("only", "always") or a ranking ("the safest") that no fact uses:
    the sentence makes a rule stricter, or a judgement, that the facts do not."""
    words = set(_WORD.findall(claim.lower())) & (_ABSOLUTE | _SUPERLATIVE)
    in_facts = {w for fact in facts for w in _WORD.findall(fact.lower())}
    return min(words - in_facts, default=None)


def contradiction(claim: str, closest_first: list[str], stem: Callable[[str], str]) -> str | None:
    """How the claim says the reverse of the facts (closest to its meaning first) in their
    own words, or None."""
    fact_tokens = [tokens(fact, stem) for fact in closest_first]
    for part in [claim, *_PARTS.split(claim)]:
        words = tokens(part, stem)
        if len(words) >= 3 and (pair := reversed_pair(words, fact_tokens)):
            return f"uses {pair[0]!r} and {pair[1]!r} the other way round from the facts"
    if not negated(claim) and (word := denied(tokens(claim, stem), closest_first, stem)):
        return f"asserts {word!r} where a fact denies it"
    if word := absolute(claim, closest_first):
        return f"says {word!r}, which no fact does"
    return None
