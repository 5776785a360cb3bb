"""Fakes and tiny models for tests and benchmarks only: never imported by the pipeline."""
