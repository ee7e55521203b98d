"""Turning generated token ids into text, incrementally and with caller stop sequences applied."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class IncrementalDecoder:
    """Decodes a growing list of token ids into text deltas, one token at a time.

    Decoding a token alone is wrong for byte-level and SentencePiece vocabularies (a character may
    span tokens, a leading space may depend on the previous token), so each step decodes a short
    window of recent tokens and emits only the new suffix; an incomplete UTF-8 character (U+FFFD
    at the end) is held back until the next token completes it. Special tokens are kept so that
    ``<tool_call>`` survives on tokenizers where it is a special token.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add one token and return the text it completes (possibly empty)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return full_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Return any text still held back (an incomplete character at the very end)."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return full_text[len(prefix_text) :]


class StopSequenceFilter:
    """Cuts streamed text at the first caller stop sequence, never releasing any part of it.

    Text that could still be the beginning of a stop sequence is held back until later text
    decides it; the cut is where the earliest-starting stop sequence begins, as on whole text.
    """

    def __init__(self, stop: Sequence[str] | None) -> None:
        self._stops = [s for s in (stop or []) if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._pending = ""
        self.stopped = False

    def _scan(self, buffer: str, final: bool) -> str:
        cut = min((i for i in (buffer.find(s) for s in self._stops) if i >= 0), default=-1)
        hold = -1
        if not final:
            for start in range(max(0, len(buffer) - self._longest + 1), len(buffer)):
                tail = buffer[start:]
                if any(len(tail) < len(s) and s.startswith(tail) for s in self._stops):
                    hold = start
                    break
        if cut >= 0 and (hold < 0 or cut <= hold):
            self.stopped = True
            self._pending = ""
            return buffer[:cut]
        if hold >= 0:
            self._pending = buffer[hold:]
            return buffer[:hold]
        self._pending = ""
        return buffer

    def feed(self, text: str) -> str:
        """Return the part of ``text`` that is safe to release; sets ``stopped`` on a match."""
        if not self._stops:
            return text
        if self.stopped:
            return ""
        return self._scan(self._pending + text, final=False)

    def flush(self) -> str:
        """Release held-back text at the end of generation, cutting at a stop it completes."""
        if self.stopped or not self._pending:
            return ""
        return self._scan(self._pending, final=True)


def cut_at_stop_sequences(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Return ``text`` up to the first stop sequence, and whether one was found."""
    flt = StopSequenceFilter(stop)
    head = flt.feed(text)
    return (head, True) if flt.stopped else (head + flt.flush(), False)
