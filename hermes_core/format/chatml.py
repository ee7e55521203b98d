"""Renders whole conversations as Hermes ChatML, split into structure and untrusted-content segments.

This is the layout of Hermes 2 Pro's model-card format, the default; other families (Hermes 3's
``tool_use`` template, Hermes 4, Qwen2.5/Qwen3) change the system turn, the tool-result turn and the
generation prompt through their ``variants.ChatVariant``, with the same structure/content split.

Layout (``S`` = structure, special; ``C`` = content, tokenized with ``split_special_tokens=True``)::

    S<|im_start|>system\\n  [tools or JSON-mode prompt]  [S\\n\\n]  C<caller's system text>  S<|im_end|>\\n
    S<|im_start|>user\\n C<text> S<|im_end|>\\n
    S<|im_start|>assistant\\n C<text> [S\\n] (S<tool_call>\\n C{"name": ..., "arguments": ...} S\\n</tool_call>)*
        joined by S\\n, then S<|im_end|>\\n
    S<|im_start|>tool\\n (S<tool_response>\\n C{"name": ..., "content": ...} S\\n</tool_response>)* joined by S\\n,
        then S<|im_end|>\\n   (consecutive tool messages share this one turn)
    S<|im_start|>assistant\\n   (the generation prompt)

Decisions where the format leaves a choice:
- The caller's leading system message(s) go AFTER the tools / JSON-mode prompt in the one system turn,
  separated by a blank line: the trained prompt stays at the exact trained position, and a KV prefix
  cache shares it across different caller system prompts. Several leading system messages are joined by a
  blank line; a system message later in the conversation is rendered in place as its own system turn.
- Tool calls and tool responses are written with ``json.dumps(..., ensure_ascii=False)`` (as the model
  emits them and as HF's ``tojson`` writes them); the ``<tools>`` lines use plain ``json.dumps``. In all
  of them, and in rejected attempts and raw tool results, the ``<`` of a Hermes tag (``<tool_call>``,
  ``</tool_response>``, ...) is written ``\\u003c`` (``prompts.escape_structure_tags``): an argument or
  result copied from untrusted text cannot close its block or open a call as text. Other text is unchanged.
- A tool result that is a string holding a JSON object or array is embedded as that JSON value (so
  ``'{"temp": 21}'`` reads as ``"content": {"temp": 21}``, like the seed's dict); any other string stays
  a JSON string; non-string values are embedded as JSON (unserialisable leaves via ``str``).
- A tool message's name comes from ``name``, else from the earlier assistant tool call with the same
  ``tool_call_id``; if neither exists a ``UnsupportedOptionError`` says how to fix it.
- ``role="developer"`` is treated as ``system``; any other unknown role is an error.
- With both tools and a ``response_format``, the variant's tools system turn is followed by a system turn
  of its own holding the final-answer schema prompt (``prompts.answer_schema_prompt_segments``): the
  trained tools prompt stays exactly as it is for every family, and its KV prefix is shared with
  tools-only requests.
- An assistant turn's rejected call attempts (``Message.invalid_tool_calls``) are written after its
  valid calls, each as the model wrote it inside ``<tool_call>`` tags, and each is answered with its
  error (``rejected_calls.rejection_response``): a tool message with the attempt's id is rendered as
  that error, and attempts no following tool message answers get it appended to the tool turn (or a
  tool turn of their own). Stand-in calls for rejected attempts are not rendered. See
  ``hermes_core.format.rejected_calls`` for why.
- An earlier assistant turn's ``reasoning`` is left out of the prompt, as the reasoning models' cards
  advise; ``keep_reasoning=True`` writes it back before the turn's text, in the variant's reasoning
  tags (``<think>`` when the variant has none): ``S<think>\n C<reasoning> S\n</think>\n\n``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.prompts import (
    PromptSegment,
    answer_schema_prompt_segments,
    embedded_payload,
    escape_structure_tags,
    response_schema,
)
from hermes_core.format.rejected_calls import is_stand_in, rejection_response
from hermes_core.format.tokenize import encode
from hermes_core.format.tool_specs import to_tool_specs
from hermes_core.format.variants import THINK, ChatVariant, ReasoningBlock, get_variant, raw_tool_content
from hermes_core.types import InvalidToolCall, Message, ToolCall, new_call_id

__all__ = ["PromptSegment", "RenderedPrompt", "render_conversation", "to_messages"]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
_ROLES = {"system", "user", "assistant", "tool"}
_ROLE_ALIASES = {"developer": "system"}


@dataclass
class RenderedPrompt:
    """A rendered prompt: ``segments`` in order; ``special`` marks structure, the rest is content."""

    segments: list[PromptSegment] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The whole prompt as one string."""
        return "".join(s.text for s in self.segments)

    def runs(self) -> list[PromptSegment]:
        """What gets tokenized: same-kind neighbours merged, empty ones dropped, and whitespace at each
        boundary moved to the start of the following run.

        Whitespace holds no special token, so which side it sits on is safe; keeping it with the text that
        follows reproduces how byte-level BPE pre-tokenizers split the whole string (``"\\n\\nAnswer"`` ->
        ``\\n``, ``\\n``, ``Answer``), so for plain content the ids equal whole-text tokenization.
        """
        merged: list[PromptSegment] = []
        for seg in self.segments:
            if not seg.text:
                continue
            if merged and merged[-1].special == seg.special:
                merged[-1] = PromptSegment(merged[-1].text + seg.text, seg.special)
            else:
                merged.append(seg)
        out: list[PromptSegment] = []
        carry = ""
        for index, run in enumerate(merged):
            text = carry + run.text
            carry = ""
            if index < len(merged) - 1:
                kept = text.rstrip()
                text, carry = kept, text[len(kept) :]
            if not text:
                continue
            if out and out[-1].special == run.special:
                out[-1] = PromptSegment(out[-1].text + text, run.special)
            else:
                out.append(PromptSegment(text, run.special))
        return out

    def token_ids(self, tokenizer: Any, *, add_bos: bool = True) -> list[int]:
        """Token ids: structure tokenized normally, content with ``split_special_tokens=True``.

        When no content holds special-token text, that equals tokenizing the whole text at once,
        and the whole-text ids are returned: SentencePiece tokenizers (Mistral-based Hermes) mark
        the start of every separately encoded string, so run-by-run ids would differ from what the
        model was trained on. Otherwise the run-by-run ids are returned, so content never forges
        structure. ``add_bos`` prepends the tokenizer's BOS token when the tokenizer itself would
        add one (e.g. ``<|begin_of_text|>`` for Llama-3 Hermes models, as their chat template does).
        """
        ids: list[int] = _bos_prefix(tokenizer) if add_bos else []
        by_run: list[int] = []
        for run in self.runs():
            by_run.extend(encode(tokenizer, run.text, split_special_tokens=not run.special))
        whole = _whole_text_ids(tokenizer, self.text, by_run)
        return ids + (whole if whole is not None else by_run)


