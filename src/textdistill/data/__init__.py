"""Corpora and batching."""
