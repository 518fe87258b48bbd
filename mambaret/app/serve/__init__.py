"""`mambaret serve`: an embedding and search server (OpenAI /v1/embeddings, TEI /embed, /search)
with dynamic batching, on uvicorn + starlette (`pip install "mambaret[serve]"`).

config.py settings and limits; errors.py the OpenAI error body; schemas.py request bodies;
batcher.py dynamic batching; embedding.py prompts, tokenization and limits; search.py /search;
metrics.py /metrics; app.py the routes; server.py uvicorn and SIGTERM; options.py the CLI flags.
Importing this package imports no ASGI code: `from mambaret.app.serve.app import create_app`.
"""