def _whole_text_ids(tokenizer: Any, text: str, by_run: list[int]) -> list[int] | None:
    """The whole text's ids if they hold exactly the added tokens the run-by-run ids hold, else None.

    Structure's special tokens are always recognised in the whole text, so the same sequence of
    added tokens means content contributed none of them.
    """
    added = getattr(tokenizer, "added_tokens_decoder", None)
    if not added:
        return None
    whole = encode(tokenizer, text)
    if [t for t in whole if t in added] != [t for t in by_run if t in added]:
        return None
    return whole


def _bos_prefix(tokenizer: Any) -> list[int]:
    """``[bos_token_id]`` when encoding with special tokens starts with it, else ``[]``."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    added = encode(tokenizer, "", add_special_tokens=True)
    return [bos] if added[:1] == [bos] else []


def render_conversation(
    messages: Sequence[Message | dict[str, Any]],
    *,
    tools: Sequence[Any] | None = None,
    response_format: Any = None,
    add_generation_prompt: bool = True,
    variant: str | ChatVariant | None = None,
    reasoning: bool | None = None,
    keep_reasoning: bool = False,
) -> RenderedPrompt:
    """Render ``messages`` (plus the tools and/or JSON-schema system prompt) as Hermes ChatML segments.

    ``variant`` picks the family's layout (``hermes_core.format.variants``; None = Hermes 2 Pro's model
    card format described above); ``reasoning`` switches the family's reasoning prompt on or off (None =
    the family's default). With both ``tools`` and ``response_format`` the schema is the final answer's.
    ``keep_reasoning`` replays earlier assistant turns' ``reasoning`` (dropped by default).
    """
    chat = get_variant(variant)
    thinking = chat.resolve_reasoning(reasoning)
    msgs = to_messages(messages)
    specs = to_tool_specs(tools) if tools else []
    schema = response_schema(response_format) if response_format is not None else None

    leading: list[str] = []
    while len(leading) < len(msgs) and msgs[len(leading)].role == "system":
        leading.append(_text(msgs[len(leading)], len(leading)))
    if specs and schema is not None:
        segments, start = chat.system_turns(specs, None, leading, thinking)
        segments += [_s(f"{IM_START}system\n"), *answer_schema_prompt_segments(schema), _s(f"{IM_END}\n")]
    else:
        segments, start = chat.system_turns(specs, schema, leading, thinking)

    call_names: dict[str, str] = {}
    rejected: dict[str, InvalidToolCall] = {}
    pending: list[InvalidToolCall] = []  # the last assistant turn's rejected attempts not answered yet
    index = start
    while index < len(msgs):
        msg = msgs[index]
        if msg.role == "tool":
            responses: list[tuple[list[PromptSegment], str]] = []
            while index < len(msgs) and msgs[index].role == "tool":
                attempt = rejected.get(msgs[index].tool_call_id or "")
                if attempt is not None:
                    responses.append(_rejection(attempt, chat))
                    pending = [p for p in pending if p.id != attempt.id]
                else:
                    block = (
                        _tool_response(msgs[index], index, call_names) if chat.names_tool_results() else []
                    )
                    responses.append((block, raw_tool_content(msgs[index].content)))
                index += 1
            responses += [_rejection(attempt, chat) for attempt in pending]
            pending = []
            segments.extend(chat.tool_turn(responses, ends_conversation=index == len(msgs)))
            continue
        if pending:  # rejected attempts of the previous assistant turn that no tool message answered
            segments.extend(chat.tool_turn([_rejection(a, chat) for a in pending], ends_conversation=False))
            pending = []
        segments.append(_s(f"{IM_START}{msg.role}\n"))
        if msg.role == "assistant":
            if keep_reasoning and msg.reasoning:
                segments.extend(_reasoning_block(msg.reasoning, chat.reasoning or THINK))
            segments.extend(_assistant_body(msg, index))
            for call in msg.tool_calls:
                call_names[call.id] = call.name
            rejected.update((attempt.id, attempt) for attempt in msg.invalid_tool_calls)
            pending = list(msg.invalid_tool_calls)
        else:
            segments.append(_c(_text(msg, index)))
        segments.append(_s(f"{IM_END}\n"))
        index += 1
    if pending:
        segments.extend(chat.tool_turn([_rejection(a, chat) for a in pending], ends_conversation=True))
    if add_generation_prompt:
        segments.extend(chat.generation_prompt(thinking))
    return RenderedPrompt([seg for seg in segments if seg.text])


def _s(text: str) -> PromptSegment:
    """A structure segment."""
    return PromptSegment(text, True)


def _c(text: str) -> PromptSegment:
    """A content segment."""
    return PromptSegment(text, False)


def _text(msg: Message, index: int) -> str:
    """The text of a system/user/assistant message (``None`` is empty; text parts are joined)."""
    content = msg.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, str) or (isinstance(p, dict) and p.get("type") == "text") for p in content
    ):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content)
    raise UnsupportedOptionError(
        f"Message #{index} ({msg.role}) has non-text content of type {type(content).__name__}; "
        "pass a string (only tool results may hold JSON values)."
    )


def _assistant_body(msg: Message, index: int) -> list[PromptSegment]:
    """An assistant turn's text, its tool calls as the model emits them (name first), then its rejected
    attempts as the model wrote them (stand-ins for those attempts are left out)."""
    out: list[PromptSegment] = []
    text = _text(msg, index)
    if text:
        out.append(_c(text))
    rejected_ids = {attempt.id for attempt in msg.invalid_tool_calls}
    payloads = [
        embedded_payload({"name": call.name, "arguments": call.arguments})
        for call in msg.tool_calls
        if not is_stand_in(call, rejected_ids)
    ]
    payloads += [escape_structure_tags(attempt.raw) for attempt in msg.invalid_tool_calls]
    for n, payload in enumerate(payloads):
        if n or text:
            out.append(_s("\n"))
        out += [_s("<tool_call>\n"), _c(payload), _s("\n</tool_call>")]
    return out


def _reasoning_block(text: str, block: ReasoningBlock) -> list[PromptSegment]:
    """A replayed reasoning block: the tags are structure, the reasoning untrusted content."""
    return [_s(f"{block.open}\n"), _c(text), _s(f"\n{block.close}\n\n")]


def _rejection(attempt: InvalidToolCall, chat: ChatVariant) -> tuple[list[PromptSegment], str]:
    """A rejected attempt's answer for ``chat.tool_turn``: the named response block and the raw error."""
    response = rejection_response(attempt)
    raw = raw_tool_content(response["content"])
    if not chat.names_tool_results():
        return [], raw
    payload = embedded_payload(response)
    return [_s("<tool_response>\n"), _c(payload), _s("\n</tool_response>")], raw


