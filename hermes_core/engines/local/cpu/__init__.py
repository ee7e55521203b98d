"""CPU decode speed-ups applied to loaded models: direct 4-bit kernel, folded GQA attention, prepacked
bf16 linears and a lean Llama decode step. Each is optional and checks the device before touching a model."""
