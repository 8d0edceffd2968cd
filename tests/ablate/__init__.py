"""Tests of lorank.ablate: masks, sweeps, resume, figures."""
