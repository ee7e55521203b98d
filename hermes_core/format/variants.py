"""Hermes-style chat variants: which family a model's chat template belongs to, and how that family is prompted.

The families share ChatML turns, the ``<tools>`` / ``<tool_call>`` / ``<tool_response>`` tags and
name-first call objects; they differ in the system turn's wording, where tool results go, and whether
(and how) the model reasons before it answers. ``detect_variant`` reads the tokenizer's chat template
text (never the model name). A variant only chooses wording and layout: ``chatml.render_conversation``
stays the renderer, and every piece of caller data (tool specs, descriptions, results, system text) is
still a content segment, so it can never become structure. Which template each variant imitates, and
where we knowingly differ from it, is in ``docs/model-variants.md``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hermes_core.errors import ModelLoadError, UnsupportedOptionError
from hermes_core.format.prompts import (
    PromptSegment,
    embedded_payload,
    escape_structure_tags,
    json_schema_system_prompt_segments,
    tools_system_prompt_segments,
)

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# --- Hermes 3 (the tool_use chat template NousResearch ships with Hermes 3, and with current Hermes 2 Pro/Θ)
HERMES_3_TOOLS_HEAD = (
    "You are a function calling AI model. You are provided with function signatures within <tools></tools> "
    "XML tags. You may call one or more functions to assist with the user query. Don't make assumptions "
    "about what values to plug into functions. Here are the available tools: <tools> "
)
HERMES_3_TOOLS_TAIL = (
    " </tools>Use the following pydantic model json schema for each tool call you will make: "
    '{"properties": {"name": {"title": "Name", "type": "string"}, "arguments": {"title": "Arguments", '
    '"type": "object"}}, "required": ["name", "arguments"], "title": "FunctionCall", "type": "object"}}\n'
    "For each function call return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags as follows:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-dict>}\n'
    "</tool_call>"
)
_PYTHON_TYPES = {"string": "str", "number": "float", "integer": "int", "boolean": "bool"}

# --- Hermes 4 (Hermes-4-14B chat template's system prompts; tool message from the Hermes 4 model card)
HERMES_4_IDENTITY = "You are Hermes, created by Nous Research."
HERMES_4_THINKING = (
    "You are a deep thinking AI, you may use extremely long chains of thought to deeply consider the problem "
    "and deliberate with yourself via systematic reasoning processes to help come to a correct solution prior "
    "to answering. You should enclose your thoughts and internal monologue inside <think> </think> tags, and "
    "then provide your solution or response to the problem."
)
HERMES_4_TOOLS_HEAD = (
    "You are a function-calling AI. Tools are provided inside <tools>\u2026</tools>.\n"
    "When appropriate, call a tool by emitting a <tool_call>{...}</tool_call> object.\n"
    "After a tool responds (as <tool_response>), continue reasoning inside <think> and produce the final answer.\n"
    "<tools>\n"
)
HERMES_4_TOOLS_TAIL = "\n</tools>"

# --- Qwen2.5 / Qwen3 (their chat templates' tool section, which many users run Hermes-format tools with)
QWEN_2_5_IDENTITY = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
QWEN_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
QWEN_3_NO_THINKING = "<think>\n\n</think>\n\n"


@dataclass(frozen=True)
class ReasoningBlock:
    """The tags around the reasoning a model writes before its answer or calls."""

    open: str
    close: str


THINK = ReasoningBlock("<think>", "</think>")
SCRATCH_PAD = ReasoningBlock("<scratch_pad>", "</scratch_pad>")


def _s(text: str) -> PromptSegment:
    """A structure segment (trusted template text)."""
    return PromptSegment(text, True)


def _c(text: str) -> PromptSegment:
    """A content segment (caller data, never structure)."""
    return PromptSegment(text, False)


def _turn(role: str, body: list[PromptSegment]) -> list[PromptSegment]:
    """``body`` as one ChatML turn of ``role``."""
    return [_s(f"{IM_START}{role}\n"), *body, _s(f"{IM_END}\n")]


def _joined(parts: Sequence[list[PromptSegment]], separator: str = "\n\n") -> list[PromptSegment]:
    """Non-empty parts joined by a structural ``separator``."""
    out: list[PromptSegment] = []
    for part in (p for p in parts if p):
        if out:
            out.append(_s(separator))
        out.extend(part)
    return out


def raw_tool_content(content: Any) -> str:
    """A tool result as the templates write it: a string as is, anything else as JSON; either way with the
    ``<`` of a Hermes tag written ``\\u003c`` (``escape_structure_tags``), so a result cannot close its
    ``<tool_response>`` block or open a call as text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return escape_structure_tags(content)
    return embedded_payload(content)


