"""Parser throughput: whole-text, streaming (token-sized chunks) and a naive reference, side by side.

Run from the repo root: ``.venv/bin/python -m benchmarks.bench_parser [--mb 3] [--repeat 5]``.
``--pathological`` instead times each pathological shape of ``parser_corpus.PATHOLOGICAL`` at 10 KB,
100 KB and 1 MB, whole and streamed, and prints how the time grows per tenfold size (linear: ~10x).
Two references, written here from descriptions (not copied), both only speed yardsticks:

- ``xml ref``: the original NousResearch approach the issue names: wrap the output in ``<root>``,
  parse it with ``xml.etree.ElementTree``, and decode each ``<tool_call>`` element's text with
  ``json.loads`` falling back to ``ast.literal_eval``. Any ``<``/``&`` in prose makes the XML parse
  fail, and then no call at all is found.
- ``regex ref``: a stronger C-speed yardstick: cut each ``<tool_call>(.*?)</tool_call>`` with a
  regex, then the same decoding. Wrong on several policy cases (a ``</tool_call>`` inside a string,
  missing close tags, fences, lists).
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import platform
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

from benchmarks.parser_corpus import PATHOLOGICAL, SHAPES, make_corpus
from hermes_core import ToolCallStreamParser, parse_tool_calls
from hermes_core.types import InvalidToolCall, ParsedResponse, StreamEvent, ToolCall

_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_END_TOKENS = ("<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>")


def reference_parse(text: str) -> ParsedResponse:
    """The naive regex + json.loads / ast.literal_eval approach (the speed yardstick)."""
    for token in _END_TOKENS:
        cut = text.find(token)
        if cut >= 0:
            text = text[:cut]
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for body in _BLOCK.findall(text):
        _decode_call(body.strip(), calls, invalid)
    return ParsedResponse(content=_BLOCK.sub("", text).strip(), tool_calls=calls, invalid_tool_calls=invalid)


def _decode_call(body: str, calls: list[ToolCall], invalid: list[InvalidToolCall]) -> None:
    """json.loads, then ast.literal_eval: the original code's decoding of one call body."""
    try:
        value = json.loads(body)
    except ValueError:
        try:
            value = ast.literal_eval(body)
        except (ValueError, SyntaxError) as exc:
            invalid.append(InvalidToolCall(raw=body, error=str(exc)))
            return
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        calls.append(ToolCall(name=value["name"], arguments=value.get("arguments") or {}))
    else:
        invalid.append(InvalidToolCall(raw=body, error="not a call object"))


def xml_reference_parse(text: str) -> ParsedResponse:
    """The original NousResearch approach: ElementTree over ``<root>...</root>``, then json/literal_eval."""
    for token in _END_TOKENS:
        cut = text.find(token)
        if cut >= 0:
            text = text[:cut]
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    try:
        root = ET.fromstring(f"<root>{text}</root>")
    except ET.ParseError as exc:
        return ParsedResponse(content=text, invalid_tool_calls=[InvalidToolCall(raw=text, error=str(exc))])
    content = [root.text or ""]
    for element in root:
        if element.tag == "tool_call":
            _decode_call((element.text or "").strip(), calls, invalid)
        content.append(element.tail or "")
    return ParsedResponse(content="".join(content).strip(), tool_calls=calls, invalid_tool_calls=invalid)


