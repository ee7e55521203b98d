"""A seeded, realistic corpus of Hermes model outputs for the parser benchmark.

Shapes, by share of characters: prose answers (Markdown, code, lists), one call after a short preface,
several calls, calls with nested arguments, Python-dict calls (the original NousResearch prompt style)
and calls with a long string argument (a file body). Every document ends with ``<|im_end|>``.
"""

from __future__ import annotations

import json
import random

WORDS = (
    "the of and to in is that for it as with was on be at by this had not are but from or have an they "
    "which one you were her all she there would their we him been has when who will more no if out so "
    "said what up its about into than them can only other new some could time these two may then do "
    "first any my now such like our over man me even most made after also did many before must through "
    "weather forecast temperature city stock price market order customer shipping invoice search result"
).split()
CITIES = ["Paris", "Tokyo", "São Paulo", "Zürich", "New York", "Reykjavík", "Lagos", "Mumbai", "Québec"]
TOOLS = ["get_weather", "get_stock_price", "search_web", "create_order", "send_email", "lookup_user", "calc"]

SHAPES = ("prose", "single_call", "multi_call", "nested_args", "python_dict", "long_string_arg")
SHARES = (0.35, 0.25, 0.15, 0.10, 0.08, 0.07)
END = "<|im_end|>"


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))


def _prose(rng: random.Random) -> str:
    parts = [_paragraph(rng)]
    for _ in range(rng.randint(1, 5)):
        kind = rng.random()
        if kind < 0.2:
            parts.append(
                "\n".join(f"- **{rng.choice(WORDS)}**: {_sentence(rng)}" for _ in range(rng.randint(2, 5)))
            )
        elif kind < 0.3:
            parts.append('```python\ndef f(x: int) -> dict:\n    return {"x": x, "y": [x, x + 1]}\n```')
        else:
            parts.append(_paragraph(rng))
    return "\n\n".join(parts)


def _simple_args(rng: random.Random) -> dict:
    return {
        "city": rng.choice(CITIES),
        "unit": rng.choice(["celsius", "fahrenheit"]),
        "days": rng.randint(1, 14),
    }


def _nested_args(rng: random.Random) -> dict:
    return {
        "customer": {
            "id": rng.randint(1, 10**6),
            "address": {"city": rng.choice(CITIES), "lines": ["1 Main St", "Apt 4"]},
        },
        "items": [
            {
                "sku": f"SKU-{rng.randint(100, 999)}",
                "qty": rng.randint(1, 5),
                "options": {"gift": rng.random() < 0.5},
            }
            for _ in range(rng.randint(1, 6))
        ],
        "note": _sentence(rng),
        "discount": round(rng.random(), 2),
    }


def _block(body: str, rng: random.Random) -> str:
    return (
        "<tool_call>\n" + body + "\n</tool_call>"
        if rng.random() < 0.8
        else "<tool_call>" + body + "</tool_call>"
    )


def _json_call(name: str, args: dict, rng: random.Random) -> str:
    data = {"name": name, "arguments": args} if rng.random() < 0.7 else {"arguments": args, "name": name}
    return _block(json.dumps(data, ensure_ascii=rng.random() < 0.5), rng)


def make_document(shape: str, rng: random.Random) -> str:
    """One model output of the given shape."""
    if shape == "prose":
        return _prose(rng) + END
    preface = _sentence(rng) + "\n" if rng.random() < 0.6 else ""
    if shape == "single_call":
        return preface + _json_call(rng.choice(TOOLS), _simple_args(rng), rng) + END
    if shape == "multi_call":
        calls = [_json_call(rng.choice(TOOLS), _simple_args(rng), rng) for _ in range(rng.randint(2, 4))]
        return preface + "\n".join(calls) + END
    if shape == "nested_args":
        return preface + _json_call("create_order", _nested_args(rng), rng) + END
    if shape == "python_dict":
        body = repr(
            {
                "arguments": _simple_args(rng) | {"exact": rng.random() < 0.5, "tag": None},
                "name": rng.choice(TOOLS),
            }
        )
        return preface + _block(body, rng) + END
    content = "\n\n".join(_paragraph(rng) for _ in range(rng.randint(3, 12)))
    args = {"path": f"docs/{rng.choice(WORDS)}.md", "content": content + "\nCalls end with </tool_call>."}
    return preface + _json_call("write_file", args, rng) + "\nI wrote the file." + END


