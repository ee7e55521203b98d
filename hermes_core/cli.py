"""``hermes-chat``: chat with a local Hermes-format model from the terminal, with tools and JSON mode.

One-shot (``hermes-chat "question"``) or interactive (no question: a REPL reading stdin). Tools come
from a Python file or module (``--tools examples/tools.py``); every call the model makes is shown,
really executed, and its result fed back until the model answers (at most ``--max-tool-rounds``).
Runs offline on the embedded SmolLM2-135M-Instruct unless ``--model`` names another model.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import sys
import textwrap
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from hermes_core.errors import HermesError

PROG = "hermes-chat"
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_MAX_TOOL_ROUNDS = 3
TOOL_SYSTEM_PROMPT = (
    "You are a helpful assistant. Call a tool when it helps; once a tool result arrives, "
    "answer the user's question in one or two sentences using it."
)
EXIT_USAGE = 2
API_KEY_ENV = "HERMES_API_KEY"


class CliError(HermesError):
    """A problem with the command line (bad tools module, bad schema): shown as one line, exit code 2."""


# --------------------------------------------------------------------------- tools
def load_tools(spec: str) -> list[Callable[..., Any]]:
    """The tools a Python file or importable module offers: its ``TOOLS`` list, else its public typed functions."""
    module = _import_tools_module(spec)
    declared = getattr(module, "TOOLS", None)
    if declared is not None:
        if not isinstance(declared, list | tuple) or not declared:
            raise CliError(f"--tools {spec}: TOOLS must be a non-empty list of functions.")
        not_callable = [repr(item) for item in declared if not callable(item)]
        if not_callable:
            raise CliError(
                f"--tools {spec}: TOOLS holds {', '.join(not_callable)}, which cannot be run; list functions only."
            )
        tools = list(declared)
    else:
        tools = [
            fn
            for name, fn in inspect.getmembers(module, inspect.isfunction)
            if not name.startswith("_") and fn.__module__ == module.__name__ and _has_type_hints(fn)
        ]
        tools.sort(key=lambda fn: fn.__code__.co_firstlineno)
    if not tools:
        raise CliError(
            f"--tools {spec}: the module defines no tools; add public functions with type hints "
            "(e.g. def get_weather(city: str) -> str) or a TOOLS list."
        )
    from hermes_core.format.tool_specs import to_tool_specs

    to_tool_specs(tools)  # fail now, with the tool's name, rather than at the first request
    return tools


def _import_tools_module(spec: str) -> Any:
    """Import ``spec`` as a ``.py`` file path or a dotted module name; one-line errors for both."""
    path = Path(spec).expanduser()
    if spec.endswith(".py") or path.exists() or "/" in spec or "\\" in spec:
        if not path.is_file():
            raise CliError(
                f"--tools {spec}: no such file; pass a Python file (e.g. examples/tools.py) or a module name."
            )
        name = f"hermes_cli_tools_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise CliError(f"--tools {spec}: not a Python file; pass a .py file or a module name.")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # lets typing/pydantic resolve the module's own names
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise CliError(
                f"--tools {spec}: importing it failed ({type(exc).__name__}: {_first_line(exc)})."
            ) from exc
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise CliError(
            f"--tools {spec}: no module named {exc.name!r}; pass a .py file path or an importable module."
        ) from exc
    except Exception as exc:
        raise CliError(
            f"--tools {spec}: importing it failed ({type(exc).__name__}: {_first_line(exc)})."
        ) from exc


def _has_type_hints(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` has annotations at all (helpers without hints are not offered as tools)."""
    return bool(getattr(fn, "__annotations__", None))


def run_tool(call: Any, tools: dict[str, Callable[..., Any]]) -> tuple[Any, bool]:
    """Execute a tool call: (result, ok). Arguments are validated/coerced to the hinted types first."""
    fn = tools.get(call.name)
    if fn is None:
        return f"Error: unknown tool {call.name!r}; available: {', '.join(sorted(tools))}.", False
    try:
        arguments = _coerce_arguments(fn, call.arguments)
        return fn(**arguments), True
    except Exception as exc:  # the model sees the failure and can correct itself
        return f"Error: {call.name} raised {type(exc).__name__}: {_first_line(exc)}", False