@dataclass(frozen=True)
class ChatVariant:
    """One family's prompt layout: system turn, tool-result turn, generation prompt and reasoning.

    The base class is Hermes 2 Pro / Θ as its model card prompts it (the seed's format): the card's
    tools or JSON-mode prompt opens the one system turn, the caller's leading system messages follow
    it after a blank line, and tool results are ``{"name": ..., "content": ...}`` objects in a ``tool``
    turn. Subclasses change what their family's template does differently.
    """

    name: str
    family: str
    reasoning: ReasoningBlock | None = None
    reasons_by_default: bool = False

    def resolve_reasoning(self, reasoning: bool | None) -> bool:
        """Whether this request reasons: the family's default for None; True only where the family can."""
        if reasoning is None:
            return self.reasons_by_default
        if reasoning and self.reasoning is None:
            raise UnsupportedOptionError(
                f"reasoning=True, but {self.family} ({self.name}) writes no reasoning block; reasoning works "
                "with hermes-3 (<scratch_pad>), hermes-4 and qwen3 (<think>). Drop reasoning=True or pass "
                "variant= for a model that reasons."
            )
        return bool(reasoning)

    # ---------------------------------------------------------------- system
    def system_turns(
        self, specs: list[dict[str, Any]], schema: Any, leading: list[str], thinking: bool
    ) -> tuple[list[PromptSegment], int]:
        """The opening system turn(s) and how many of the ``leading`` system messages they consumed."""
        lead: list[PromptSegment] = []
        if specs:
            lead = tools_system_prompt_segments(specs)
        elif schema is not None:
            lead = json_schema_system_prompt_segments(schema)
        caller = [_c("\n\n".join(leading))] if leading else []
        if not lead and not caller:
            return [], 0
        return _turn("system", _joined([lead, caller])), len(leading)

    # ----------------------------------------------------------- tool turns
    def tool_turn(
        self, responses: list[tuple[list[PromptSegment], str]], ends_conversation: bool
    ) -> list[PromptSegment]:
        """One turn holding consecutive tool results; each is (the seed's response block, the raw result)."""
        return _turn("tool", _joined([block for block, _ in responses], "\n"))

    def names_tool_results(self) -> bool:
        """Whether a tool result must name the tool it answers (the card's ``{"name", "content"}`` form)."""
        return True

    # ------------------------------------------------------ generation prompt
    def generation_prompt(self, thinking: bool) -> list[PromptSegment]:
        """What opens the assistant turn the model writes."""
        return [_s(f"{IM_START}assistant\n")]


@dataclass(frozen=True)
class Hermes3(ChatVariant):
    """Hermes 3's ``tool_use`` template: name-first wording, Python-style signatures in each tool's
    description, the caller's system message as its own turn, raw tool results."""

    tool_line_close: str = "}}"
    """How each ``<tools>`` line ends: ``}}`` in the current template, ``}`` in the earlier revision."""

    def system_turns(
        self, specs: list[dict[str, Any]], schema: Any, leading: list[str], thinking: bool
    ) -> tuple[list[PromptSegment], int]:
        if specs:
            lines = escape_structure_tags(
                "\n".join(hermes3_tool_line(spec, self.tool_line_close) for spec in specs)
            )
            body = [_s(HERMES_3_TOOLS_HEAD), _c(lines), _s(HERMES_3_TOOLS_TAIL)]
            return _turn("system", body), 0
        if schema is not None:
            first = [_c(leading[0])] if leading else []
            return _turn("system", _joined([json_schema_system_prompt_segments(schema), first])), len(first)
        return [], 0

    def tool_turn(
        self, responses: list[tuple[list[PromptSegment], str]], ends_conversation: bool
    ) -> list[PromptSegment]:
        # The template ends every result but the conversation's last with "\n" and closes the turn with a
        # bare <|im_end|> (no newline), so the next turn follows directly.
        out = [_s(f"{IM_START}tool\n")]
        for n, (_, raw) in enumerate(responses):
            last = ends_conversation and n == len(responses) - 1
            out += [
                _s("<tool_response>\n"),
                _c(raw),
                _s("\n</tool_response>" if last else "\n</tool_response>\n"),
            ]
        out.append(_s(IM_END))
        return out

    def names_tool_results(self) -> bool:
        return False


