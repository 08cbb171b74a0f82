"""Offline evaluation: cached exit outputs, threshold sweeps and the trade-off report."""