def _coerce_arguments(fn: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """JSON arguments turned into the parameter types (e.g. a dict into a pydantic model)."""
    from pydantic import TypeAdapter

    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable hints: pass the JSON values through unchanged
        hints = {}
    return {
        name: TypeAdapter(hints[name]).validate_python(value) if name in hints else value
        for name, value in arguments.items()
    }


def format_call(call: Any) -> str:
    """``name(key="value", n=3)``: a tool call as a readable one-liner."""
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in call.arguments.items())
    return f"{call.name}({args})"


def format_result(result: Any) -> str:
    """A tool result as one line of text (JSON for structured values)."""
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(result)


def tool_content(result: Any) -> Any:
    """What goes into the tool message: JSON-serialisable values as they are, anything else as text."""
    try:
        json.dumps(result)
        return result
    except (TypeError, ValueError):
        return str(result)


# ------------------------------------------------------------------ JSON schema
def load_json_schema(value: str) -> dict[str, Any]:
    """A JSON schema from a file path or inline JSON text, checked against its meta-schema."""
    import jsonschema

    text = value
    path = Path(value).expanduser()
    if not value.lstrip().startswith(("{", "[")):
        if not path.is_file():
            raise CliError(
                f'--json-schema {value}: no such file; pass a schema file or inline JSON like \'{{"type": "object"}}\'.'
            )
        text = path.read_text(encoding="utf-8")
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"--json-schema {value}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})."
        ) from exc
    if not isinstance(schema, dict):
        raise CliError(f"--json-schema {value}: a schema must be a JSON object, got {type(schema).__name__}.")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "the top level"
        raise CliError(
            f"--json-schema {value}: not a valid JSON schema at {where}: {_first_line(exc)}"
        ) from exc
    return schema


# ----------------------------------------------------------------------- engine
def first_run_note(model: str | None) -> str | None:
    """A note for the one-time GGUF conversion of the embedded model, or None when it is already cached."""
    if model is not None:
        return None
    from hermes_core.engines.local import gguf_cache as _gguf_cache
    from hermes_core.engines.local.loading import embedded_gguf_path

    gguf = embedded_gguf_path()  # raises ModelLoadError naming the install command when missing
    root = _gguf_cache.gguf_cache_root()
    if _gguf_cache.is_complete(root / _gguf_cache.cache_key(gguf)):
        return None
    return (
        f"First run: converting the embedded model {gguf.name} to safetensors once (about 15-60 s), "
        f"cached in {root}; later runs start in seconds."
    )


