//! `event_type_counts`: how many events of each type each tenant has. The simplest read model,
//! used by `fleetlog bench replay` and as the example every projector follows.

use std::collections::BTreeMap;

use events_schema::{RecordedEvent, TenantId};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::projector::{FoldError, Projector};

/// Counts events per tenant and type.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventTypeCounts;

/// Per (tenant, type): events counted in this batch and the last position seen.
pub type CountChanges = BTreeMap<(TenantId, String), (i64, i64)>;

impl Projector for EventTypeCounts {
    type Changes = CountChanges;

    fn name(&self) -> &'static str {
        "event_type_counts"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["event_type_counts"]
    }

    fn reads_payloads(&self) -> bool {
        // Counting needs an event's tenant and type only: never read inventory-sized payloads.
        false
    }

    async fn load(
        &self,
        _: &mut PgConnection,
        _: &[RecordedEvent],
    ) -> Result<CountChanges, sqlx::Error> {
        // Counting needs no state: the flush adds to what is stored.
        Ok(CountChanges::new())
    }

    fn fold(&self, changes: &mut CountChanges, event: &RecordedEvent) -> Result<(), FoldError> {
        let entry = changes
            .entry((event.tenant_id, event.event_type.clone()))
            .or_insert((0, 0));
        entry.0 += 1;
        entry.1 = event.position;
        Ok(())
    }

    async fn flush(&self, tx: &mut PgConnection, changes: CountChanges) -> Result<(), sqlx::Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tenants: Vec<Uuid> = Vec::with_capacity(changes.len());
        let mut types = Vec::with_capacity(changes.len());
        let mut counts = Vec::with_capacity(changes.len());
        let mut positions = Vec::with_capacity(changes.len());
        for ((tenant, event_type), (count, position)) in changes {
            tenants.push(tenant.0);
            types.push(event_type);
            counts.push(count);
            positions.push(position);
        }
        sqlx::query(
            "INSERT INTO event_type_counts (tenant_id, event_type, events, last_position) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::bigint[]) \
             ON CONFLICT (tenant_id, event_type) DO UPDATE \
             SET events = event_type_counts.events + excluded.events, \
                 last_position = greatest(event_type_counts.last_position, excluded.last_position)",
        )
        .bind(&tenants)
        .bind(&types)
        .bind(&counts)
        .bind(&positions)
        .execute(tx)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant: TenantId, event_type: &str, position: i64) -> RecordedEvent {
        RecordedEvent {
            position,
            event_id: events_schema::EventId::new(),
            stream_id: events_schema::StreamId::system(Uuid::now_v7()),
            stream_version: 1,
            event_type: event_type.into(),
            schema_version: 1,
            tenant_id: tenant,
            payload: serde_json::json!({}),
            data: None,
            metadata: Default::default(),
            occurred_at: chrono::Utc::now(),
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn the_fold_counts_per_tenant_and_type_and_keeps_the_last_position() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let mut changes = CountChanges::new();
        for (tenant, kind, position) in [(a, "X", 1), (a, "X", 2), (b, "X", 3), (a, "Y", 4)] {
            EventTypeCounts
                .fold(&mut changes, &event(tenant, kind, position))
                .unwrap();
        }
        assert_eq!(changes[&(a, "X".to_owned())], (2, 2));
        assert_eq!(changes[&(b, "X".to_owned())], (1, 3));
        assert_eq!(changes[&(a, "Y".to_owned())], (1, 4));
    }
}
