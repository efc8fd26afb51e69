"""June's orchestrator: RAG, conversation state and bot I/O in front of Triton."""

__version__ = "0.1.0"
