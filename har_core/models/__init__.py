"""Trained runs and what they answer: architectures, run folders, loading, predicting, temperature, export.
May import har_core.data."""
