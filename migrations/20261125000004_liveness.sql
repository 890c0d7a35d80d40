-- Read model of the `liveness` projector: whether each system and gateway shows signs of life,
-- since when, and the history of its active and inactive intervals. Every timestamp is Fleetlog's
-- clock (`recorded_at`, or a time the liveness monitor wrote into SystemWentSilent /
-- SystemRecovered), never the client's. The projector folds facts only; the liveness monitor (a
-- reactor) decides, from these rows and the clock, when a system went silent or recovered.

-- One row per registered system or gateway.
--   lifecycle: active | paused | decommissioned (from SystemPaused/Resumed/Decommissioned).
--   status: unknown (registered, never seen) | active | inactive (the monitor declared it silent).
--   status_since: when the current status began (the start of the open interval, if any).
--   last_seen_at / last_seen_position: recorded_at and position of the latest sign of life
--     (HeartbeatReceived, TelemetryReceived, InventoryReported, InventoryUnchanged); NULL: never.
--   watched_since: recorded_at of the registration or of the latest resume. Silence is measured
--     from greatest(last_seen_at, watched_since).
--   silent_last_seen_at: while inactive, the last_seen_at the SystemWentSilent named; a row with
--     last_seen_at > silent_last_seen_at has shown life again and awaits its SystemRecovered.
--   first_seen_after_silence: while inactive, the first sign of life after that silence (when
--     the system came back, whenever the monitor gets to record it).
--   timeout_minutes: a per-system override (NULL: the tenant's policy, else the default).
--   updated_position: position of the latest event that changed the row.
CREATE TABLE liveness_systems (
    system_id           uuid        PRIMARY KEY,
    tenant_id           uuid        NOT NULL,
    system_key          text        NOT NULL,
    name                text        NOT NULL,
    kind                text        NOT NULL CHECK (kind IN ('system', 'gateway')),
    lifecycle           text        NOT NULL CHECK (lifecycle IN ('active', 'paused', 'decommissioned')),
    status              text        NOT NULL CHECK (status IN ('unknown', 'active', 'inactive')),
    status_since        timestamptz NOT NULL,
    last_seen_at        timestamptz,
    last_seen_position  bigint,
    watched_since       timestamptz NOT NULL,
    silent_last_seen_at timestamptz,
    first_seen_after_silence timestamptz,
    timeout_minutes     integer     CHECK (timeout_minutes > 0),
    updated_position    bigint      NOT NULL
);

-- The monitor's scan for systems that may have gone silent.
CREATE INDEX liveness_systems_watch ON liveness_systems (last_seen_at)
    WHERE lifecycle = 'active' AND status = 'active';

-- Tenant-scoped listings and counts by status, paged by system id.
CREATE INDEX liveness_systems_tenant_status ON liveness_systems (tenant_id, status, system_id);

-- Tenant-scoped listings of every status, paged by system id.
CREATE INDEX liveness_systems_tenant ON liveness_systems (tenant_id, system_id);

-- The monitor's scan for silent systems that have shown life again (small: inactive rows only).
CREATE INDEX liveness_systems_recovering ON liveness_systems (system_id)
    WHERE status = 'inactive' AND last_seen_at > silent_last_seen_at
      AND lifecycle <> 'decommissioned';

-- A tenant's heartbeat timeout (LivenessPolicySet without a system id).
CREATE TABLE liveness_tenant_policies (
    tenant_id       uuid    PRIMARY KEY,
    timeout_minutes integer NOT NULL CHECK (timeout_minutes > 0)
);

-- The status history: one row per active or inactive interval. The open interval (ended_at NULL)
-- starts at the system's status_since. An interval that would end where it began is not kept, so
-- (system_id, started_at) is unique even when a system goes silent at the instant it was first
-- seen.
CREATE TABLE liveness_intervals (
    system_id  uuid        NOT NULL,
    tenant_id  uuid        NOT NULL,
    status     text        NOT NULL CHECK (status IN ('active', 'inactive')),
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    PRIMARY KEY (system_id, started_at)
);

-- A system's latest lifecycle event and latest liveness transition before a position, for the
-- LinkFailed reactor (without walking back through every heartbeat of the stream).
CREATE INDEX events_liveness_facts ON events (stream_id, stream_version)
    WHERE event_type IN ('SystemPaused', 'SystemResumed', 'SystemDecommissioned',
                         'SystemWentSilent', 'SystemRecovered');
