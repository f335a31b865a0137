"""Numbers as whole quantities: "7/8 inch", "10-second", "$5,000", "eight seconds".

The support check compares the quantities a sentence states with those the facts state. It
must not read "7/8" as a 7 and an 8, a citation "(1)" as a claim, or miss that "eight" is 8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

NUMBER_WORDS: dict[str, int | Fraction] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "dozen": 12,
    "half": Fraction(1, 2), "quarter": Fraction(1, 4),
}  # fmt: skip
# Unit words, folded to one spelling; a number with none of them after it has no unit.
_UNITS = {
    "second": "second", "sec": "second", "secs": "second", "minute": "minute", "min": "minute",
    "hour": "hour", "hr": "hour", "day": "day", "week": "week", "month": "month",
    "year": "year", "yr": "year", "foot": "foot", "feet": "foot", "ft": "foot", "'": "foot",
    "inch": "inch", "inches": "inch", '"': "inch", "yard": "yard",
    "pound": "pound", "lb": "pound", "lbs": "pound", "ounce": "ounce", "oz": "ounce",
    "point": "point", "pt": "point", "percent": "percent", "%": "percent",
    "dollar": "dollar", "$": "dollar", "mile": "mile", "mph": "mph", "strand": "strand",
    "hand": "hand", "head": "head", "wrap": "wrap", "time": "time", "barrel": "barrel",
    "loop": "loop", "step": "step", "stride": "stride", "run": "run", "go": "go",
    "judge": "judge", "leg": "leg", "horn": "horn",
}  # fmt: skip
_SPELLED = "|".join(sorted(NUMBER_WORDS, key=len, reverse=True))
_QUANTITY = re.compile(
    r"(?P<money>\$)?\s?"
    r"(?:(?P<mixed>\d+)[\s-]+(?=\d+/\d+))?"  # the 1 of "1 1/2"
    r"(?P<num>\d+/\d+|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
    rf"|\b(?:{_SPELLED})(?:[\s-](?:{_SPELLED}))?\b)"
    r"(?P<unit>\s*(?:%|'|\"|-?\s?[a-z]+))?",
    re.I,
)
# A list marker ("1. ", "2) ") or a citation ("[1]", "(1)", "【1】") is not a claim.
_NOT_A_CLAIM = re.compile(
    r"^\s*\d{1,2}[.)]\s|\[\s*(?:source\s*)?\d{1,2}(?:\s*[,;]\s*\d{1,2})*\s*\]"
    r"|\(\s*(?:source\s*)?\d{1,2}(?:\s*[,;]\s*\d{1,2})*\s*\)|【[^】]*】",
    re.I | re.M,
)


_RANGE = re.compile(r"\s*(?:-|\u2013|to|or)\s*", re.I)


@dataclass(frozen=True)
class Quantity:
    value: Fraction
    unit: str | None
    text: str

    def matches(self, other: Quantity) -> bool:
        """Same amount, and the same unit unless either leaves the unit unsaid."""
        return self.value == other.value and (
            self.unit is None or other.unit is None or self.unit == other.unit
        )


def _value(text: str) -> Fraction | None:
    text = text.lower().replace(",", "")
    if "/" in text:
        top, bottom = text.split("/")
        return Fraction(int(top), int(bottom)) if int(bottom) else None
    if text[0].isdigit():
        return Fraction(text)
    words = re.split(r"[\s-]+", text)
    values = [Fraction(NUMBER_WORDS[w]) for w in words if w in NUMBER_WORDS]
    if len(values) == 2 and words[1] == "hundred":
        return values[0] * 100
    return sum(values, Fraction(0)) if values else None


def _unit(raw: str | None, *, money: bool) -> str | None:
    if money:
        return "dollar"
    if not raw:
        return None
    word = raw.strip(" -").lower()
    if word in _UNITS:
        return _UNITS[word]
    singular = word[:-1] if word.endswith("s") else word
    return _UNITS.get(singular)


def quantities(text: str) -> list[Quantity]:
    """Every quantity the text states, list markers and citation numbers left out."""
    found: list[Quantity] = []
    text = _NOT_A_CLAIM.sub(" ", text)
    matches = list(_QUANTITY.finditer(text))
    for i, match in enumerate(matches):
        value = _value(match.group("num"))
        if value is None:
            continue
        if match.group("mixed"):
            value += int(match.group("mixed"))
        spelled = not match.group("num")[0].isdigit()
        unit = _unit(match.group("unit"), money=bool(match.group("money")))
        if unit is None and i + 1 < len(matches):  # "30-31 foot", "15 to 20 minutes"
            between = text[match.end() : matches[i + 1].start()]
            if _RANGE.fullmatch(between):
                after = matches[i + 1]
                unit = _unit(after.group("unit"), money=bool(after.group("money")))
        # "One of the ropers", "half the time": not a stated amount; "half as much" is one.
        ratio = value != 1 and (match.group("unit") or "").strip().lower() == "as"
        if spelled and unit is None and value in (1, Fraction(1, 2), Fraction(1, 4)) and not ratio:
            continue
        # Shown in reasons: "$50", "7/8 inch"; a following word that is no unit is left off.
        worded = _unit(match.group("unit"), money=False) is not None
        end = match.end() if worded else match.end("num")
        found.append(Quantity(value, unit, text[match.start() : end].strip()))
    return found


def unsupported_quantities(sentence: str, known: list[Quantity]) -> list[Quantity]:
    """The sentence's quantities that no known quantity (from the facts) matches."""
    return [q for q in quantities(sentence) if not any(q.matches(k) for k in known)]
