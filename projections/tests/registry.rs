//! The `registry` projector against a real PostgreSQL and event store, one database per test.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{
    CredentialsRotated, DomainEvent, HeartbeatReceived, NewEvent, StreamId, SystemDecommissioned,
    SystemKind, SystemPaused, SystemRegistered, SystemResumed, TenantCreated, TenantId,
    TenantTokenIssued, TenantTokenRevoked,
};
use projections::testing::assert_rebuild_matches_live;
use projections::{ProjectionRunner, Registry, RetryPolicy};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

fn store(pool: &PgPool) -> PgEventStore {
    PgEventStore::start(pool.clone(), GroupCommitConfig::default())
}

/// Appends one event; returns its position.
async fn append<E: DomainEvent>(
    store: &PgEventStore,
    tenant: TenantId,
    stream: &StreamId,
    expected: ExpectedVersion,
    event: &E,
) -> i64 {
    append_raw(
        store,
        stream,
        expected,
        NewEvent::new(tenant, event, Utc::now()),
    )
    .await
}

async fn append_raw(
    store: &PgEventStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    event: NewEvent,
) -> i64 {
    store
        .append(stream, expected, vec![event])
        .await
        .unwrap()
        .events[0]
        .position
}

async fn heartbeats(store: &PgEventStore, tenant: TenantId, stream: &StreamId, n: usize) {
    for _ in 0..n {
        let heartbeat = HeartbeatReceived {
            agent_version: Some("2.4.1".into()),
        };
        append(store, tenant, stream, ExpectedVersion::Any, &heartbeat).await;
    }
}

async fn recorded_at(pool: &PgPool, position: i64) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT recorded_at FROM events WHERE position = $1")
        .bind(position)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn registration(id: Uuid, key: &str, kind: SystemKind, name: &str) -> SystemRegistered {
    SystemRegistered {
        system_id: id,
        system_key: key.into(),
        name: name.into(),
        kind,
        secret_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${key}$initial"),
        labels: BTreeMap::from([
            ("site".to_owned(), "fra-1".to_owned()),
            ("role".to_owned(), name.to_owned()),
        ]),
    }
}

fn rotation(key: &str, n: u32) -> CredentialsRotated {
    CredentialsRotated {
        system_key: key.into(),
        secret_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${key}$rotated-{n}"),
    }
}

