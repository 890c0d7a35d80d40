-- The projection runtime's own tables.

-- Where each projector is in the log. Written in the same transaction as the projector's read-model
-- rows, so each event is applied exactly once across crashes.
CREATE TABLE projection_checkpoints (
    projector  text        PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Events a projector could not apply after its retries: parked, visible, retryable; the
-- projector goes on with the rest.
CREATE TABLE parked_events (
    projector  text        NOT NULL,
    position   bigint      NOT NULL,
    event_id   uuid        NOT NULL,
    event_type text        NOT NULL,
    error      text        NOT NULL,
    attempts   integer     NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, position)
);

-- Read model of the `event_type_counts` projector: how many events of each type, per tenant.
CREATE TABLE event_type_counts (
    tenant_id     uuid   NOT NULL,
    event_type    text   NOT NULL,
    events        bigint NOT NULL,
    last_position bigint NOT NULL,
    PRIMARY KEY (tenant_id, event_type)
);

-- Who runs which projector: one process at a time holds a lease, renews it while it runs, and
-- loses it when it stops renewing (a crashed process), so another process takes over.
CREATE TABLE projection_leases (
    projector  text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
