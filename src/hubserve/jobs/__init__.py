"""Batch transform jobs: a file of records in, a file of answers out."""
