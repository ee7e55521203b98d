"""Both adapters hand the core the real schema of a recursive model on every structured-output and tool path."""

import jsonschema
import pytest
from langchain_core.tools import tool
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool

from langchain_hermes import ChatHermes
from llama_index_hermes import HermesLLM
from llama_index_hermes._structured import JsonModeProgram
from llama_index_hermes._tools import to_openai_tools
from tests.core.test_recursive_schemas import BAD, DEEP_BAD, GOOD, Node, Tree


def _bound(runnable) -> dict:
    return runnable.kwargs if hasattr(runnable, "kwargs") else runnable.first.kwargs


def _assert_recursive(schema: dict) -> None:
    """The schema really describes the recursive model: every level must be a node."""
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(GOOD)
    assert not validator.is_valid(BAD)
    assert not validator.is_valid(DEEP_BAD)


def plant(tree: Node) -> str:
    """Plant a tree."""
    return str(tree)


def test_langchain_structured_output_and_tools_keep_the_recursion():
    llm = ChatHermes()
    _assert_recursive(_bound(llm.with_structured_output(Node).first)["response_format"])
    _assert_recursive(_bound(llm.with_structured_output(Node, method="json_mode").first)["response_format"])
    forced = _bound(llm.with_structured_output(Node, method="function_calling").first)
    assert forced["tool_choice"] == "Node"
    _assert_recursive(forced["tools"][0]["function"]["parameters"])
    _assert_recursive(_bound(llm.bind_tools([Node]))["tools"][0]["function"]["parameters"])
    for wrapped in (plant, tool(plant)):  # a function and a @tool taking a recursive model
        spec = _bound(llm.bind_tools([wrapped]))["tools"][0]["function"]
        assert spec["name"] == "plant"
        _assert_recursive(spec["parameters"]["properties"]["tree"] | {"$defs": spec["parameters"]["$defs"]})


def test_llama_index_structured_output_and_tools_keep_the_recursion():
    program = JsonModeProgram(HermesLLM(), Node, PromptTemplate("Make a tree."))
    _assert_recursive(program._chat_kwargs(None)["response_format"])
    spec = to_openai_tools([FunctionTool.from_defaults(plant)])[0]["function"]
    assert spec["name"] == "plant"
    _assert_recursive(spec["parameters"]["properties"]["tree"] | {"$defs": spec["parameters"]["$defs"]})


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_tiny_model_returns_a_valid_recursive_structure(tiny_model_dir, method):
    llm = ChatHermes(model=str(tiny_model_dir), max_tokens=120)
    tree = llm.with_structured_output(Tree, method=method).invoke("Make a tree.")
    assert isinstance(tree, Tree) and tree.children
    assert all(isinstance(child, Node) for child in tree.children)


def test_llama_index_tiny_model_returns_a_valid_recursive_structure(tiny_model_dir):
    llm = HermesLLM(model=str(tiny_model_dir), max_new_tokens=120)
    tree = llm.structured_predict(Tree, PromptTemplate("Make a tree."))
    assert isinstance(tree, Tree) and tree.children

    def grow(tree: Tree) -> str:
        """Grow a tree."""
        return str(tree)

    response = llm.chat_with_tools([FunctionTool.from_defaults(grow)], "Grow a tree.", tool_required=True)
    (selection,) = llm.get_tool_calls_from_response(response)
    assert Tree.model_validate(selection.tool_kwargs["tree"]).children