def _tool_response(msg: Message, index: int, call_names: dict[str, str]) -> list[PromptSegment]:
    """One ``<tool_response>`` block for a tool message, naming the tool it answers."""
    name = msg.name or (call_names.get(msg.tool_call_id) if msg.tool_call_id else None)
    if not name:
        raise UnsupportedOptionError(
            f"Tool message #{index} (tool_call_id={msg.tool_call_id!r}) names no tool and answers no earlier "
            "assistant tool call; set its name or keep the assistant message that made the call."
        )
    payload = embedded_payload({"name": name, "content": _tool_content(msg.content)})
    return [_s("<tool_response>\n"), _c(payload), _s("\n</tool_response>")]


def _tool_content(content: Any) -> Any:
    """A tool result as a JSON value: JSON-object/array strings are decoded, other values kept."""
    if isinstance(content, str):
        stripped = content.strip()
        if stripped[:1] in ("{", "["):
            try:
                return json.loads(stripped)
            except ValueError:
                return content
    if content is None:
        return ""
    return content


def to_messages(messages: Sequence[Message | dict[str, Any]]) -> list[Message]:
    """Convert ``Message`` objects or OpenAI-style dicts to ``Message``s, checking roles and calls."""
    return [_to_message(m, i) for i, m in enumerate(messages)]


