"""Tests of the CLI verbs (lorank.cli): train, evaluate, the analysis verbs."""
