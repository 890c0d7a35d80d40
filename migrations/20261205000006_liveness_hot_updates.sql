-- Signs of life update `liveness_systems` once per system per projector batch: under a steady
-- stream of heartbeats that is most of the projector's writing. An update that changes no indexed
-- column (and finds room on its page) is a HOT update: one new row version on the same page and no
-- index entry at all. `last_seen_at` changed with every sign of life and was indexed (the monitor's
-- scan for silent systems) and named in a partial index's predicate (its scan for recoveries), so
-- no such update could be HOT; each one wrote four index entries.
--
-- The silence scan now reads the active rows (once a minute, a sequential pass over the table).
-- The recovery scan walks an index of the rows awaiting their SystemRecovered: inactive rows whose
-- `first_seen_after_silence` is set (the projector sets it exactly when an inactive row shows life
-- after its silence, and only then), which a heartbeat of an active system never changes.
--
-- The old indexes are found by what they index, not by name: a rebuild of the liveness projector
-- swaps in tables whose indexes PostgreSQL named itself.
DO $$
DECLARE
    old_index text;
BEGIN
    FOR old_index IN
        SELECT indexname FROM pg_indexes
         WHERE schemaname = current_schema() AND tablename = 'liveness_systems'
           AND indexdef LIKE '%last_seen_at%'
    LOOP
        EXECUTE format('DROP INDEX %I', old_index);
    END LOOP;
END
$$;

CREATE INDEX liveness_systems_recovering ON liveness_systems (system_id)
    WHERE status = 'inactive' AND first_seen_after_silence IS NOT NULL
      AND lifecycle <> 'decommissioned';

-- Room on each page for the new row versions. It applies to pages written from now on; an existing
-- table gains it as rows move, or at once with `fleetlog rebuild liveness`.
ALTER TABLE liveness_systems SET (fillfactor = 70);
