"""Bridges from lorank to other tools' frameworks, one submodule per tool (``pyterrier``: lorank's reranker as
a PyTerrier transformer). Each submodule imports its tool, an optional extra; lorank itself never imports them,
so it works without those tools installed."""