def configure_threads(model: str | None, threads: int | None) -> int:
    """Set torch's CPU threads: ``threads`` if given, else 1 for the embedded model unless OMP_NUM_THREADS is set.

    A 135M model gains little from more threads, while oversubscribed threads on a busy machine were
    measured 6x slower (hermes-demo: 46 s with 2 threads vs 7.6 s with 1 on a shared 2-core VM).
    Real models keep torch's default. Returns the thread count in effect.
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    elif model is None and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def connect_chat_engine(args: argparse.Namespace, *, err: TextIO) -> Any:
    """The frontend over the server at ``--base-url`` (contacted now: unreachable or mismatched fails here)."""
    from hermes_core.engines.server.engine import get_server_engine

    print(f"Connecting to {args.base_url} ...", file=err, flush=True)
    started = time.perf_counter()
    engine = get_server_engine(
        args.model,
        base_url=args.base_url,
        dialect=args.dialect,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        timeout=args.timeout,
        constrained=not args.no_constrain,
    )
    served = engine.engine
    print(
        f"Connected in {time.perf_counter() - started:.1f} s: {served.dialect.server} serving "
        f"{served.info.model_id or engine.model_name} ({engine.context_window} tokens of context).",
        file=err,
        flush=True,
    )
    return engine


def load_chat_engine(
    model: str | None, quantization: str | None, *, constrained: bool, err: TextIO, **options: Any
) -> Any:
    """Load the engine, telling the user (on ``err``) what is loading and about the one-time conversion."""
    from hermes_core.engines.local.hermes_engine import load_engine
    from hermes_core.engines.local.loading import EMBEDDED_NAME

    note = first_run_note(model)
    label = model or f"{EMBEDDED_NAME} (embedded, offline)"
    print(f"Loading {label}{f' in {quantization}' if quantization else ''} ...", file=err, flush=True)
    if note:
        print(note, file=err, flush=True)
    started = time.perf_counter()
    engine = load_engine(
        model, quantization=quantization, constrained=constrained, progress=bool(note), **options
    )
    seconds = time.perf_counter() - started
    print(f"Loaded in {seconds:.1f} s ({engine.loaded.weights_summary()}).", file=err, flush=True)
    return engine


# ------------------------------------------------------------------------- chat
class ChatSession:
    """One conversation: history, tools, options; ``ask`` runs the tool loop and prints as it goes."""

    def __init__(
        self,
        engine: Any,
        args: argparse.Namespace,
        tools: Sequence[Callable[..., Any]],
        out: TextIO,
        err: TextIO | None = None,
    ) -> None:
        from hermes_core.types import Message

        self.engine = engine
        self.args = args
        self.tools = list(tools)
        self.by_name = {fn.__name__: fn for fn in self.tools}
        self.out = out
        self.err = err if err is not None else sys.stderr
        system = args.system if args.system is not None else (TOOL_SYSTEM_PROMPT if self.tools else None)
        self.initial: list[Message] = [Message("system", system)] if system else []
        self.history: list[Message] = list(self.initial)

    def reset(self) -> None:
        """Forget the conversation (keep the system prompt)."""
        self.history = list(self.initial)

    def _options(self, round_index: int) -> dict[str, Any]:
        """Generation options; the tool choice relaxes to auto after the first round and to none at the end."""
        options: dict[str, Any] = {
            "max_new_tokens": self.args.max_new_tokens,
            "temperature": self.args.temperature,
        }
        if self.args.repetition_penalty is not None:
            options["repetition_penalty"] = self.args.repetition_penalty
        if self.args.json_schema is not None:
            options["response_format"] = self.args.json_schema
        elif self.tools:
            choice = self.args.tool_choice if round_index == 0 else "auto"
            if round_index >= self.args.max_tool_rounds:
                choice = "none"
            options.update(tools=self.tools, tool_choice=choice, parallel_tool_calls=self.args.parallel)
        return options

    def ask(self, question: str) -> Any:
        """Answer ``question``: generate, run any tool calls, feed results back, repeat; returns the last result."""
        from hermes_core.types import Message

        self.history.append(Message("user", question))
        result = None
        for round_index in range(self.args.max_tool_rounds + 1):
            result = self._generate(self._options(round_index))
            self._note_if_cut_off(result)
            calls = list(result.tool_calls)
            self.history.append(Message("assistant", result.content, tool_calls=calls))
            for bad in result.invalid_tool_calls:  # only when cut off (length) or unconstrained
                self._say(f"!! invalid tool call, not run: {bad.error}")
            if not calls:
                break
            for call in calls:
                value, ok = run_tool(call, self.by_name)
                self._say(f"<- {call.name} {'returned' if ok else 'failed'}: {format_result(value)}")
                self.history.append(
                    Message("tool", tool_content(value), tool_call_id=call.id, name=call.name)
                )
        return result

    def _generate(self, options: dict[str, Any]) -> Any:
        """One model turn; streamed text is printed as it arrives, tool calls as soon as they are complete."""
        if not self.args.stream:
            result = self.engine.generate(self.history, **options)
            for call in result.tool_calls:
                self._say(f"-> tool call: {format_call(call)}")
            if result.content.strip() and self.args.json_schema is None:
                self._say(result.content.strip())
            return result
        printed_text = False
        result = None
        for event in self.engine.stream(self.history, **options):
            if event.type == "text" and self.args.json_schema is None:
                text = event.text.lstrip() if not printed_text else event.text
                if text:
                    self.out.write(text)
                    self.out.flush()
                    printed_text = True
            elif event.type == "tool_call" and event.tool_call is not None:
                if printed_text:
                    self.out.write("\n")
                    printed_text = False
                self._say(f"-> tool call: {format_call(event.tool_call)}")
            elif event.type == "end":
                result = event.result
        if printed_text:
            self.out.write("\n")
            self.out.flush()
        return result

    def _note_if_cut_off(self, result: Any) -> None:
        """One line on stderr when the reply stopped at the token limit (JSON mode says so itself)."""
        if result.finish_reason != "length" or self.args.json_schema is not None:
            return
        print(cut_off_note(result, self.args.max_new_tokens, PROG), file=self.err, flush=True)

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def cut_off_note(result: Any, max_new_tokens: int, prog: str) -> str:
    """The one-line note for a reply that ended at the token limit rather than where the model stopped."""
    if result.usage.completion_tokens < max_new_tokens:  # the context window was the tighter limit
        return f"{prog}: the reply was cut off at the end of the model's context window; shorten the conversation."
    return f"{prog}: the reply was cut off at --max-new-tokens ({max_new_tokens} tokens); raise it for a longer one."


def _print_json_answer(result: Any, out: TextIO, err: TextIO) -> int:
    """Print the JSON-mode answer pretty; exit status 1 when it is not complete JSON."""
    try:
        value = json.loads(result.content)
    except json.JSONDecodeError:
        print(result.content, file=out)
        reason = "it hit --max-new-tokens" if result.finish_reason == "length" else "it is not valid JSON"
        print(f"{PROG}: the answer is incomplete ({reason}); raise --max-new-tokens.", file=err)
        return 1
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out, flush=True)
    return 0


# ------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    """The ``hermes-chat`` argument parser (its ``--help`` is the command's manual)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=textwrap.fill(
            "Chat with a local Hermes-format function-calling model. Tool calls and JSON output are "
            "grammar-constrained, so they always parse. With no model given it runs offline on the "
            "embedded SmolLM2-135M-Instruct (tiny: fine for trying things, not for real answers).",
            width=88,
        ),
        epilog=(
            "examples:\n"
            '  hermes-chat "Tell me a joke"\n'
            '  hermes-chat --tools examples/tools.py --tool-choice required "What is the weather in Paris?"\n'
            '  hermes-chat --json-schema examples/city.schema.json "Where is the Eiffel tower?"\n'
            '  hermes-chat --json-schema \'{"type": "object"}\' "Describe Paris in JSON"\n'
            "  hermes-chat --model NousResearch/Hermes-2-Pro-Llama-3-8B --quantization 4bit\n"
            '  hermes-chat --base-url http://127.0.0.1:8080 "Tell me a joke"  # on a llama-server\n'
            "\n"
            "In the interactive mode (no question), /reset forgets the conversation and /exit, an empty\n"
            "line or Ctrl-D quits. Exit status: 0 ok, 1 incomplete JSON answer, 2 bad arguments or model."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "question", nargs="?", help="ask this once and exit; leave it out to chat interactively"
    )
    parser.add_argument(
        "--tools",
        metavar="FILE_OR_MODULE",
        help="offer the tools of a Python file or module: its TOOLS list, else its public functions with "
        "type hints (docstrings become descriptions); calls are executed and fed back",
    )
    parser.add_argument(
        "--tool-choice",
        default="auto",
        metavar="CHOICE",
        help="auto (default: the model decides), required (must call some tool), none, or a tool name "
        "(must call that one); applies to the first round, later rounds are auto",
    )
    parser.add_argument(
        "--max-tool-rounds",
        type=int,
        default=DEFAULT_MAX_TOOL_ROUNDS,
        metavar="N",
        help=f"at most N rounds of tool calls per question, then the model must answer (default {DEFAULT_MAX_TOOL_ROUNDS})",
    )
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="allow several tool calls per model turn (default: one, which small models need)",
    )
    parser.add_argument(
        "--json-schema",
        metavar="FILE_OR_JSON",
        help="JSON mode: answer with JSON matching this schema (a file, or inline JSON); not with --tools",
    )
    parser.add_argument(
        "--system", metavar="TEXT", help="system prompt (default with tools: a short tool-use hint)"
    )
    parser.add_argument(
        "--stream", action="store_true", help="print the answer token by token as it is generated"
    )
    parser.add_argument(
        "--model",
        metavar="PATH_OR_ID",
        help="Hugging Face id (e.g. NousResearch/Hermes-2-Pro-Llama-3-8B), model directory or .gguf file "
        "(default: the embedded SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--base-url",
        metavar="URL",
        help="run on a server instead of locally: llama-server, vLLM or SGLang at URL (e.g. "
        "http://127.0.0.1:8080); --model then names the served model's tokenizer (default: the embedded "
        "model, which llama-server can serve from its GGUF)",
    )
    parser.add_argument(
        "--dialect",
        choices=["auto", "llama-server", "vllm", "sglang"],
        default="auto",
        help="with --base-url: the server's API (default: ask the server)",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"with --base-url: bearer token for the server (default: ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="with --base-url: how long to wait to connect and for each streamed piece (default 600)",
    )
    parser.add_argument(
        "--quantization",
        choices=["4bit", "8bit", "auto"],
        help="load the weights quantized with bitsandbytes",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        metavar="N",
        help=f"most tokens per model turn (default {DEFAULT_MAX_NEW_TOKENS})",
    )
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature; 0 (default) decodes greedily"
    )
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        metavar="X",
        help="above 1.0 (about 1.2) discourages repeating tokens; helps small models that loop (default off)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for torch (default: 1 for the embedded model unless OMP_NUM_THREADS is set, "
        "else torch's choice)",
    )
    parser.add_argument(
        "--no-constrain",
        action="store_true",
        help="turn grammar-constrained decoding off (calls are still parsed and validated, but may fail)",
    )
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse contradictory or out-of-range options with argparse's one-line usage error (exit 2)."""
    if args.json_schema is not None and args.tools:
        parser.error("--json-schema and --tools cannot be combined: JSON mode answers without tools.")
    if args.max_new_tokens < 1:
        parser.error("--max-new-tokens must be at least 1.")
    if args.max_tool_rounds < 0:
        parser.error("--max-tool-rounds must be 0 or more.")
    if not args.temperature >= 0 or args.temperature == float("inf"):  # also nan
        parser.error("--temperature must be a finite number, 0 or more.")
    penalty = args.repetition_penalty
    if penalty is not None and (not penalty > 0 or penalty == float("inf")):
        parser.error("--repetition-penalty must be a finite number above 0 (1.0 = off).")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1.")
    if args.base_url is None and (args.api_key is not None or args.dialect != "auto"):
        parser.error("--api-key and --dialect apply only with --base-url.")
    if args.base_url is not None and args.quantization is not None:
        parser.error(
            "--quantization applies to a local model; the server at --base-url loads its own weights."
        )
    if args.timeout <= 0:
        parser.error("--timeout must be above 0 seconds.")


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None) -> int:
    """Entry point of ``hermes-chat``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    out, err = sys.stdout, sys.stderr
    stdin = stdin or sys.stdin
    try:
        tools = load_tools(args.tools) if args.tools else []
        if args.json_schema is not None:
            args.json_schema = load_json_schema(args.json_schema)
        if tools:
            from hermes_core.format.tool_choice import normalize_tool_choice

            normalize_tool_choice(args.tool_choice, [fn.__name__ for fn in tools])
        elif args.tool_choice not in ("auto", "none"):
            raise CliError(f"--tool-choice {args.tool_choice} needs tools; pass --tools FILE_OR_MODULE.")
        if args.base_url is not None:
            engine = connect_chat_engine(args, err=err)
        else:
            configure_threads(args.model, args.threads)
            engine = load_chat_engine(
                args.model, args.quantization, constrained=not args.no_constrain, err=err
            )
        session = ChatSession(engine, args, tools, out, err)
        if tools:
            print(f"Tools: {', '.join(session.by_name)}", file=err, flush=True)
        if args.question is not None:
            result = session.ask(args.question)
            return _print_json_answer(result, out, err) if args.json_schema is not None else 0
        return _repl(session, stdin, out, err)
    except HermesError as exc:
        print(f"{PROG}: error: {_first_line(exc)}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(file=err)
        return 130


def _repl(session: ChatSession, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    """Interactive loop: one question per line until EOF, an empty line or /exit."""
    interactive = stdin.isatty()
    if interactive:
        print("Ask away. /reset forgets the conversation; /exit, an empty line or Ctrl-D quits.", file=err)
    status = 0
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = stdin.readline()
        if not line:
            break
        question = line.strip()
        if question in ("", "/exit", "/quit"):
            if not question and not interactive:
                continue
            break
        if question == "/reset":
            session.reset()
            print("(conversation cleared)", file=err)
            continue
        kept = len(session.history)
        try:
            result = session.ask(question)
        except HermesError as exc:  # a bad turn does not end the session
            print(f"{PROG}: error: {_first_line(exc)}", file=err)
            del session.history[kept:]
            status = EXIT_USAGE
            continue
        if session.args.json_schema is not None:
            status = _print_json_answer(result, out, err) or status
    return status


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (our errors are one line; others may not be)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def entry_point() -> None:
    """Console-script wrapper: exit with ``main``'s status."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