@dataclass(frozen=True)
class Hermes4(ChatVariant):
    """Hermes 4 (ChatML, Hermes-4-14B): its identity or deep-thinking system prompt, tools as in the
    model card's example system message."""

    def system_turns(
        self, specs: list[dict[str, Any]], schema: Any, leading: list[str], thinking: bool
    ) -> tuple[list[PromptSegment], int]:
        first = [_c(leading[0])] if leading else []
        trained: list[PromptSegment] = []
        if specs:
            lines = "\n".join(json.dumps(spec, ensure_ascii=False, separators=(",", ":")) for spec in specs)
            lines = escape_structure_tags(lines)
            trained = [_s(HERMES_4_TOOLS_HEAD), _c(lines), _s(HERMES_4_TOOLS_TAIL)]
        elif schema is not None:
            trained = json_schema_system_prompt_segments(schema)
        parts = [[_s(HERMES_4_THINKING)] if thinking else [], trained, first]
        if not any(parts):
            parts = [[_s(HERMES_4_IDENTITY)]]
        return _turn("system", _joined(parts)), len(first)


@dataclass(frozen=True)
class Qwen(ChatVariant):
    """Qwen2.5 / Qwen3 templates: the caller's first system message opens the system turn, the
    ``# Tools`` section follows it, tool results go back in a ``user`` turn."""

    identity: str | None = None
    """The system text the template writes when the caller gives none (Qwen2.5 only)."""

    def system_turns(
        self, specs: list[dict[str, Any]], schema: Any, leading: list[str], thinking: bool
    ) -> tuple[list[PromptSegment], int]:
        first = [_c(leading[0])] if leading else []
        if schema is not None:
            first = _joined([json_schema_system_prompt_segments(schema), first])
        if not first and self.identity is not None:
            first = [_s(self.identity)]
        if specs:
            lines = escape_structure_tags(
                "".join("\n" + json.dumps(spec, ensure_ascii=False) for spec in specs)
            )
            tools = [_s(QWEN_TOOLS_HEAD), _c(lines), _s(QWEN_TOOLS_TAIL)]
            return _turn("system", _joined([first, tools])), min(len(leading), 1)
        if not first:
            return [], 0
        return _turn("system", first), min(len(leading), 1)

    def tool_turn(
        self, responses: list[tuple[list[PromptSegment], str]], ends_conversation: bool
    ) -> list[PromptSegment]:
        out = [_s(f"{IM_START}user")]
        for _, raw in responses:
            out += [_s("\n<tool_response>\n"), _c(raw), _s("\n</tool_response>")]
        out.append(_s(f"{IM_END}\n"))
        return out

    def names_tool_results(self) -> bool:
        return False

    def generation_prompt(self, thinking: bool) -> list[PromptSegment]:
        prompt = [_s(f"{IM_START}assistant\n")]
        if self.reasoning is not None and not thinking:
            prompt.append(_s(QWEN_3_NO_THINKING))
        return prompt


HERMES_2_PRO = ChatVariant("hermes-2-pro", "Hermes 2 Pro / Θ (model card prompt)")
HERMES_3 = Hermes3("hermes-3", "Hermes 3 (tool_use template)", SCRATCH_PAD, False)
HERMES_4 = Hermes4("hermes-4", "Hermes 4", THINK, False)
QWEN_2_5 = Qwen("qwen2.5", "Qwen2.5", None, False, QWEN_2_5_IDENTITY)
QWEN_3 = Qwen("qwen3", "Qwen3", THINK, True)
VARIANTS: dict[str, ChatVariant] = {v.name: v for v in (HERMES_2_PRO, HERMES_3, HERMES_4, QWEN_2_5, QWEN_3)}
AUTO = "auto"


def get_variant(variant: str | ChatVariant | None) -> ChatVariant:
    """The variant named ``variant`` (None = Hermes 2 Pro, the seed's format)."""
    if variant is None:
        return HERMES_2_PRO
    if isinstance(variant, ChatVariant):
        return variant
    found = VARIANTS.get(str(variant).strip().lower())
    if found is None:
        raise UnsupportedOptionError(
            f"Unknown variant {variant!r}; use 'auto' (read from the chat template) or one of "
            f"{', '.join(VARIANTS)}."
        )
    return found


# ------------------------------------------------------------------ detection
_NOT_CHATML = (
    (
        "<|start_header_id|>",
        "the Llama-3 chat format (<|start_header_id|>, e.g. DeepHermes-3-Llama-3 or Hermes 4 70B/405B)",
    ),
    ("[INST]", "the Mistral [INST] chat format"),
)


def template_texts(chat_template: Any) -> list[str]:
    """Every template text in a tokenizer's ``chat_template`` (a string, a name -> template dict, or
    ``tokenizer_config.json``'s list of ``{"name", "template"}``)."""
    if chat_template is None:
        return []
    if isinstance(chat_template, str):
        return [chat_template]
    if isinstance(chat_template, dict):
        return [t for t in chat_template.values() if isinstance(t, str)]
    if isinstance(chat_template, (list, tuple)):
        return [
            t.get("template")
            for t in chat_template
            if isinstance(t, dict) and isinstance(t.get("template"), str)
        ]
    return []


