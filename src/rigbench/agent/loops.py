"""Runaway replies, found while they stream so the request can be stopped early.

Small models fall into loops: one `sed` stage, one line of a file, one phrase, over and over until the
token limit. Or they run past the end of their turn and write the next turns of the conversation
themselves, chat markup included (a model whose GGUF has no chat template of its own gets llama-server's
ChatML, whose `<|im_end|>` it does not know as a stop token). Three signs, on the text so far:
- a turn marker of a chat template (`<|im_start|>`, `<start_of_turn>`, `<|eot_id|>`, ...) in the text;
- the tail is periodic: the same unit of 1..400 characters repeated back to back over at least
  `min_span` characters and at least `min_copies` times;
- among the last `window` non-empty lines, one line of at least 12 characters occurs `min_lines` times
  (a loop whose copies are separated by something that varies, such as a line number).
Legitimate code repeats too, so the spans are long: a reply that trips either has already spent
hundreds of tokens going nowhere."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel


class Runaway(BaseModel):
    unit: str          # the repeated text (the marker, for a turn marker)
    copies: int        # how many times it repeats at the tail
    span: int          # characters of the tail taken by the repetition
    sign: str          # "periodic", "lines" or "turn-marker"
    keep: int          # characters of the reply worth keeping: up to the first copy or the marker


# the turn boundaries of common chat templates: ChatML (Qwen), Gemma, Llama 3, Mistral, Phi, GPT-2
TURN_MARKERS = ("<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>", "<|eot_id|>",
                "<|start_header_id|>", "[INST]", "<|user|>", "<|endoftext|>")


def turn_marker(text: str) -> Runaway | None:
    """The first chat-template turn marker in the text: the model is writing past its own turn."""
    hits = [(i, m) for m in TURN_MARKERS if (i := text.find(m)) != -1]
    if not hits:
        return None
    i, m = min(hits)
    return Runaway(unit=m, copies=sum(text.count(x) for x in TURN_MARKERS), span=len(text) - i,
                   sign="turn-marker", keep=i)


def periodic_tail(text: str, max_period: int = 400, min_span: int = 240, min_copies: int = 3) -> Runaway | None:
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
            return Runaway(unit=text[n - p:], copies=span // p, span=span, sign="periodic", keep=n - span + p)
    return None


def repeated_lines(text: str, window: int = 16, min_lines: int = 8, min_len: int = 12) -> Runaway | None:
    """A line that fills at least `min_lines` of the last `window` non-empty lines."""
    lines = [s.strip() for s in text.splitlines()[:-1] if s.strip()]   # the last line may be unfinished
    tail = lines[-window:]
    if len(tail) < min_lines:
        return None
    line, n = Counter(tail).most_common(1)[0]
    if n >= min_lines and len(line) >= min_len:
        return Runaway(unit=line, copies=n, span=sum(len(s) + 1 for s in tail if s == line), sign="lines",
                       keep=text.find(line) + len(line))
    return None


def repetition(text: str) -> Runaway | None:
    """Is the reply so far degenerate? (any of the three signs)"""
    return turn_marker(text) or periodic_tail(text) or repeated_lines(text)


class Watcher:
    """Fed the streamed text piece by piece; checks the tail every `every` new characters."""

    def __init__(self, every: int = 48):
        self.every, self.text, self._checked = every, "", 0
        self.found: Runaway | None = None

    def feed(self, piece: str) -> Runaway | None:
        self.text += piece
        if self.found or len(self.text) - self._checked < self.every:
            return self.found
        self._checked = len(self.text)
        window = self.text[-4000:]
        found = turn_marker(self.text) or periodic_tail(window) or repeated_lines(window)
        if found and found.sign != "turn-marker":
            found.keep += len(self.text) - len(window)      # a position in the whole text
        self.found = found
        return found
