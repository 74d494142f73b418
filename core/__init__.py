"""Shared plumbing every app may use: the API error type and shape, strict input
serializers, the Redis client, the read-only admin base, the estimated-count paginator
and URL converters. It imports no Veilstop app."""