def chunk(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def run_stream(chunked_docs: list[list[str]]) -> None:
    for pieces in chunked_docs:
        parser = ToolCallStreamParser()
        feed = parser.feed
        for piece in pieces:
            feed(piece)
        parser.close()


class _FloorParser:
    """The least a streaming parser can do per chunk: one method call returning one text event."""

    def feed(self, delta: str) -> list[StreamEvent]:
        return [StreamEvent("text", text=delta)]

    def close(self) -> list[StreamEvent]:
        return []


def run_floor(chunked_docs: list[list[str]]) -> None:
    for pieces in chunked_docs:
        parser = _FloorParser()
        feed = parser.feed
        for piece in pieces:
            feed(piece)
        parser.close()


def measure(docs: list[str], repeat: int, chunk_size: int) -> dict[str, float]:
    """MB/s (10^6 UTF-8 bytes of model output per second) for each parser on ``docs``.

    Time is this process's CPU time (the machine may be shared); the three parsers run in
    interleaved rounds and each keeps its best round, so a burst of load favours none of them.
    """
    megabytes = sum(len(doc.encode("utf-8")) for doc in docs) / 1e6
    chunked_docs = [chunk(doc, chunk_size) for doc in docs]
    work: dict[str, Callable[[], object]] = {
        "whole": lambda: [parse_tool_calls(doc) for doc in docs],
        "stream": lambda: run_stream(chunked_docs),
        "reference": lambda: [reference_parse(doc) for doc in docs],
        "xml_reference": lambda: [xml_reference_parse(doc) for doc in docs],
        "floor": lambda: run_floor(chunked_docs),
    }
    best = dict.fromkeys(work, float("inf"))
    for _ in range(repeat):
        for name, job in work.items():
            start = time.process_time()
            job()
            best[name] = min(best[name], time.process_time() - start)
    chunks = sum(len(pieces) for pieces in chunked_docs)
    return {f"{name}_s": seconds for name, seconds in best.items()} | {"mb": megabytes, "chunks": chunks}


def rates(row: dict[str, float]) -> dict[str, float]:
    """Throughputs and per-chunk cost from a row of best times."""
    out = {
        name: row["mb"] / row[f"{name}_s"]
        for name in ("whole", "stream", "reference", "xml_reference", "floor")
    }
    return out | {"mb": row["mb"], "us_per_chunk": row["stream_s"] / row["chunks"] * 1e6}


PATHOLOGICAL_SIZES = (10_000, 100_000, 1_000_000)


def time_pathological(repeat: int, chunk_size: int, only: list[str] | None = None) -> None:
    """Whole and streamed CPU time of each pathological shape (or those in ``only``) at three sizes,
    and the growth per 10x."""
    print(f"pathological shapes; best of {repeat}; streaming chunk {chunk_size} chars; CPU seconds")
    sizes = "".join(f"{f'{n // 1000} KB':>10}" for n in PATHOLOGICAL_SIZES)
    header = f"{'shape':<24}{'parser':<8}{sizes}{'x per 10x':>14}"
    print(header)
    print("-" * len(header))
    for shape, build in PATHOLOGICAL.items():
        if only and shape not in only:
            continue
        texts = [build(n) for n in PATHOLOGICAL_SIZES]
        pieces = [chunk(text, chunk_size) for text in texts]
        jobs: dict[str, list[Callable[[], object]]] = {
            "whole": [lambda t=t: parse_tool_calls(t) for t in texts],
            "stream": [lambda p=p: run_stream([p]) for p in pieces],
        }
        for name, runs in jobs.items():
            seconds = []
            for job in runs:
                best = float("inf")
                for _ in range(repeat):
                    start = time.process_time()
                    job()
                    best = min(best, time.process_time() - start)
                seconds.append(best)
            growth = " ".join(f"{b / max(a, 1e-6):.0f}" for a, b in itertools.pairwise(seconds))
            times = "".join(f"{t:>10.4f}" for t in seconds)
            print(f"{shape:<24}{name:<8}{times}{growth:>14}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=3.0, help="corpus size in millions of characters")
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement (best is kept)")
    parser.add_argument("--chunk", type=int, default=4, help="streaming chunk size in characters")
    parser.add_argument(
        "--pathological", action="store_true", help="time the pathological shapes at 10 KB, 100 KB, 1 MB"
    )
    parser.add_argument(
        "--only", nargs="*", choices=sorted(PATHOLOGICAL), help="with --pathological: these shapes"
    )
    args = parser.parse_args()
    if args.pathological:
        time_pathological(args.repeat, args.chunk, args.only)
        return

    corpus = make_corpus(int(args.mb * 1_000_000))
    rows = {shape: measure(corpus[shape], args.repeat, args.chunk) for shape in SHAPES}
    # The mixed corpus is the sum of its shapes: adding the best times is steadier than re-timing it.
    rows["ALL"] = {key: sum(row[key] for row in rows.values()) for key in next(iter(rows.values()))}
    rows = {shape: rates(row) for shape, row in rows.items()}

    print(f"python {platform.python_version()} on {platform.machine()} ({platform.processor() or 'cpu'})")
    print(f"streaming chunk: {args.chunk} chars; best of {args.repeat}; MB = 10^6 UTF-8 bytes; CPU time")
    print("floor = a do-nothing streaming parser (one call and one text event per chunk)")
    header = f"{'shape':<16}{'MB':>6}{'whole MB/s':>12}{'stream MB/s':>13}{'xml ref':>9}{'whole/xml':>11}"
    header += f"{'regex ref':>11}{'whole/regex':>13}{'whole/stream':>14}{'us/chunk':>10}{'floor MB/s':>12}"
    print(header)
    print("-" * len(header))
    for shape, row in rows.items():
        print(
            f"{shape:<16}{row['mb']:>6.2f}{row['whole']:>12.1f}{row['stream']:>13.1f}"
            f"{row['xml_reference']:>9.1f}{row['whole'] / row['xml_reference']:>10.2f}x"
            f"{row['reference']:>11.1f}{row['whole'] / row['reference']:>12.2f}x{row['whole'] / row['stream']:>13.2f}x"
            f"{row['us_per_chunk']:>10.2f}{row['floor']:>12.1f}"
        )


if __name__ == "__main__":
    main()
