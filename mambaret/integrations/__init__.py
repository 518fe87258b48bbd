"""Adapters for other libraries; each imports its library lazily, none is a dependency.

    mambaret.integrations.langchain             MambaEmbeddings (LangChain Embeddings)
    mambaret.integrations.llamaindex            MambaLlamaIndexEmbedding (LlamaIndex BaseEmbedding)
    mambaret.integrations.beir                  BeirEncoder (encode_queries / encode_corpus)
    mambaret.integrations.mteb                  MtebEncoder (MTEB's encoder protocol)
    mambaret.integrations.sentence_transformers export / read_folder (model folders)
"""
