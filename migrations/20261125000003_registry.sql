-- Read model of the `registry` projector: tenants, their API tokens, and every registered system
-- and gateway with its credentials and status. The ingest side authenticates against it; every
-- command that changes it waits until the projector has caught up, so a client that was just
-- given a key or token can use it at once.

CREATE TABLE registry_tenants (
    tenant_id  uuid        PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE INDEX registry_tenants_name ON registry_tenants (name);

-- Tenant API tokens, found by the SHA-256 of the token (the token itself is never stored).
CREATE TABLE registry_tokens (
    token_hash text        PRIMARY KEY,
    token_id   uuid        NOT NULL UNIQUE,
    tenant_id  uuid        NOT NULL,
    name       text        NOT NULL,
    issued_at  timestamptz NOT NULL,
    revoked_at timestamptz
);

-- Systems and gateways. `status`: active | paused | decommissioned. `credentials_version` counts
-- registrations and rotations, so a verified secret can be tied to the credentials it matched.
CREATE TABLE registry_systems (
    system_id           uuid        PRIMARY KEY,
    tenant_id           uuid        NOT NULL,
    system_key          text        NOT NULL UNIQUE,
    kind                text        NOT NULL CHECK (kind IN ('system', 'gateway')),
    name                text        NOT NULL,
    labels              jsonb       NOT NULL DEFAULT '{}',
    secret_hash         text        NOT NULL,
    credentials_version integer     NOT NULL,
    status              text        NOT NULL CHECK (status IN ('active', 'paused', 'decommissioned')),
    registered_at       timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

CREATE INDEX registry_systems_tenant ON registry_systems (tenant_id, kind, system_id);

-- Inventory dedup compares a report with the system's latest one: this finds it without walking
-- back through the system's heartbeats. Partial, so other appends pay nothing for it.
CREATE INDEX events_inventory_reports ON events (stream_id, stream_version)
    WHERE event_type IN ('InventoryReported', 'InventoryUnchanged');
