-- Signs of life update `liveness_systems` once per system per projector batch: under a steady
-- stream of heartbeats that is most of the projector's writing. An update that changes no indexed
-- column (and finds room on its page) is a HOT update: one new row version on the same page and no
-- index entry at all. `last_seen_at` changed with every sign of life and was indexed (the monitor's
-- scan for silent systems) and named in a partial index's predicate (its scan for recoveries), so
-- no such update could be HOT; each one wrote four index entries.
--
-- The silence scan now reads the active rows (once a minute, a sequential pass over the table),
-- and the recovery scan walks the inactive rows (few) and checks last_seen_at on them.
-- A fill factor below 100 leaves room on each page for the new row versions.
DROP INDEX liveness_systems_watch;
DROP INDEX liveness_systems_recovering;

CREATE INDEX liveness_systems_inactive ON liveness_systems (system_id)
    WHERE status = 'inactive' AND lifecycle <> 'decommissioned';

ALTER TABLE liveness_systems SET (fillfactor = 70);