def detect_variant(chat_template: Any, model_name: str = "the model") -> ChatVariant:
    """The variant a chat template belongs to; ModelLoadError for a template that is not ChatML.

    Order: Hermes 4 (its identity / deep-thinking system prompt), Qwen (``# Tools`` section; Qwen3 when
    the template handles ``<think>``), Hermes 3 (the ``tool_use`` template with ``json_to_python_type``),
    else Hermes 2 Pro's model-card prompt (also for templates without a tool section, or none at all).
    """
    texts = template_texts(chat_template)
    if not texts:
        return HERMES_2_PRO
    text = "\n".join(texts)
    if IM_START not in text:
        what = next(
            (label for marker, label in _NOT_CHATML if marker in text), "a chat format without ChatML turns"
        )
        raise ModelLoadError(
            f"{model_name!r} uses {what}, but this library renders ChatML (<|im_start|>) only. Supported: "
            f"Hermes 2 Pro/Θ, Hermes 3, Hermes 4 14B, Qwen2.5/Qwen3 and other ChatML models with the "
            f"<tools>/<tool_call> format; use a ChatML build of the model, or pass variant= "
            f"({', '.join(VARIANTS)}) if its tokenizer really is ChatML."
        )
    plain = text.replace("\\n", "\n")  # templates spell newlines as Jinja escapes or as real newlines
    if HERMES_4_IDENTITY in plain or HERMES_4_THINKING[:60] in plain:
        return HERMES_4
    if QWEN_TOOLS_HEAD[:60] in plain:
        return QWEN_3 if ("enable_thinking" in plain or "<think>" in plain) else QWEN_2_5
    if "json_to_python_type" in text and "You are a function calling AI model" in text:
        single = '{{- "}}" }}' not in text
        return dataclasses.replace(HERMES_3, tool_line_close="}") if single else HERMES_3
    return HERMES_2_PRO


def resolve_variant(
    variant: str | ChatVariant | None, tokenizer: Any = None, model_name: str = "the model"
) -> ChatVariant:
    """``variant`` itself, or (for None / ``"auto"``) the one detected from ``tokenizer``'s chat template."""
    if variant is None or (isinstance(variant, str) and variant.strip().lower() == AUTO):
        return detect_variant(getattr(tokenizer, "chat_template", None), model_name)
    return get_variant(variant)


# ------------------------------------------------------- Hermes 3 tool lines
def python_type(spec: Any) -> str:
    """A JSON schema as the Hermes 3 template's ``json_to_python_type`` macro writes it.

    The macro's own quirks are kept, since they are what the template sends: an array is always
    ``list[Union[]]`` (it recurses on ``json_spec|items``, which has no ``type``), and a schema
    without ``type`` (``anyOf``, ``enum``) is ``Union[]``. For type names the macro cannot handle
    (``null``), where the template itself fails with endless recursion, this writes ``Any``.
    """
    kind = spec.get("type") if isinstance(spec, dict) else None
    if isinstance(kind, str) and kind in _PYTHON_TYPES:
        return _PYTHON_TYPES[kind]
    if kind == "array":
        return "list[Union[]]"
    if kind == "object":
        if "additionalProperties" in spec:
            return "dict[str, " + python_type(spec["additionalProperties"]) + "]"
        return "dict"
    if kind is None:
        return "Union[]"
    if isinstance(kind, (list, tuple)):
        return "Union[" + ",".join(python_type({"type": k}) for k in kind) + "]"
    return "Any"


def hermes3_tool_line(spec: dict[str, Any], close: str = "}}") -> str:
    """One ``<tools>`` line of the Hermes 3 template: the spec with a signature-style description.

    As in the template, descriptions go in unescaped and ``parameters`` is ``{}`` when it has no
    properties.
    """
    function = spec.get("function", spec)
    name = str(function.get("name", ""))
    params = function.get("parameters") if isinstance(function.get("parameters"), dict) else {}
    props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
    returns = function.get("return")
    signature = ", ".join(f"{key}: {python_type(field)}" for key, field in props.items())
    text = f'{{"type": "function", "function": {{"name": "{name}", "description": "{name}({signature})'
    if returns is not None:
        text += " -> " + python_type(returns)
    text += " - " + str(function.get("description") or "") + "\n\n"
    for n, (key, field) in enumerate(props.items()):
        described = field.get("description") if isinstance(field, dict) else None
        text += ("    Args:\n" if n == 0 else "") + f"        {key}({python_type(field)}): "
        text += str(described).strip() if described is not None else ""
    if isinstance(returns, dict) and "description" in returns:
        text += "\n    Returns:\n        " + str(returns["description"])
    text += '", "parameters": ' + (json.dumps(params, ensure_ascii=False) if props else "{}")
    return text + close
