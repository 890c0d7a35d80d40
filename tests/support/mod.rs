//! Helpers shared by the root package's integration tests.

#![allow(dead_code)]

use chrono::Utc;
use command_side::event_store::{EventStore, ExpectedVersion, PgEventStore};
use events_schema::{HeartbeatReceived, NewEvent, StreamId, TenantId};
use sqlx::PgPool;

/// The URL of a test's own database, for a `fleetlog` child process.
pub fn database_url(pool: &PgPool) -> String {
    let master = std::env::var("DATABASE_URL").expect("the test command sets DATABASE_URL");
    let database = pool
        .connect_options()
        .get_database()
        .expect("a test database")
        .to_owned();
    format!(
        "{}/{database}",
        master.rsplit_once('/').expect("a URL with a database").0
    )
}

/// A heartbeat of `tenant`, now.
pub fn heartbeat(tenant: TenantId) -> NewEvent {
    NewEvent::new(
        tenant,
        &HeartbeatReceived {
            agent_version: None,
        },
        Utc::now(),
    )
}

/// Appends `appends` appends of `per_append` heartbeats, round robin over `streams` new streams.
pub async fn append_heartbeats(
    store: &PgEventStore,
    appends: usize,
    per_append: usize,
    streams: usize,
) {
    let tenant = TenantId::new();
    let streams: Vec<StreamId> = (0..streams.max(1))
        .map(|_| StreamId::system(uuid::Uuid::now_v7()))
        .collect();
    for i in 0..appends {
        let events = (0..per_append).map(|_| heartbeat(tenant)).collect();
        store
            .append(&streams[i % streams.len()], ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
}
