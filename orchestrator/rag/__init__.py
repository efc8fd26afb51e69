"""Retrieval-augmented generation: chunk, embed (Triton ``embed``), store and search."""
