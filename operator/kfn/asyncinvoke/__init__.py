"""Asynchronous invocation (``X-Amz-Invocation-Type: Event``): the durable queue, the workers that drain it, Lambda's
retry/age rules, and (the destinations half) execution records, destinations and the DLQ.

Modules: :mod:`.envelope` (what is stored per event), :mod:`.queue` (the narrow queue interface and its NATS
JetStream implementation), :mod:`.retry` (pure retry/backoff/age decisions), :mod:`.worker` (``kfn async-worker``).
"""
