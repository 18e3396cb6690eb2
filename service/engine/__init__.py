"""The engine: ONNX Runtime sessions, the dynamic batcher, generation and image encoding. It knows
nothing of HTTP or of any transport."""
