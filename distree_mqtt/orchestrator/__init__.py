"""The orchestrator: watches load and latency, publishes the exit policy."""
