"""The local engine: transformers in this process, with loading, quantization, GGUF and KV/prefix caches."""
