"""Runaway repetition in a model's reply, found while it streams so the request can be stopped early.

Small models fall into loops: one `sed` stage, one line of a file, one phrase, over and over until the
token limit. Two signs, both on the tail of the text so far:
- the tail is periodic: the same unit of 1..400 characters repeated back to back over at least
  `min_span` characters and at least `min_copies` times;
- among the last `window` non-empty lines, one line of at least 12 characters occurs `min_lines` times
  (a loop whose copies are separated by something that varies, such as a line number).
Legitimate code repeats too, so the spans are long: a reply that trips either has already spent
hundreds of tokens going nowhere."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel


class Repetition(BaseModel):
    unit: str          # the repeated text
    copies: int        # how many times it repeats at the tail
    span: int          # characters of the tail taken by the repetition
    sign: str          # "periodic" or "lines"


def periodic_tail(text: str, max_period: int = 400, min_span: int = 240, min_copies: int = 3) -> Repetition | None:
    """The shortest unit that the tail of `text` repeats over at least `min_span` characters, if any."""
    n = len(text)
    for p in range(1, min(max_period, n // min_copies) + 1):
        run = 0     # characters at the end equal to the character p before them
        i = n - 1
        while i >= p and text[i] == text[i - p]:
            run += 1
            i -= 1
        span = run + p
        if span >= min_span and span // p >= min_copies:
            return Repetition(unit=text[n - p:], copies=span // p, span=span, sign="periodic")
    return None


def repeated_lines(text: str, window: int = 16, min_lines: int = 8, min_len: int = 12) -> Repetition | None:
    """A line that fills at least `min_lines` of the last `window` non-empty lines."""
    lines = [s.strip() for s in text.splitlines()[:-1] if s.strip()]   # the last line may be unfinished
    tail = lines[-window:]
    if len(tail) < min_lines:
        return None
    line, n = Counter(tail).most_common(1)[0]
    if n >= min_lines and len(line) >= min_len:
        return Repetition(unit=line, copies=n, span=sum(len(s) + 1 for s in tail if s == line), sign="lines")
    return None


def repetition(text: str) -> Repetition | None:
    """Is the reply so far degenerate? (either sign)"""
    return periodic_tail(text) or repeated_lines(text)


class Watcher:
    """Fed the streamed text piece by piece; checks the tail every `every` new characters."""

    def __init__(self, every: int = 48):
        self.every, self.text, self._checked = every, "", 0
        self.found: Repetition | None = None

    def feed(self, piece: str) -> Repetition | None:
        self.text += piece
        if len(self.text) - self._checked >= self.every:
            self._checked = len(self.text)
            self.found = repetition(self.text[-4000:])
        return self.found
