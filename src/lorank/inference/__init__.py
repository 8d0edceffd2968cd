"""Running a reranker over (query, passage) pairs: the scoring engine (plain and prefix-KV-cached), the forward's
autocast and out-of-memory context, scoring one run across N processes, and the reranked run built from the scores;
and in-context reranking (``icr/``): ranking by a base model's attention to each candidate in one prompt.

Evaluating runs (metrics, significance, TREC run files) is :mod:`lorank.evaluation`'s job."""
