"""Statistics for a new database: the sale's tables analyzed as soon as they have rows.

PostgreSQL plans a never-analyzed table by default selectivities. The batch's write then
looked a confirmed hold up by the `(event_id, customer_id, expires_at)` index instead of
its primary key, reading every hold of the event per confirm: 9.0 ms a batch instead of
3.7 (docs/performance.md). Migration 0009 has autovacuum analyze these tables after 500
changed rows, but autovacuum looks once a minute (`autovacuum_naptime`), so the first
minute of a new deployment's first sale was planned blind.

So each process looks every few seconds while any of them has no statistics yet, and
analyzes those with 500 rows or more; once every one has statistics, it stops looking.
"No statistics" is read from `pg_stats` (the planner's own, kept across restarts and
replicated to a standby), not from the activity counters, which a crash, a failover or
`pg_stat_reset()` empties. The tables are found as ANALYZE finds them (`search_path`).

- Several processes: `ANALYZE (SKIP_LOCKED)`, so a table another process is analyzing
  is skipped, not waited for; the next look finds it done.
- Behind a transaction pooler: each look is a transaction, whose BEGIN brings the
  session's timeouts (`db/database.py`).
- A role that does not own a table cannot analyze it: that table is left to autovacuum,
  with one warning in the log.
- A table that never gets 500 rows (`queue_places` in a shop without waiting rooms)
  keeps the process looking, one catalog read every 5 s: an empty table has no
  statistics even once analyzed.
- During an outage a look fails: one warning, then quiet until a look succeeds.

PostgreSQL only: SQLite's planner has no such statistics to wait for.
"""

from __future__ import annotations

import structlog
from sqlalchemy import text

from boxoffice.db.database import Database
from boxoffice.periodic import Periodic

log = structlog.get_logger("boxoffice.db")

# The tables a sale grows from nothing, and what migration 0009 tunes.
SALE_TABLES = (
    "holds",
    "hold_items",
    "bookings",
    "audit_records",
    "idempotency_keys",
    "queue_places",
)
MIN_ROWS = 500  # 0009's autovacuum_analyze_threshold
CHECK_SECONDS = 5.0

# Each sale table: whether it is found (as ANALYZE would find it: `search_path`), its
# qualified name, whether this role may analyze it, whether it has rows enough, and
# whether it has statistics already. One catalog query a look.
_TABLES = text(
    """
    SELECT t.name, c.oid IS NOT NULL AS found,
           quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS qualified,
           pg_has_role(c.relowner, 'USAGE') AS ours,
           GREATEST(COALESCE(s.n_live_tup, 0), COALESCE(s.n_mod_since_analyze, 0)) >= :rows
               AS ready,
           EXISTS (SELECT 1 FROM pg_stats AS p
                    WHERE p.schemaname = n.nspname AND p.tablename = c.relname) AS analyzed
      FROM unnest(CAST(:tables AS text[])) AS t(name)
      LEFT JOIN pg_class AS c ON c.oid = to_regclass(t.name)
      LEFT JOIN pg_namespace AS n ON n.oid = c.relnamespace
      LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
    """
)


class YoungTables:
    """Looks every `check_seconds` until every sale table has statistics."""

    def __init__(
        self,
        database: Database,
        *,
        check_seconds: float = CHECK_SECONDS,
        tables: tuple[str, ...] = SALE_TABLES,
    ) -> None:
        self._database = database
        self._tables = list(tables)
        self._loop = Periodic("boxoffice-young-tables", check_seconds, self._pass, at_once=True)
        self._warned: set[str] = set()  # tables already warned of: once is enough
        self._failing = False

    async def look(self) -> tuple[list[str], int]:
        """One look: the tables analyzed now, and how many are still without statistics."""
        analyzed: list[str] = []
        async with self._database.engine.connect() as conn, conn.begin():
            tables = (await conn.execute(_TABLES, {"rows": MIN_ROWS, "tables": self._tables})).all()
            found = sum(1 for table in tables if table.found)
            if found != len(self._tables) and "missing" not in self._warned:
                self._warned.add("missing")
                log.warning("young_tables_not_found", found=found, wanted=len(self._tables))
            young = [table for table in tables if table.found and not table.analyzed]
            left = 0
            for name, _, qualified, ours, ready, _ in young:
                if not ours:
                    if name not in self._warned:
                        self._warned.add(name)
                        log.warning("young_table_not_ours", table=name)
                    continue
                if not ready:
                    left += 1
                    continue
                # A name from the catalog, quoted by it; never from a request.
                await conn.execute(text(f"ANALYZE (SKIP_LOCKED) {qualified}"))
                analyzed.append(str(name))
        if analyzed:
            log.info("young_tables_analyzed", tables=analyzed)
        return analyzed, left

    async def start(self) -> None:
        if self._database.dialect == "postgresql":
            self._loop.start()

    @property
    def looking(self) -> bool:
        """Started, with tables still to look at."""
        return self._loop.running

    async def stop(self) -> None:
        """Let a look under way finish, then stop."""
        await self._loop.stop()

    async def _pass(self) -> bool:
        """One look, quiet during an outage after its first warning: whether to look again."""
        try:
            analyzed, left = await self.look()
        except Exception as error:  # an outage: the next look tries again
            if not self._failing:
                log.warning("young_tables_look_failed", error=repr(error))
            self._failing = True
            return True
        self._failing = False
        return bool(analyzed or left)
