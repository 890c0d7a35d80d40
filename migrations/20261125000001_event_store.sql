-- The event store: one append-only table in one global, commit-ordered sequence.
--
-- `position` is dense and commit-ordered: every append transaction first locks the single row of
-- `event_log_head`, takes the next positions from it and bumps it in the same transaction. Writers
-- therefore commit in position order, and a reader that can see position N can see every position
-- below N. See docs/adr/001-commit-ordered-positions.md.

CREATE TABLE events (
    position       bigint      PRIMARY KEY,
    event_id       uuid        NOT NULL,
    stream_id      text        NOT NULL,
    stream_version bigint      NOT NULL CHECK (stream_version > 0),
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL CHECK (schema_version > 0),
    tenant_id      uuid        NOT NULL,
    payload        jsonb       NOT NULL,
    data           bytea,
    metadata       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

-- Opaque bytes (telemetry) are stored verbatim; do not try to compress what is usually compressed.
ALTER TABLE events ALTER COLUMN data SET STORAGE EXTERNAL;

COMMENT ON TABLE events IS 'Fleetlog event store: immutable, one row per event, ordered by position';

-- The head of the log: the last position handed out. Its row lock serializes writers.
CREATE TABLE event_log_head (
    id            smallint PRIMARY KEY CHECK (id = 1),
    last_position bigint   NOT NULL
);
INSERT INTO event_log_head (id, last_position) VALUES (1, 0);

-- Events are facts: they are never changed or removed.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % is not allowed on the event store', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Appends one planned batch, in the caller's transaction or as its own (one round trip).
--
-- The caller planned stream versions and positions against `expected_head`. The function moves
-- the head only if it is still `expected_head` (taking its row lock, which serializes writers);
-- then it inserts the rows at positions expected_head + 1, + 2, ..., notifies tailing readers and
-- returns written = true. If another writer moved the head, nothing is written: written = false,
-- with the head found (which may already be newer by the time the caller reads it).
CREATE FUNCTION fleetlog_append_batch(
    expected_head   bigint,
    event_ids       uuid[],
    stream_ids      text[],
    stream_versions bigint[],
    event_types     text[],
    schema_versions integer[],
    tenant_ids      uuid[],
    payloads        text[],
    data            bytea[],
    metadata        text[],
    occurred_at     timestamptz[],
    OUT written     boolean,
    OUT found_head  bigint
) LANGUAGE plpgsql
-- Resolve `events` and `event_log_head` as at creation, whatever the caller's search_path.
SET search_path FROM CURRENT
AS $$
DECLARE
    appended bigint := coalesce(cardinality(event_ids), 0);
BEGIN
    -- Moving the head takes its row lock (held until commit) and checks it in one step.
    UPDATE event_log_head SET last_position = expected_head + appended
     WHERE id = 1 AND last_position = expected_head;
    IF NOT FOUND THEN
        written := false;
        SELECT h.last_position INTO found_head FROM event_log_head h WHERE h.id = 1;
        RETURN;
    END IF;
    IF appended > 0 THEN
        INSERT INTO events (position, event_id, stream_id, stream_version, event_type, schema_version,
                            tenant_id, payload, data, metadata, occurred_at)
        SELECT expected_head + r.ord, r.event_id, r.stream_id, r.stream_version, r.event_type,
               r.schema_version, r.tenant_id, r.payload::jsonb, r.data, r.metadata::jsonb, r.occurred_at
        FROM unnest(event_ids, stream_ids, stream_versions, event_types, schema_versions, tenant_ids,
                    payloads, data, metadata, occurred_at)
             WITH ORDINALITY AS r(event_id, stream_id, stream_version, event_type, schema_version,
                                  tenant_id, payload, data, metadata, occurred_at, ord);
        PERFORM pg_notify('fleetlog_events', (expected_head + appended)::text);
    END IF;
    written := true;
    found_head := expected_head;
END
$$;
