"""Searching embeddings: exact search (index.py: FlatIndex), search over compressed codes
(codes.py: BinaryFlatIndex, Int8FlatIndex), the codes themselves (quantization.py:
quantize_embeddings), FAISS and flat builds from arrays or shards (build.py), encode-then-search
helpers (retrieval.py) and similarity / semantic_search (similarity.py)."""
