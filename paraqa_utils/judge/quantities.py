"""Quantities in a sentence, as (value, dimension) in base units: "a dozen" = 12, "half an hour" = 30 minutes,
"two kilometres" = 2000 metres, "fifty bucks" = 50 dollars, "7:15" a clock time. Used by the learned judge to
tell a right quantity in other words from a wrong one in the same unit."""
from __future__ import annotations

import re

from paraqa_utils.judge.offline import written_times

ONES = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                   "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i >= 2}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
ORDINALS = {w: i + 1 for i, w in enumerate("first second third fourth fifth sixth seventh eighth ninth tenth eleventh "
                                           "twelfth thirteenth fourteenth fifteenth sixteenth seventeenth "
                                           "eighteenth nineteenth twentieth".split())}
COUNT_WORDS = {"dozen": 12, "couple": 2, "pair": 2, "half": 0.5, "quarter": 0.25, "once": 1, "twice": 2,
               "thrice": 3, "trio": 3, "quartet": 4, "fiver": 5, "tenner": 10, "score": 20, "single": 1, "both": 2, "triple": 3, "double": 2}
# unit word -> (dimension, factor to the base unit)
UNITS = {
    "second": ("time", 1 / 60), "sec": ("time", 1 / 60), "minute": ("time", 1), "min": ("time", 1),
    "hour": ("time", 60), "hr": ("time", 60), "day": ("time", 1440), "night": ("time", 1440),
    "week": ("time", 10080), "fortnight": ("time", 20160), "month": ("time", 43200), "year": ("time", 525600),
    "dollar": ("usd", 1), "buck": ("usd", 1), "$": ("usd", 1), "cent": ("usd", 0.01),
    "pound": ("gbp", 1), "quid": ("gbp", 1), "£": ("gbp", 1), "pence": ("gbp", 0.01), "p": ("gbp", 0.01),
    "euro": ("eur", 1), "€": ("eur", 1),
    "metre": ("length", 1), "meter": ("length", 1), "m": ("length", 1), "kilometre": ("length", 1000),
    "kilometer": ("length", 1000), "km": ("length", 1000), "k": ("length", 1000), "mile": ("length", 1609.34),
    "centimetre": ("length", 0.01), "centimeter": ("length", 0.01), "cm": ("length", 0.01),
    "foot": ("length", 0.3048), "feet": ("length", 0.3048), "yard": ("length", 0.9144),
    "gram": ("mass", 1), "g": ("mass", 1), "kilogram": ("mass", 1000), "kilo": ("mass", 1000), "kg": ("mass", 1000),
    "litre": ("volume", 1), "liter": ("volume", 1), "ml": ("volume", 0.001),
    "percent": ("percent", 1), "%": ("percent", 1), "degree": ("degree", 1),
    "am": ("clock", None), "pm": ("clock", None), "o'clock": ("clock", None),
}
PHRASES = [  # spoken forms read before the numbers
    (r"\bhalf an hour\b", "30 minute"), (r"\ban hour and a half\b", "90 minute"), (r"\bhalf a day\b", "720 minute"),
    (r"\b(a )?quarter of an hour\b", "15 minute"),
    (r"\bthree quarters of an hour\b", "45 minute"), (r"\bhalf a dozen\b", "6"), (r"\bhalf a mile\b", "0.5 mile"),
    (r"\ba dozen\b", "12"), (r"\ba (couple|pair) of\b", "2"), (r"\ba hundred\b", "100"),
    (r"\ba thousand\b", "1000"), (r"\bnoon\b|\bmidday\b", "12:00"),
    (r"\bmidnight\b", "0:00"),
    (r"\ban? (second|minute|hour|day|week|fortnight|month|year|mile|kilometre|kilometer|metre|meter|kilo|pound|dollar"
     r"|euro)\b", r"1 \1"), (r"\bper cent\b", "percent"),
]
TOKEN = re.compile(r"\d+(?:st|nd|rd|th)\b|\d+(?:[.,:]\d+)*|[$£€%]|[a-z]+(?:'[a-z]+)?")


