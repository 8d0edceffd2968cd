"""Tests of lorank.inference: the forward engine (prefix scoring)."""
