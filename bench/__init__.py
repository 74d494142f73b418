"""Benchmarks (``make bench``): the breach scanner against real PostgreSQL and Redis."""
