"""Tests of lorank's bridges to other tools (lorank.integrations)."""
