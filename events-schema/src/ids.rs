//! Identifiers that can only be built valid: tenants, events and streams.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::SchemaError;

/// The tenant every event and every read-model row belongs to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct TenantId(pub Uuid);

impl TenantId {
    /// A fresh tenant id (UUID v7, so ids sort by creation time).
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The unique id of one event; appending an id that is already stored is a no-op success.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// A fresh event id (UUID v7).
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// A deterministic event id derived from a namespace and an input, so that a retry or a replay
    /// of the same input produces the same id and the store writes it only once.
    pub fn derived(namespace: &str, input: &[u8]) -> Self {
        let ns = Uuid::new_v5(&Uuid::NAMESPACE_OID, namespace.as_bytes());
        Self(Uuid::new_v5(&ns, input))
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The kinds of stream in the catalogue; the part of a stream id before the first `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamCategory {
    /// `tenant-{id}`: tenant settings and policies.
    Tenant,
    /// `system-{id}`: one server and everything it reported.
    System,
    /// `gateway-{id}`: one IoT gateway and its telemetry.
    Gateway,
    /// `asset-{id}`: one hardware asset and its components.
    Asset,
    /// `alert-{dedup key}`: one alert, keyed by its deduplication key.
    Alert,
    /// `metrics-{source}`: batches of metric samples from one source.
    Metrics,
}

impl StreamCategory {
    /// Every category, in catalogue order.
    pub const ALL: [StreamCategory; 6] = [
        Self::Tenant,
        Self::System,
        Self::Gateway,
        Self::Asset,
        Self::Alert,
        Self::Metrics,
    ];

    /// The prefix used in stream ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::System => "system",
            Self::Gateway => "gateway",
            Self::Asset => "asset",
            Self::Alert => "alert",
            Self::Metrics => "metrics",
        }
    }
}

/// The longest stream id the store accepts, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 255;

/// A stream id such as `system-0193...`: a known category, a `-`, and a non-empty key of printable
/// characters. Only [`StreamId::parse`] and the typed constructors build one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    /// Parses and checks a stream id.
    pub fn parse(raw: &str) -> Result<Self, SchemaError> {
        let invalid = |reason: &str| SchemaError::InvalidStreamId {
            stream_id: raw.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        if raw.len() > MAX_STREAM_ID_LEN {
            return Err(invalid("longer than 255 bytes"));
        }
        let (category, key) = raw
            .split_once('-')
            .ok_or_else(|| invalid("expected `{category}-{key}`"))?;
        if !StreamCategory::ALL.iter().any(|c| c.as_str() == category) {
            return Err(invalid(
                "unknown category (tenant, system, gateway, asset, alert, metrics)",
            ));
        }
        if key.is_empty() {
            return Err(invalid("the key after the category is empty"));
        }
        if key.chars().any(char::is_control) {
            return Err(invalid("control characters are not allowed"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The stream of one category and key, e.g. `StreamId::of(StreamCategory::System, id)`.
    pub fn of(category: StreamCategory, key: impl fmt::Display) -> Self {
        Self(format!("{}-{}", category.as_str(), key))
    }

    /// `tenant-{id}`.
    pub fn tenant(id: TenantId) -> Self {
        Self::of(StreamCategory::Tenant, id)
    }

    /// `system-{id}`.
    pub fn system(id: Uuid) -> Self {
        Self::of(StreamCategory::System, id)
    }

    /// `gateway-{id}`.
    pub fn gateway(id: Uuid) -> Self {
        Self::of(StreamCategory::Gateway, id)
    }

    /// `asset-{id}`.
    pub fn asset(id: Uuid) -> Self {
        Self::of(StreamCategory::Asset, id)
    }

    /// `alert-{dedup key}`.
    pub fn alert(dedup_key: &str) -> Self {
        Self::of(StreamCategory::Alert, dedup_key)
    }

    /// The category of this stream.
    pub fn category(&self) -> StreamCategory {
        let prefix = self.0.split_once('-').map(|(c, _)| c).unwrap_or_default();
        StreamCategory::ALL
            .into_iter()
            .find(|c| c.as_str() == prefix)
            .expect("a StreamId is only built with a known category")
    }

    /// The machine a `system-{uuid}` or `gateway-{uuid}` stream belongs to (`None` for any
    /// other stream).
    pub fn system_id(&self) -> Option<Uuid> {
        if !matches!(
            self.category(),
            StreamCategory::System | StreamCategory::Gateway
        ) {
            return None;
        }
        let (_, key) = self.0.split_once('-')?;
        Uuid::parse_str(key).ok()
    }

    /// The stream id as text, as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Which of `count` partitions this stream belongs to: a stable hash (FNV-1a, 64 bit) of the
    /// id, so every process and every version of Fleetlog agrees. All events of a stream share
    /// a partition, so a partitioned projector sees each stream in order.
    pub fn partition(&self, count: u32) -> u32 {
        let hash = self.0.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        (hash % u64::from(count.max(1))) as u32
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for StreamId {
    type Err = SchemaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_system_and_gateway_streams_name_a_system() {
        let id = Uuid::now_v7();
        assert_eq!(StreamId::system(id).system_id(), Some(id));
        assert_eq!(StreamId::gateway(id).system_id(), Some(id));
        assert_eq!(StreamId::asset(id).system_id(), None);
        assert_eq!(StreamId::alert(&id.to_string()).system_id(), None);
        assert_eq!(
            StreamId::parse("system-not-a-uuid").unwrap().system_id(),
            None
        );
    }

    #[test]
    fn system_kinds_are_stored_by_their_serialized_names() {
        for kind in [crate::SystemKind::System, crate::SystemKind::Gateway] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(crate::SystemKind::from_name(kind.as_str()), kind);
        }
    }

    #[test]
    fn stream_ids_of_known_categories_parse_and_keep_their_category() {
        let id = StreamId::parse("gateway-gw-01").unwrap();
        assert_eq!(id.category(), StreamCategory::Gateway);
        assert_eq!(id.as_str(), "gateway-gw-01");
    }

    #[test]
    fn stream_ids_without_a_known_category_or_key_are_rejected() {
        for bad in [
            "",
            "system",
            "system-",
            "printer-1",
            "system-a\nb",
            &"x".repeat(300),
        ] {
            assert!(StreamId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn partitions_are_stable_and_spread_streams() {
        let id = StreamId::parse("system-0193a000-0000-7000-8000-000000000001").unwrap();
        assert_eq!(id.partition(4), id.partition(4));
        assert_eq!(id.partition(1), 0);
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c: a fixed value, not a per-process random hash.
        assert_eq!(
            StreamId::of(StreamCategory::Alert, "x").partition(u32::MAX),
            {
                let h = "alert-x".bytes().fold(0xcbf29ce484222325u64, |h, b| {
                    (h ^ b as u64).wrapping_mul(0x100000001b3)
                });
                (h % u64::from(u32::MAX)) as u32
            }
        );
        let mut seen = [0usize; 4];
        for i in 0..400 {
            seen[StreamId::of(StreamCategory::System, i).partition(4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn derived_event_ids_are_stable_and_depend_on_namespace_and_input() {
        let a = EventId::derived("liveness", b"event-1");
        assert_eq!(a, EventId::derived("liveness", b"event-1"));
        assert_ne!(a, EventId::derived("liveness", b"event-2"));
        assert_ne!(a, EventId::derived("differ", b"event-1"));
    }
}
