"""A three-document TREC collection with two topics, for command-line tests."""

DOCS = """<DOC>
<DOCNO>d1</DOCNO>
state space models for retrieval
</DOC>
<DOC>
<DOCNO>d2</DOCNO>
cooking pasta with tomatoes
</DOC>
<DOC>
<DOCNO>d3</DOCNO>
linear time sequence models
</DOC>
"""
TOPICS = """<top>
<num> 1
<title> sequence models
</top>
<top>
<num> 2
<title> pasta recipes
</top>
"""
QRELS = "1 0 d1 1\n1 0 d3 1\n2 0 d2 1\n"
