"""Whole-text parsing of Hermes tool calls: prose, valid calls and invalid call attempts.

Follows the parser policy (``docs/parser-policy.md``); in short:

- The output ends at the first end-of-turn token (``<|im_end|>``, ``<|im_start|>``, ``<|eot_id|>``,
  ``<|end_of_text|>``, ``<|endoftext|>``).
- A call attempt is ``<tool_call>`` followed, after whitespace (and repeated ``<tool_call>`` markers,
  and optionally a Markdown fence line such as ```` ```json ````, whose label sits on the fence's own
  line), by ``{`` or ``[``. Otherwise the
  tag is prose (so ``<tool_call>42</tool_call>`` is text). ``<tool_call>`` followed by nothing but
  whitespace (or a fence line, or a cut-off repeated tag) up to the end is a cut-off attempt.
- A value ends where its JSON structure closes (string-aware for ``"..."`` and ``'...'``), never at a
  literal ``</tool_call>``. Several values may follow each other in one block; a list is several
  calls (an empty list is an invalid attempt; a bad element is invalid on its own). After the
  values come optional stray closing brackets (a common slip, dropped), a closing fence when the
  block opened with one, and ``</tool_call>`` (a ``</tool_call>`` cut off at the very end counts);
  if something else follows, the block simply ended and that text is prose.
- A value cut off by the end of the text is invalid. The one repair: an object missing only its
  closing braces, followed outside any string by ``</tool_call>``.
- Decoding ladder: strict JSON (raw control characters allowed in strings; ``NaN``/``Infinity``
  refused), then JSON with trailing commas removed, then Python literal syntax (what
  ``ast.literal_eval`` accepts; tuples become lists; sets, bytes, complex numbers, non-finite floats
  and non-string keys make the call invalid).
- Normalising: ``name`` must be a non-empty string (surrounding whitespace is stripped); arguments
  come from ``arguments``, else ``parameters``; missing, ``null``, ``""`` (or whitespace) give ``{}``;
  a string is decoded once as JSON and must give an object.

Reasoning: a ``<think>...</think>`` or ``<scratch_pad>...</scratch_pad>`` block at the very start (after
optional whitespace) is split off as ``reasoning`` before anything else is parsed; tags inside it are
reasoning text, never calls, and a reply cut off inside it is all reasoning with empty content (see
:mod:`hermes_core.format._reasoning`).

Content: the prose before, between and after blocks, end-of-turn tokens removed. Its leading and
trailing whitespace is stripped, and where blocks (valid or invalid) were removed, the whitespace runs
that touched them collapse into the longest of them, so ``"First.\\n<block>\\nThen."`` gives
``"First.\\nThen."``. Whitespace inside the prose is kept as written.

Invalid attempts carry ``raw`` (the attempt as written: the JSON value, the re-serialised element of
a list, or the bare tag and what followed it), an ``error`` saying what is wrong, and ``name`` when a
top-level ``"name"`` string can still be read. Every attempt gets a fresh ``call_`` id; the streaming
parser (:mod:`hermes_core.format.stream_parser`) runs the very same state machine, so both agree on every
input.
"""

from __future__ import annotations

from hermes_core.format._blocks import CROSS, DONE, TEXT, BlockSplitter
from hermes_core.format._content import ContentJoiner, find_end_of_turn
from hermes_core.format._reasoning import REASONING, ReasoningSplitter, opens_with_reasoning
from hermes_core.types import InvalidToolCall, ParsedResponse, ToolCall


def parse_tool_calls(text: str) -> ParsedResponse:
    """Split a complete model output into reasoning, content, valid tool calls and invalid call attempts."""
    end = find_end_of_turn(text)
    if end >= 0:
        text = text[:end]
    reasoning = None
    if opens_with_reasoning(text):  # otherwise the splitter would pass all of it on as the reply
        splitter = ReasoningSplitter()
        reasoning_joiner = ContentJoiner()
        thoughts: list[str] = []
        reply: list[str] = []
        for kind, piece in splitter.push(text, final=True):
            if kind == REASONING:
                thoughts.append(reasoning_joiner.add(piece))
            else:
                reply.append(piece)
        reasoning = "".join(thoughts)
        text = "".join(reply)
    joiner = ContentJoiner()
    content: list[str] = []
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for item in BlockSplitter().push(text, final=True):
        kind = item[0]
        if kind == TEXT:
            piece = joiner.add(item[1])
            if piece:
                content.append(piece)
        elif kind == CROSS:
            joiner.cross()
        elif kind == DONE:
            for call in item[2]:
                if type(call) is ToolCall:
                    calls.append(call)
                else:
                    invalid.append(call)
    return ParsedResponse(
        content="".join(content), tool_calls=calls, invalid_tool_calls=invalid, reasoning=reasoning
    )
