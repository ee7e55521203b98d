"""The server engine: generation on llama-server, vLLM or SGLang over HTTP (``ServerEngine``).

``engine`` is the shared HTTP engine and registry, ``http`` the transport (pools, retries, SSE),
``dialect`` what differs between servers, with one module per server (``llama_server``, ``vllm``,
``sglang``), and ``tokenizer`` loads the served model's tokenizer without weights.
"""
