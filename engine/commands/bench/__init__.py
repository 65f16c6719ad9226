"""`autointerp bench`: measured figures, one module per benchmark (cache.py: the activation cache; llm.py: LLM
throughput; scale.py: every stage after the forward pass at a wide SAE's size; cluster.py: a Ray cluster against
one process)."""