def _word_number(toks: list[str], i: int) -> tuple[float | None, int]:
    """A number written in words from toks[i] ("twenty five", "two hundred and ten"): (value, tokens used)."""
    total, cur, j, seen = 0.0, 0.0, i, False
    while j < len(toks):
        t = toks[j]
        parts = t.split("-")
        if all(p in ONES or p in TENS for p in parts) and len(parts) <= 2:
            cur += sum(ONES.get(p, TENS.get(p, 0)) for p in parts)
        elif t in SCALES and seen:
            cur = max(cur, 1) * SCALES[t]
            if SCALES[t] >= 1000:
                total, cur = total + cur, 0.0
        elif t == "and" and seen and j + 1 < len(toks) and (toks[j + 1] in ONES or toks[j + 1] in TENS):
            pass
        else:
            break
        seen, j = True, j + 1
    return (total + cur, j - i) if seen else (None, 0)


FRACTIONS = {"half": 0.5, "third": 1 / 3, "quarter": 0.25, "fifth": 0.2, "tenth": 0.1}
MINUTES_TO = re.compile(r"\b(\d+|[a-z]+) minutes? (past|after|to|before) (\d+|[a-z]+)\b")


def _prepare(text: str) -> str:
    s = (text or "").lower()
    s = re.sub(r"\b([ap])\.m\.?", r"\1m", s)

    def minutes(m: re.Match) -> str:
        mins, hour = m.group(1), m.group(3)
        mm = int(mins) if mins.isdigit() else ONES.get(mins, TENS.get(mins))
        h = int(hour) if hour.isdigit() else ONES.get(hour)
        if mm is None or h is None or not 0 < mm < 60:
            return m.group(0)
        hh, mm = (h, mm) if m.group(2) in ("past", "after") else ((h - 1) % 12 or 12, 60 - mm)
        return f"{hh}:{mm:02d}"
    s = MINUTES_TO.sub(minutes, written_times(s))  # "quarter to ten" -> "9:45" (the facet rules' reading)
    s = re.sub(r"\b(?:a|one) (half|third|quarter|fifth|tenth) of an? ([a-z]+)\b",
               lambda m: f"{FRACTIONS[m.group(1)]:.4f} {m.group(2)}", s)
    s = re.sub(r"\b(\d+|[a-z]+) and a half\b", lambda m: (f"{int(m.group(1)) + 0.5}" if m.group(1).isdigit() else
                                                        f"{ONES[m.group(1)] + 0.5}" if m.group(1) in ONES else
                                                        m.group(0)), s)
    s = re.sub(r"\bhalf an? (?!dozen|hour and)([a-z]+)\b", r"0.5 \1", s)
    for pat, rep in PHRASES:
        s = re.sub(pat, rep, s)
    return s