def make_corpus(total_chars: int = 3_000_000, seed: int = 1234) -> dict[str, list[str]]:
    """Documents grouped by shape, about ``total_chars`` in all, split by the shares above."""
    rng = random.Random(seed)
    corpus: dict[str, list[str]] = {}
    for shape, share in zip(SHAPES, SHARES, strict=True):
        docs, size = [], 0
        while size < total_chars * share:
            doc = make_document(shape, rng)
            docs.append(doc)
            size += len(doc)
        corpus[shape] = docs
    return corpus


# --- pathological outputs: the parser must stay linear in their length -----------------------------------
#
# Each shape repeats a unit until the text is about ``size`` characters. They are what a broken or
# adversarial output can look like; tests/core/test_parser_linear.py counts the parser's work on them at
# two sizes and ``bench_parser.py --pathological`` times them at 10 KB, 100 KB and 1 MB.


def _repeat(unit: str, size: int, head: str = "", tail: str = "") -> str:
    return head + unit * max(1, (size - len(head) - len(tail)) // len(unit)) + tail


PATHOLOGICAL = {
    # Issue 12 item 3: every attempt fails to decode (a set), one closing tag at the very end.
    "set_attempts": lambda n: _repeat("<tool_call>{'a'}", n, tail="</tool_call>"),
    # Valid Python-dict calls: each one fails as JSON first.
    "python_calls": lambda n: _repeat("<tool_call>{'name': 'f', 'arguments': {'x': 1}}</tool_call>\n", n),
    # Many undecodable values in one block.
    "values_in_one_block": lambda n: _repeat("{'a'}\n", n, head="<tool_call>", tail="</tool_call>"),
    "unclosed_tags": lambda n: _repeat("<tool_call>", n),
    "unclosed_values": lambda n: _repeat("<tool_call>{", n),
    "tags_as_prose": lambda n: _repeat("<tool_call>x ", n),
    "fences": lambda n: _repeat("<tool_call>```json\n", n),
    "deep_nesting": lambda n: "<tool_call>" + "[" * (n // 2) + "]" * (n // 2) + "</tool_call>",
    "deep_unclosed": lambda n: _repeat("[{", n, head="<tool_call>"),
    # Unterminated strings full of escaped quotes, ended by a closing tag.
    "escaped_quotes": lambda n: _repeat('\\"', n, head='<tool_call>{"name": "f", "arguments": {"x": "'),
    "escaped_quotes_commas": lambda n: _repeat(
        '\\"', n, head='<tool_call>{"name": "f", "arguments": {"x": 1,}, "y": "', tail="</tool_call>"
    ),
    "escaped_python_quotes": lambda n: _repeat(
        "\\'", n, head="<tool_call>{'name': 'f', 'arguments': {'x': '", tail="</tool_call>"
    ),
    # A valid call with one long string argument full of escapes.
    "long_escaped_string": lambda n: _repeat(
        'ab\\n\\"\\u00e9 ', n, head='<tool_call>{"name": "f", "arguments": {"text": "', tail='"}}</tool_call>'
    ),
    # A reasoning block full of near-misses of its closing tag, and one after a long run of whitespace.
    "reasoning_near_closers": lambda n: _repeat("</thin ", n, head="<think>", tail="</think>ok"),
    "reasoning_after_spaces": lambda n: _repeat(" \n", n, tail="<think>plan</think>ok"),
    # One huge value that is neither JSON nor a Python literal.
    "huge_invalid_value": lambda n: _repeat(
        "x", n, head='<tool_call>{"name": "f", "arguments": {"a": ', tail="}}</tool_call>"
    ),
}


def pathological(size: int) -> dict[str, str]:
    """Every pathological shape at about ``size`` characters."""
    return {name: build(size) for name, build in PATHOLOGICAL.items()}
