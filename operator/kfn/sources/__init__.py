"""Event source pollers: queues, streams and schedules feeding functions."""