/// A `registry_tokens` row: hash, id, tenant, name, issued, revoked.
type TokenRowTuple = (
    String,
    Uuid,
    Uuid,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// A `registry_systems` row without its id, in column order.
type SystemRowTuple = (
    Uuid,
    String,
    String,
    String,
    serde_json::Value,
    String,
    i32,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

async fn system_row(pool: &PgPool, id: Uuid) -> SystemRowTuple {
    sqlx::query_as(
        "SELECT tenant_id, system_key, kind, name, labels, secret_hash, credentials_version, \
                status, registered_at, updated_at \
         FROM registry_systems WHERE system_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_fleet_history_becomes_tenants_tokens_and_systems(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let tenant_stream = StreamId::tenant(tenant);
    let created = append(
        &store,
        tenant,
        &tenant_stream,
        ExpectedVersion::NoStream,
        &TenantCreated {
            tenant_id: tenant,
            name: "acme".into(),
        },
    )
    .await;
    let (provisioning, ci) = (Uuid::now_v7(), Uuid::now_v7());
    let issued = append(
        &store,
        tenant,
        &tenant_stream,
        ExpectedVersion::Any,
        &TenantTokenIssued {
            token_id: provisioning,
            name: "provisioning".into(),
            token_hash: "aa".repeat(32),
        },
    )
    .await;
    append(
        &store,
        tenant,
        &tenant_stream,
        ExpectedVersion::Any,
        &TenantTokenIssued {
            token_id: ci,
            name: "ci".into(),
            token_hash: "bb".repeat(32),
        },
    )
    .await;

    // A server, a gateway, and a server registered before schema version 2.
    let (server, gateway, legacy) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (server_stream, gateway_stream, legacy_stream) = (
        StreamId::system(server),
        StreamId::gateway(gateway),
        StreamId::system(legacy),
    );
    let registered = append(
        &store,
        tenant,
        &server_stream,
        ExpectedVersion::NoStream,
        &registration(server, "FL-7K2D-Q9XM-4HTR", SystemKind::System, "db-01"),
    )
    .await;
    heartbeats(&store, tenant, &server_stream, 5).await;
    append(
        &store,
        tenant,
        &gateway_stream,
        ExpectedVersion::NoStream,
        &registration(gateway, "FL-GW01-AAAA-BBBB", SystemKind::Gateway, "gw-01"),
    )
    .await;
    let mut v1 = NewEvent::new(
        tenant,
        &registration(legacy, "FL-OLD1-OLD1-OLD1", SystemKind::System, "legacy"),
        Utc::now(),
    );
    v1.schema_version = 1;
    v1.payload = json!({
        "system_id": legacy,
        "system_key": "FL-OLD1-OLD1-OLD1",
        "name": "legacy",
        "secret_hash": "$argon2id$legacy",
    });
    append_raw(&store, &legacy_stream, ExpectedVersion::NoStream, v1).await;

    append(
        &store,
        tenant,
        &server_stream,
        ExpectedVersion::Any,
        &rotation("FL-7K2D-Q9XM-4HTR", 1),
    )
    .await;
    let rotated = append(
        &store,
        tenant,
        &server_stream,
        ExpectedVersion::Any,
        &rotation("FL-7K2D-Q9XM-4HTR", 2),
    )
    .await;
    append(
        &store,
        tenant,
        &gateway_stream,
        ExpectedVersion::Any,
        &SystemPaused {
            reason: Some("maintenance".into()),
        },
    )
    .await;
    let revoked = append(
        &store,
        tenant,
        &tenant_stream,
        ExpectedVersion::Any,
        &TenantTokenRevoked { token_id: ci },
    )
    .await;
    append(
        &store,
        tenant,
        &tenant_stream,
        ExpectedVersion::Any,
        &TenantTokenRevoked { token_id: ci },
    )
    .await;
    let decommissioned = append(
        &store,
        tenant,
        &legacy_stream,
        ExpectedVersion::Any,
        &SystemDecommissioned { reason: None },
    )
    .await;
    append(
        &store,
        tenant,
        &legacy_stream,
        ExpectedVersion::Any,
        &SystemResumed {},
    )
    .await;
    heartbeats(&store, tenant, &gateway_stream, 5).await;

    let head = store.head_position().await.unwrap();
    let reached = ProjectionRunner::new(store.clone(), Registry, 4)
        .catch_up(None)
        .await
        .unwrap();
    assert_eq!(reached, head);
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(parked, 0);

    let tenants: Vec<(Uuid, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT tenant_id, name, created_at FROM registry_tenants")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        tenants,
        vec![(
            tenant.0,
            "acme".to_owned(),
            recorded_at(&pool, created).await
        )]
    );

    let tokens: Vec<TokenRowTuple> = sqlx::query_as(
        "SELECT token_hash, token_id, tenant_id, name, issued_at, revoked_at \
             FROM registry_tokens ORDER BY name DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        tokens[0],
        (
            "aa".repeat(32),
            provisioning,
            tenant.0,
            "provisioning".to_owned(),
            recorded_at(&pool, issued).await,
            None
        )
    );
    assert_eq!(tokens[1].1, ci);
    assert_eq!(
        tokens[1].5,
        Some(recorded_at(&pool, revoked).await),
        "the first revocation wins"
    );

    let (tenant_id, key, kind, name, labels, secret, version, status, registered_at, updated_at) =
        system_row(&pool, server).await;
    assert_eq!(
        (tenant_id, key.as_str(), kind.as_str(), name.as_str()),
        (tenant.0, "FL-7K2D-Q9XM-4HTR", "system", "db-01")
    );
    assert_eq!(labels, json!({"site": "fra-1", "role": "db-01"}));
    assert!(secret.ends_with("$rotated-2"), "{secret}");
    assert_eq!((version, status.as_str()), (3, "active"));
    assert_eq!(registered_at, recorded_at(&pool, registered).await);
    assert_eq!(updated_at, recorded_at(&pool, rotated).await);

    let gateway_row = system_row(&pool, gateway).await;
    assert_eq!(
        (
            gateway_row.2.as_str(),
            gateway_row.6,
            gateway_row.7.as_str()
        ),
        ("gateway", 1, "paused")
    );

    let legacy_row = system_row(&pool, legacy).await;
    assert_eq!(
        (
            legacy_row.2.as_str(),
            legacy_row.4.clone(),
            legacy_row.7.as_str()
        ),
        ("system", json!({}), "decommissioned"),
        "a v1 registration is a server without labels; decommissioned is terminal"
    );
    assert_eq!(legacy_row.9, recorded_at(&pool, decommissioned).await);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_registration_and_its_changes_in_one_batch_and_across_batches_agree(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let id = Uuid::now_v7();
    let stream = StreamId::system(id);
    append(
        &store,
        tenant,
        &stream,
        ExpectedVersion::NoStream,
        &registration(id, "FL-ONE", SystemKind::System, "one"),
    )
    .await;
    append(
        &store,
        tenant,
        &stream,
        ExpectedVersion::Any,
        &rotation("FL-ONE", 1),
    )
    .await;
    append(
        &store,
        tenant,
        &stream,
        ExpectedVersion::Any,
        &SystemPaused { reason: None },
    )
    .await;

    // All three in one batch: the rotation and the pause find the system registered just before.
    ProjectionRunner::new(store.clone(), Registry, 100)
        .catch_up(None)
        .await
        .unwrap();
    let one_batch = system_row(&pool, id).await;
    assert_eq!((one_batch.6, one_batch.7.as_str()), (2, "paused"));

    // One event per batch: each change finds the system loaded from the table.
    projections::testing::reset(&pool, &Registry).await.unwrap();
    ProjectionRunner::new(store.clone(), Registry, 1)
        .catch_up(None)
        .await
        .unwrap();
    assert_eq!(system_row(&pool, id).await, one_batch);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_event_about_an_unknown_system_is_parked_and_the_rest_applied(pool: PgPool) {
    let store = store(&pool);
    let tenant = TenantId::new();
    let (known, unknown) = (Uuid::now_v7(), Uuid::now_v7());
    append(
        &store,
        tenant,
        &StreamId::system(known),
        ExpectedVersion::NoStream,
        &registration(known, "FL-KNOWN", SystemKind::System, "known"),
    )
    .await;
    let orphan = append(
        &store,
        tenant,
        &StreamId::system(unknown),
        ExpectedVersion::Any,
        &SystemPaused { reason: None },
    )
    .await;
    append(
        &store,
        tenant,
        &StreamId::system(known),
        ExpectedVersion::Any,
        &SystemPaused { reason: None },
    )
    .await;

    let retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
    };
    let head = ProjectionRunner::new(store.clone(), Registry, 100)
        .with_retry(retry)
        .catch_up(None)
        .await
        .unwrap();
    assert_eq!(head, 3);
    let parked: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT position, event_type, error FROM parked_events WHERE projector = 'registry'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (parked[0].0, parked[0].1.as_str()),
        (orphan, "SystemPaused")
    );
    assert!(
        parked[0].2.contains("no registered system"),
        "{}",
        parked[0].2
    );
    assert_eq!(system_row(&pool, known).await.7, "paused");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_registry_rebuilt_from_zero_equals_the_live_rows(pool: PgPool) {
    let store = store(&pool);
    for t in 0..3 {
        let tenant = TenantId::new();
        let tenant_stream = StreamId::tenant(tenant);
        append(
            &store,
            tenant,
            &tenant_stream,
            ExpectedVersion::NoStream,
            &TenantCreated {
                tenant_id: tenant,
                name: format!("tenant-{t}"),
            },
        )
        .await;
        let mut tokens = Vec::new();
        for k in 0..3 {
            let token_id = Uuid::now_v7();
            tokens.push(token_id);
            append(
                &store,
                tenant,
                &tenant_stream,
                ExpectedVersion::Any,
                &TenantTokenIssued {
                    token_id,
                    name: format!("token-{k}"),
                    token_hash: format!("{t:02}{k:062}"),
                },
            )
            .await;
        }
        for s in 0..6u32 {
            let id = Uuid::now_v7();
            let (stream, kind) = if s.is_multiple_of(3) {
                (StreamId::gateway(id), SystemKind::Gateway)
            } else {
                (StreamId::system(id), SystemKind::System)
            };
            let key = format!("FL-{t}{s}AA-BBBB-CCCC");
            append(
                &store,
                tenant,
                &stream,
                ExpectedVersion::NoStream,
                &registration(id, &key, kind, &format!("host-{t}-{s}")),
            )
            .await;
            heartbeats(&store, tenant, &stream, 3).await;
            for n in 0..s % 3 {
                append(
                    &store,
                    tenant,
                    &stream,
                    ExpectedVersion::Any,
                    &rotation(&key, n),
                )
                .await;
            }
            if s.is_multiple_of(2) {
                append(
                    &store,
                    tenant,
                    &stream,
                    ExpectedVersion::Any,
                    &SystemPaused { reason: None },
                )
                .await;
            }
            if s == 4 {
                append(
                    &store,
                    tenant,
                    &stream,
                    ExpectedVersion::Any,
                    &SystemResumed {},
                )
                .await;
            }
            if s == 5 {
                append(
                    &store,
                    tenant,
                    &stream,
                    ExpectedVersion::Any,
                    &SystemDecommissioned { reason: None },
                )
                .await;
                append(
                    &store,
                    tenant,
                    &stream,
                    ExpectedVersion::Any,
                    &SystemResumed {},
                )
                .await;
            }
            heartbeats(&store, tenant, &stream, 2).await;
        }
        append(
            &store,
            tenant,
            &tenant_stream,
            ExpectedVersion::Any,
            &TenantTokenRevoked {
                token_id: tokens[1],
            },
        )
        .await;
    }

    let snapshot = assert_rebuild_matches_live(&store, || Registry, 3).await;
    let sizes: Vec<(&str, usize)> = snapshot
        .iter()
        .map(|(table, rows)| (table.as_str(), rows.len()))
        .collect();
    assert_eq!(
        sizes,
        vec![
            ("registry_tenants", 3),
            ("registry_tokens", 9),
            ("registry_systems", 18)
        ]
    );
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM registry_systems GROUP BY 1 ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        vec![
            ("active".to_owned(), 9),
            ("decommissioned".to_owned(), 3),
            ("paused".to_owned(), 6)
        ]
    );

    // `fleetlog rebuild registry`: shadow tables, swapped in, the same rows again.
    let report = projections::rebuild::rebuild(&pool, || Registry, 5, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(report.swapped_at, store.head_position().await.unwrap());
    assert_eq!(
        projections::testing::snapshot(&pool, &Registry)
            .await
            .unwrap(),
        snapshot
    );
}
