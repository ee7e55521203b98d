"""A LangGraph agent (model node <-> ToolNode loop) with ChatHermes and a real calculator-style tool.

Run from the repository root: ``python examples/langgraph_agent.py`` (offline, embedded model), or
``python examples/langgraph_agent.py --model NousResearch/Hermes-2-Pro-Llama-3-8B --quantization 4bit``.
Needs ``pip install "hermes-function-calling[langchain]"`` (langchain-core + langgraph).

The graph is the usual agent loop: the model node either calls tools (routed to LangGraph's
``ToolNode``, which runs them and appends ``ToolMessage``s) or answers (the run ends). A 135M model
rarely decides to call a tool by itself, so until a tool has answered, the model node binds the
tools with ``tool_choice="any"`` (the grammar then forces one valid call); a real Hermes model is
run with ``--auto`` and chooses by itself.
"""

from __future__ import annotations

import argparse

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from langchain_hermes import ChatHermes

RATES_EUR = {"USD": 1.08, "GBP": 0.85, "JPY": 162.0, "CHF": 0.95}


@tool
def convert_currency(amount: float, to_currency: str) -> str:
    """Convert an amount of euros into another currency at today's (fixed, offline) rate.

    Args:
        amount: Amount in euros.
        to_currency: ISO code of the target currency, e.g. USD, GBP, JPY or CHF.
    """
    code = to_currency.strip().upper()
    if code not in RATES_EUR:
        return f"Unknown currency {to_currency!r}; known: {', '.join(RATES_EUR)}."
    return f"{amount:g} EUR = {amount * RATES_EUR[code]:.2f} {code}"


TOOLS = [convert_currency]


def build_graph(llm: ChatHermes, *, force_first_call: bool) -> object:
    """The compiled agent graph: model node, ToolNode, and the route between them."""
    free = llm.bind_tools(TOOLS)
    forced = llm.bind_tools(TOOLS, tool_choice="any", parallel_tool_calls=False)

    def model_node(state: MessagesState) -> dict[str, list[AIMessage]]:
        answered = any(isinstance(m, ToolMessage) for m in state["messages"])
        if force_first_call and answered:
            runnable = llm  # the tool has answered: let the small model write the reply
        else:
            runnable = forced if force_first_call else free
        return {"messages": [runnable.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", model_node)
    graph.add_node("tools", ToolNode(TOOLS))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition, {"tools": "tools", END: END})
    graph.add_edge("tools", "model")
    return graph.compile()


def main() -> None:
    """Run the agent on one question and print every message the graph adds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Hermes model id or path (default: the embedded model)")
    parser.add_argument("--quantization", choices=["4bit", "8bit", "auto"])
    parser.add_argument("--auto", action="store_true", help="let the model decide when to call tools")
    parser.add_argument("--question", default="How much is 250 euros in US dollars?")
    args = parser.parse_args()

    llm = ChatHermes(model=args.model, quantization=args.quantization, max_new_tokens=64)
    agent = build_graph(llm, force_first_call=not args.auto)
    inputs = {
        "messages": [
            SystemMessage("You are a helpful assistant. Once a tool result arrives, answer in one sentence."),
            HumanMessage(args.question),
        ]
    }
    print(f"user: {args.question}")
    for update in agent.stream(inputs, {"recursion_limit": 8}, stream_mode="updates"):
        for node, delta in update.items():
            for message in delta["messages"]:
                if isinstance(message, AIMessage) and message.tool_calls:
                    for call in message.tool_calls:
                        print(f"[{node}] tool call: {call['name']}({call['args']})")
                elif isinstance(message, ToolMessage):
                    print(f"[{node}] tool result: {message.content}")
                else:
                    print(f"[{node}] answer: {message.content}")


if __name__ == "__main__":
    main()
