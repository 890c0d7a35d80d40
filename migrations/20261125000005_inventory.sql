-- Inventory history: read models of the `inventory` projector, and the one change the event store
-- allows to a stored event: retention pruning an old inventory document down to its hash.

-- Events are facts and never change, with one exception: exponential retention of inventory
-- snapshots may replace the payload of an old InventoryReported with
-- {"content_hash": <its hash>, "pruned": true}. Every other column, and every other event type,
-- stays immutable; deletes and truncation stay refused. The diffs (InventoryChanged) that make
-- the history are never touched.
CREATE OR REPLACE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.event_type = 'InventoryReported'
       AND NEW.payload = jsonb_build_object('content_hash', OLD.payload -> 'content_hash', 'pruned', true)
       AND (NEW.position, NEW.event_id, NEW.stream_id, NEW.stream_version, NEW.event_type,
            NEW.schema_version, NEW.tenant_id, NEW.metadata, NEW.occurred_at, NEW.recorded_at)
           IS NOT DISTINCT FROM
           (OLD.position, OLD.event_id, OLD.stream_id, OLD.stream_version, OLD.event_type,
            OLD.schema_version, OLD.tenant_id, OLD.metadata, OLD.occurred_at, OLD.recorded_at)
       AND NEW.data IS NOT DISTINCT FROM OLD.data
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'events are immutable: % is not allowed on the event store', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

-- One row per system that reported an inventory.
--   latest_*: its latest full document (InventoryReported); the document itself is that event's
--     payload.
--   last_reported_at: recorded_at of its latest report, changed (InventoryReported) or not
--     (InventoryUnchanged).
CREATE TABLE inventory_systems (
    system_id          uuid        PRIMARY KEY,
    tenant_id          uuid        NOT NULL,
    latest_position    bigint      NOT NULL,
    latest_hash        text        NOT NULL,
    latest_reported_at timestamptz NOT NULL,
    last_reported_at   timestamptz NOT NULL,
    reports            bigint      NOT NULL,
    changes            bigint      NOT NULL,
    updated_position   bigint      NOT NULL
);

-- The reports whose full document is still stored (retention deletes a row when it prunes the
-- report's payload). The document is the InventoryReported event's payload at `position`.
CREATE TABLE inventory_snapshots (
    system_id    uuid        NOT NULL,
    position     bigint      NOT NULL,
    tenant_id    uuid        NOT NULL,
    content_hash text        NOT NULL,
    reported_at  timestamptz NOT NULL,
    PRIMARY KEY (system_id, position)
);

-- "The nearest snapshot at or before T".
CREATE INDEX inventory_snapshots_at ON inventory_snapshots (system_id, reported_at DESC, position DESC);

-- The diff timeline, kept for ever: one row per change of an InventoryChanged event.
--   position / idx: the InventoryChanged event and the change's index in it.
--   changed_at: recorded_at of the report the change was found in (the event's occurred_at).
--   severity_rank: info 0, low 1, medium 2, high 3, critical 4 (for "at least" filters).
CREATE TABLE inventory_changes (
    position      bigint      NOT NULL,
    idx           integer     NOT NULL,
    tenant_id     uuid        NOT NULL,
    system_id     uuid        NOT NULL,
    changed_at    timestamptz NOT NULL,
    path          text        NOT NULL,
    op            text        NOT NULL CHECK (op IN ('added', 'removed', 'changed')),
    previous      jsonb,
    current       jsonb,
    category      text        NOT NULL,
    severity      text        NOT NULL,
    severity_rank smallint    NOT NULL CHECK (severity_rank BETWEEN 0 AND 4),
    PRIMARY KEY (position, idx)
);

-- One system's timeline and the tenant's fleet-wide changes, newest first.
CREATE INDEX inventory_changes_system ON inventory_changes (system_id, changed_at DESC, position DESC, idx);
CREATE INDEX inventory_changes_tenant ON inventory_changes (tenant_id, changed_at DESC, position DESC, idx);

-- The diff reactor's lookups of a system's previous full report (without walking back through
-- every InventoryUnchanged of a machine that rarely changes) and of a tenant's rules as of a
-- position.
CREATE INDEX events_inventory_full_reports ON events (stream_id, stream_version)
    WHERE event_type = 'InventoryReported';
CREATE INDEX events_tenant_rules ON events (stream_id, position)
    WHERE event_type IN ('InventoryRulesConfigured', 'ChangeNotificationRulesConfigured');
