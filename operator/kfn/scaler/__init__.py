"""Scaling decisions: desired execution environments from concurrency, burst and caps."""
