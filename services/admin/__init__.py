"""Operator commands: migrate, check-config, up, status, trace, requeue, send, erase."""
