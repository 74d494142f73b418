"""Shared plumbing every app may use: errors, serializers, Redis client, admin base, paginator, URL converters.

It imports no Veilstop app."""
