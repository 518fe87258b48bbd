"""Texts to embeddings: MambaEncoder (encoder.py), tokenization and the one batcher both devices
use (tokenization.py), corpus files (corpus.py), the CUDA device backend (cuda.py,
cuda_backend.py), Ray actor pools (distributed.py) and Parquet embedding shards (shards.py)."""
