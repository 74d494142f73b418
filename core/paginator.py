"""A changelist paginator for big tables: no exact COUNT(*) of an unfiltered table."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db import connection
from django.utils.functional import cached_property


class EstimatedCountPaginator(Paginator):
    """Counts exactly when a filter applies (the index narrows it); for the whole
    table it takes PostgreSQL's planner estimate, which costs nothing however big
    the table grows. Admin shows "about N" pages then, which is all a person needs."""

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is None or query.where:
            return super().count
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [query.model._meta.db_table],
            )
            row = cursor.fetchone()
        estimate = row[0] if row else -1
        # Never vacuumed or analysed yet (-1), or small: count exactly, it is cheap.
        return super().count if estimate < 10_000 else estimate