def _scan(text: str) -> list[tuple[float, str, str, int, int]]:
    """(value in the base unit, dimension, unit word, first token, token after) for every quantity."""
    toks = TOKEN.findall(_prepare(text))
    out: list[tuple[float, str, str, int, int]] = []
    i = 0
    while i < len(toks):
        t, value, used = toks[i], None, 1
        if t in ("$", "£", "€") and i + 1 < len(toks) and re.fullmatch(r"\d+(?:[.,]\d+)?", toks[i + 1]):
            out.append((float(toks[i + 1].replace(",", "")) * UNITS[t][1], UNITS[t][0], t, i, i + 2))
            i += 2
            continue
        if re.fullmatch(r"\d+:\d\d", t):
            h, m = (int(x) for x in t.split(":"))
            out.append(((h % 12) * 60 + m, "clock", "", i, i + 1))
            i += 1
            continue
        if t in ORDINALS or re.fullmatch(r"\d+(st|nd|rd|th)", t):
            if t != "second" or (i > 0 and toks[i - 1] == "the"):  # "a second" is a unit (PHRASES)
                out.append((float(ORDINALS.get(t) or int(re.sub(r"\D", "", t))), "ordinal", "", i, i + 1))
                i += 1
                continue
        if t == "one" and ((i > 0 and toks[i - 1] in ("the", "this", "that", "which", "no", "any", "every")) or
                           (i + 1 < len(toks) and toks[i + 1] in ("who", "that", "which", "of", "another"))):
            i += 1  # "the one who", "one of them": a pronoun, not a count
            continue
        if re.fullmatch(r"\d+(?:[.,]\d+)?", t):
            value = float(t.replace(",", "")) if t.count(",") != 1 or len(t.split(",")[1]) == 3 else float(
                t.replace(",", "."))
        elif t in COUNT_WORDS:
            value = COUNT_WORDS[t]
        else:
            value, used = _word_number(toks, i)
            used = max(used, 1)
        if value is None:
            i += 1
            continue
        j = i + used
        if j < len(toks) and toks[j] in ("dozen", "hundred", "thousand") and toks[i] not in COUNT_WORDS:
            value, j = value * {"dozen": 12, "hundred": 100, "thousand": 1000}[toks[j]], j + 1
        if j < len(toks) and toks[j] == "of":  # "a couple of hours"
            j += 1
        unit = toks[j] if j < len(toks) else ""
        unit_key = unit if unit in UNITS else (unit[:-1] if unit.endswith("s") and unit[:-1] in UNITS else
                                                ("" if not unit.endswith("es") or unit[:-2] not in UNITS else unit[:-2]))
        if unit_key:
            dim, factor = UNITS[unit_key]
            j += 1
            out.append(((int(value) % 12) * 60 if dim == "clock" else value * factor, dim, unit_key, i, j))
        else:
            out.append((value, "count", "", i, j))
        i = max(j, i + 1)
    return _merge(out, toks)


def _merge(found: list[tuple[float, str, str, int, int]], toks: list[str]) -> list[tuple[float, str, str, int, int]]:
    """"a week and three days" -> 10 days; "four pounds fifty" -> 4.50 pounds."""
    out: list[tuple[float, str, str, int, int]] = []
    for q in found:
        if out:
            v, d, u, a, b = out[-1]
            gap = toks[b:q[3]]
            if (d in ("time", "length", "mass") and q[1] == d and gap in ([], ["and"]) and
                    UNITS[q[2]][1] < UNITS[u][1]):
                out[-1] = (v + q[0], d, u, a, q[4])
                continue
            if d in ("usd", "gbp", "eur") and q[1] == "count" and gap in ([], ["and"]) and 0 < q[0] < 100:
                out[-1] = (v + q[0] / 100, d, u, a, q[4])
                continue
        out.append(q)
    return out


def quantities(text: str) -> list[tuple[float, str]]:
    """Every quantity in `text` as (value in the base unit, dimension); a bare count has dimension "count", a
    clock time "clock" (minutes after midnight on a 12-hour dial)."""
    return [(v, d) for v, d, *_ in _scan(text)]


def compare(reference: str, answer: str) -> tuple[bool, float, bool]:
    """(the reference gives a quantity, the share of its quantities the answer gives, the answer gives a quantity
    of a dimension the reference has but a value it does not)."""
    ref, ans = _scan(reference), _scan(answer)
    if not ref:
        return False, 0.0, False

    def same(a: tuple, b: tuple) -> bool:
        # converted across unit systems ("two miles", "3 kilometres") the figures are rounded: within 10 %
        tol = 0.1 if a[2] and b[2] and a[1] == b[1] and UNITS[a[2]][1] != UNITS[b[2]][1] else 1e-6
        return abs(a[0] - b[0]) <= tol * max(1.0, abs(b[0])) and (a[1] == b[1] or "count" in (a[1], b[1]))
    matched = sum(any(same(a, r) for a in ans) for r in ref) / len(ref)
    dims = {r[1] for r in ref}
    conflict = any(a[1] in dims and not any(same(a, r) for r in ref) for a in ans)
    return True, matched, conflict