def _to_message(raw: Message | dict[str, Any], index: int) -> Message:
    """One message in neutral form (the single place where dict messages are understood)."""
    if isinstance(raw, Message):
        msg = raw
    elif isinstance(raw, dict):
        msg = Message(
            role=raw.get("role"),  # type: ignore[arg-type]
            content=raw.get("content", ""),
            tool_calls=[_to_call(c, index) for c in raw.get("tool_calls") or []],
            tool_call_id=raw.get("tool_call_id"),
            name=raw.get("name"),
            invalid_tool_calls=[_to_invalid_call(c, index) for c in raw.get("invalid_tool_calls") or []],
            reasoning=raw.get("reasoning", raw.get("reasoning_content")),
        )
    else:
        raise UnsupportedOptionError(
            f"Message #{index} is a {type(raw).__name__}; pass hermes_core.types.Message objects or "
            "OpenAI-style dicts {'role': ..., 'content': ...}."
        )
    role = _ROLE_ALIASES.get(msg.role, msg.role)
    if role not in _ROLES:
        raise UnsupportedOptionError(
            f"Message #{index} has unknown role {msg.role!r}; use one of system, user, assistant, tool."
        )
    if role != msg.role:
        msg = replace(msg, role=role)
    if (msg.tool_calls or msg.invalid_tool_calls) and role != "assistant":
        raise UnsupportedOptionError(
            f"Message #{index} ({role}) has tool calls; only assistant messages make calls."
        )
    return msg


def _to_invalid_call(raw: Any, index: int) -> InvalidToolCall:
    """An ``InvalidToolCall`` from one, or from a dict with ``raw`` (the attempt's text) and ``error``."""
    if isinstance(raw, InvalidToolCall):
        return raw
    if not isinstance(raw, dict) or not isinstance(raw.get("raw"), str):
        raise UnsupportedOptionError(
            f"Message #{index}: a rejected call attempt must be an InvalidToolCall or a dict with 'raw' "
            f"(the attempt's text) and 'error', got {raw!r:.80}."
        )
    error = raw.get("error") if isinstance(raw.get("error"), str) else ""
    return InvalidToolCall(
        raw=raw["raw"], error=error, name=raw.get("name"), id=raw.get("id") or new_call_id()
    )


def _to_call(raw: Any, index: int) -> ToolCall:
    """A ``ToolCall`` from a ``ToolCall``, an OpenAI ``{"id", "type", "function": {...}}`` or a flat dict."""
    if isinstance(raw, ToolCall):
        return raw
    if not isinstance(raw, dict):
        raise UnsupportedOptionError(
            f"Message #{index}: a tool call must be a dict or ToolCall, got {type(raw).__name__}."
        )
    body = raw.get("function") if isinstance(raw.get("function"), dict) else raw
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise UnsupportedOptionError(
            f"Message #{index}: tool call {raw!r:.80} has no name; set function.name."
        )
    args = body.get("arguments", body.get("args"))
    if args is None or args == "":
        args = {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            raise UnsupportedOptionError(
                f"Message #{index}: arguments of tool call {name!r} are not valid JSON; pass a dict or a JSON object string."
            ) from None
    if not isinstance(args, dict):
        raise UnsupportedOptionError(
            f"Message #{index}: arguments of tool call {name!r} must be a JSON object."
        )
    return ToolCall(name=name, arguments=args, id=raw.get("id") or new_call_id())
