"""Exporters: checkpoints -> portable artifacts (ONNX, TRT-LLM checkpoints) -> engines.

One module per model family. Every export is cached under a key made of the source's
content digest, the exporter's name and version and its options, so a rerun with the same
inputs is instant and a changed exporter or checkpoint rebuilds.
"""
