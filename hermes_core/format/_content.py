"""End-of-turn detection and the whitespace policy for the prose around tool-call blocks.

Both the whole-text and the streaming parser use these, so their ``content`` is identical.

Content policy (documented in :mod:`hermes_core.format.parser`): leading and trailing whitespace of the whole
content is dropped, and where call blocks were removed the whitespace runs that touched them collapse
to the longest of those runs (``"A.\\n<block>\\nB."`` gives ``"A.\\nB."``, not ``"A.\\n\\nB."``).
"""

from __future__ import annotations

END_OF_TURN_TOKENS = ("<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>")
_LONGEST_TOKEN = max(len(token) for token in END_OF_TURN_TOKENS)


def find_end_of_turn(text: str) -> int:
    """Index of the first end-of-turn token in ``text``, or -1 when there is none."""
    i = text.find("<|")
    while i >= 0:
        if text.startswith(END_OF_TURN_TOKENS, i):
            return i
        i = text.find("<|", i + 2)
    return -1


def end_of_turn_hold(text: str) -> int:
    """Where the tail of ``text`` that could still begin an end-of-turn token starts (``len`` if none)."""
    k = text.rfind("<", max(0, len(text) - _LONGEST_TOKEN + 1))
    if k >= 0:
        tail = text[k:]
        for token in END_OF_TURN_TOKENS:
            if token.startswith(tail):
                return k
    return len(text)


class ContentJoiner:
    """Applies the content whitespace policy to text pieces as they arrive, releasing what is final.

    Whitespace is held back until non-whitespace text follows it, because trailing whitespace is
    dropped and whitespace on both sides of a removed block is merged. Held runs are kept as lists
    and joined once, so a long whitespace run fed in tiny pieces still costs linear time.
    """

    __slots__ = ("best", "crossed", "held", "started")

    def __init__(self) -> None:
        self.started = False  # some non-whitespace content was released
        self.held: list[str] = []  # the whitespace run since the last released text (or removed block)
        self.best = ""  # while crossing blocks: the longest whitespace run that touched one
        self.crossed = False

    def add(self, piece: str) -> str:
        """Take a piece of prose; return the part of the content that is now certain."""
        body_end = len(piece.rstrip())
        if body_end == 0:
            if piece:
                self.held.append(piece)
            return ""
        lead = len(piece) - len(piece.lstrip())
        if self.held:
            self.held.append(piece[:lead])
            gap = "".join(self.held)
        else:
            gap = piece[:lead]
        if self.crossed:
            if len(self.best) > len(gap):
                gap = self.best
            self.crossed = False
            self.best = ""
        self.held = [piece[body_end:]] if body_end < len(piece) else []
        if self.started:
            return gap + piece[lead:body_end]
        self.started = True
        return piece[lead:body_end]

    def cross(self) -> None:
        """Note that a call block was removed at this point of the text."""
        run = "".join(self.held)
        if not self.crossed:
            self.best = run
            self.crossed = True
        elif len(run) > len(self.best):
            self.best = run
        self.held = []
