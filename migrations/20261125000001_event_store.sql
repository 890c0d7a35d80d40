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
