"""Benchmarks with committed reports (`distree bench ...`)."""
