"""LangChain tool calling with ChatHermes: prompt | model.bind_tools(...), run the tool, answer.

Run from the repository root: ``python examples/langchain_tool_calling.py`` (offline, embedded model).
Needs ``pip install "hermes-function-calling[langchain]"``.

``tool_choice="any"`` makes the grammar force one schema-valid call, which a 135M model needs; with a
real Hermes model (``ChatHermes("NousResearch/Hermes-2-Pro-Llama-3-8B", quantization="4bit")``)
leave ``tool_choice`` at its default ("auto") and let the model decide.
"""

from __future__ import annotations

from langchain_core.messages import BaseMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from tools import calculate, get_weather  # examples/tools.py: plain typed functions

from langchain_hermes import ChatHermes

TOOLS = [tool(get_weather), tool(calculate)]
BY_NAME = {t.name: t for t in TOOLS}

prompt = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You are a helpful assistant. Once a tool result arrives, answer in one sentence using it.",
        ),
        ("human", "{question}"),
    ]
)


def main() -> None:
    """Ask, print the model's tool call, run it, feed the result back, print the answer."""
    llm = ChatHermes(max_new_tokens=48)  # the embedded SmolLM2-135M-Instruct, offline
    chain = prompt | llm.bind_tools(TOOLS, tool_choice="any", parallel_tool_calls=False)

    messages: list[BaseMessage] = prompt.invoke({"question": "What is the weather in London?"}).to_messages()
    print(f"user: {messages[-1].content}")
    ai = chain.invoke({"question": messages[-1].content})
    messages.append(ai)
    for call in ai.tool_calls:
        print(f"tool call: {call['name']}({call['args']})")
        result: ToolMessage = BY_NAME[call["name"]].invoke(call)  # a ToolMessage answering this call id
        print(f"tool result: {result.content}")
        messages.append(result)

    final = llm.invoke(messages)  # no tools bound: the model answers from the tool result
    print(f"answer: {final.content}")
    print(f"usage: {final.usage_metadata}")


if __name__ == "__main__":
    main()
