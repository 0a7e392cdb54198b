"""Asynchronous invocation: the durable queue, its workers, and where finished events go (destinations, DLQ)."""
