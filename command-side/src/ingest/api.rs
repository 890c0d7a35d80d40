//! The ingest endpoints. Each checks its input, decides its events and appends them; it answers
//! `202 Accepted` with the events' ids and positions only after the append committed. Bad input
//! appends nothing and gets a 4xx in the one error shape.

use std::collections::{BTreeMap, HashSet};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use events_schema::{
    AlertResolved, AlertSeverity, AlertTriggered, AssetRegistered, DomainEvent, EventId,
    HardwareObserved, HeartbeatReceived, InventoryReported, InventoryUnchanged, Metadata,
    MetricKind, MetricSample, MetricsReported, NewEvent, ObservedComponent, StreamCategory,
    StreamId, SystemKind, TelemetryReceived, TenantId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{CommandError, ErrorBody, Result};
use crate::event_store::{AppendOutcome, EventStore, ExpectedVersion};
use crate::extract::Query;
use crate::http::{
    checked_text, parse_json, CommandState, IngestLimits, JsonBody, MaybeJson, RawBody, Reporter,
    SystemCaller,
};
use crate::ingest::{canonical, lshw};

/// The routes of this module.
pub fn routes() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new()
        .routes(routes!(heartbeat))
        .routes(routes!(inventory))
        .routes(routes!(observations))
        .routes(routes!(telemetry))
        .routes(routes!(metrics_batch))
        .routes(routes!(alert_event))
}

/// One event an ingest request appended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AcceptedEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// Its catalogue type.
    pub event_type: String,
    /// Its stream.
    pub stream_id: String,
    /// Its place in the stream.
    pub stream_version: i64,
    /// Its place in the global log.
    pub position: i64,
}

/// The answer to an accepted report: the events are durable.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// True when nothing new was written: a retry of an earlier request (same idempotency key or
    /// bundle id), or an inventory identical to the system's last one.
    pub duplicate: bool,
    /// The events, in order.
    pub events: Vec<AcceptedEvent>,
}

type AcceptedResponse = (StatusCode, Json<Accepted>);

fn accepted(
    stream: &StreamId,
    event_types: &[String],
    outcome: &AppendOutcome,
    duplicate: bool,
) -> AcceptedResponse {
    let events = event_types
        .iter()
        .zip(&outcome.events)
        .map(|(event_type, appended)| AcceptedEvent {
            event_id: appended.event_id.0,
            event_type: event_type.clone(),
            stream_id: stream.to_string(),
            stream_version: appended.stream_version,
            position: appended.position,
        })
        .collect();
    metrics::counter!("fleetlog_ingest_accepted_total", "stream" => stream.category().as_str())
        .increment(1);
    (StatusCode::ACCEPTED, Json(Accepted { duplicate, events }))
}

/// Reads a report's timestamp: RFC 3339, not before 2000, not beyond the allowed clock skew.
/// Absent means "now".
pub fn occurred_at(
    raw: Option<&str>,
    limits: &IngestLimits,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>> {
    let Some(raw) = raw else { return Ok(now) };
    let at = DateTime::parse_from_rfc3339(raw.trim())
        .map_err(|e| {
            CommandError::bad_request(
                "invalid_timestamp",
                format!("timestamp {raw:?} is not RFC 3339 (e.g. 2026-11-25T12:00:00Z): {e}"),
            )
        })?
        .with_timezone(&Utc);
    let skew = chrono::Duration::from_std(limits.max_clock_skew).unwrap_or(chrono::Duration::MAX);
    if at > now + skew {
        return Err(CommandError::bad_request(
            "timestamp_in_future",
            format!(
                "timestamp {raw} is more than {} s ahead of the server's clock",
                limits.max_clock_skew.as_secs()
            ),
        ));
    }
    if at
        < Utc
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .expect("a valid date")
    {
        return Err(CommandError::bad_request(
            "timestamp_too_old",
            format!("timestamp {raw} is before 2000"),
        ));
    }
    Ok(at)
}

/// The `Idempotency-Key` header, if the client sent one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| {
        CommandError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be printable ASCII",
        )
    })?;
    if key.is_empty() || key.len() > 200 {
        return Err(CommandError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 200 characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// The event id of a report: derived from the idempotency key when there is one (a retry writes
/// nothing), fresh otherwise.
fn event_id(endpoint: &str, source: &str, key: Option<&str>) -> EventId {
    match key {
        Some(key) => EventId::derived(
            &format!("fleetlog.ingest.{endpoint}"),
            format!("{source}\0{key}").as_bytes(),
        ),
        None => EventId::new(),
    }
}

fn http_metadata() -> Metadata {
    Metadata {
        source: Some("http".into()),
        ..Metadata::default()
    }
}

fn own_stream(system: &crate::auth::AuthenticatedSystem) -> StreamId {
    crate::registry::system_stream(system.kind, system.system_id)
}

async fn append(
    state: &CommandState,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<AcceptedResponse> {
    let mut event_types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
    let outcome = state.store.append(stream, expected, events).await?;
    if outcome.duplicate {
        // A retry: answer with what is stored, which the retry may have decided differently
        // (an inventory resent after it became the latest is "unchanged" the second time).
        event_types = stored_event_types(state, &outcome).await?;
    }
    let duplicate = outcome.duplicate;
    Ok(accepted(stream, &event_types, &outcome, duplicate))
}

/// The stored types of the events of a duplicate append, in its order.
async fn stored_event_types(state: &CommandState, outcome: &AppendOutcome) -> Result<Vec<String>> {
    let ids: Vec<Uuid> = outcome.events.iter().map(|e| e.event_id.0).collect();
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT e.event_type FROM unnest($1::uuid[]) WITH ORDINALITY AS i(id, ord) \
         JOIN events e ON e.event_id = i.id ORDER BY i.ord",
    )
    .bind(&ids)
    .fetch_all(state.pool())
    .await?;
    Ok(types)
}

/// A heartbeat. The body is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Heartbeat {
    /// When the agent sent it (RFC 3339); default now.
    pub timestamp: Option<String>,
    /// The agent's version.
    pub agent_version: Option<String>,
}

/// A system (or gateway) says it is alive → HeartbeatReceived.
#[utoipa::path(post, path = "/api/systems/heartbeat", tag = "ingest", security(("system" = [])),
    request_body(content = Option<Heartbeat>),
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn heartbeat(
    SystemCaller(system): SystemCaller,
    State(state): State<CommandState>,
    headers: HeaderMap,
    MaybeJson(body): MaybeJson<Heartbeat>,
) -> Result<AcceptedResponse> {
    let body = body.unwrap_or_default();
    let at = occurred_at(body.timestamp.as_deref(), &state.limits, Utc::now())?;
    if body.agent_version.as_ref().is_some_and(|v| v.len() > 100) {
        return Err(CommandError::InvalidBody(
            "agent_version is longer than 100 characters".into(),
        ));
    }
    let key = idempotency_key(&headers)?;
    let event = NewEvent::new(
        system.tenant_id,
        &HeartbeatReceived {
            agent_version: body.agent_version,
        },
        at,
    )
    .with_event_id(event_id("heartbeat", &system.system_key, key.as_deref()))
    .with_metadata(http_metadata());
    append(
        &state,
        &own_stream(&system),
        ExpectedVersion::Any,
        vec![event],
    )
    .await
}

/// An inventory report.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InventoryReport {
    /// When the inventory was collected (RFC 3339); default now.
    pub timestamp: Option<String>,
    /// The whole inventory document (a JSON object).
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
}

/// A system reports its inventory → InventoryReported, or InventoryUnchanged (hash only, and
/// `"duplicate": true`) when it is identical to the system's last report.
#[utoipa::path(post, path = "/api/systems/inventory", tag = "ingest", security(("system" = [])),
    request_body = InventoryReport,
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn inventory(
    SystemCaller(system): SystemCaller,
    State(state): State<CommandState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<InventoryReport>,
) -> Result<AcceptedResponse> {
    if system.kind != SystemKind::System {
        return Err(CommandError::forbidden(
            "not_a_system",
            "only systems report inventory; this is a gateway",
        ));
    }
    let at = occurred_at(body.timestamp.as_deref(), &state.limits, Utc::now())?;
    let data = Value::Object(body.data);
    let (data, hash) = tokio::task::spawn_blocking(move || {
        let hash = canonical::content_hash(&data);
        (data, hash)
    })
    .await
    .map_err(CommandError::internal)?;
    let key = idempotency_key(&headers)?;
    let stream = own_stream(&system);
    // Dedup compares with the latest report. The read and the append are not one atomic step:
    // two reports of one system racing each other may both be stored in full, which is harmless
    // (an agent reports one at a time, waiting for each answer).
    let unchanged = last_inventory_hash(&state, &stream).await?.as_deref() == Some(hash.as_str());
    let remembered_hash = hash.clone();
    let event = if unchanged {
        NewEvent::new(
            system.tenant_id,
            &InventoryUnchanged { content_hash: hash },
            at,
        )
    } else {
        // Moves the document into the payload: a 10 MB report is not copied.
        NewEvent::from_payload::<InventoryReported>(
            system.tenant_id,
            InventoryReported::payload(hash, data),
            at,
        )
    }
    .with_event_id(event_id("inventory", &system.system_key, key.as_deref()))
    .with_metadata(http_metadata());
    let (status, Json(mut accepted)) =
        append(&state, &stream, ExpectedVersion::Any, vec![event]).await?;
    // A duplicate answers with the event stored first, whose document may differ from this one.
    if let Some(stored) = accepted.events.first().filter(|_| !accepted.duplicate) {
        state
            .inventory_hashes
            .remember(&stream, stored.stream_version, remembered_hash);
    }
    accepted.duplicate |= unchanged;
    Ok((status, Json(accepted)))
}

/// The content hash of the system's latest inventory report: remembered, when this process knows
/// the report the log names as the latest (found through a small index), else read from it.
async fn last_inventory_hash(state: &CommandState, stream: &StreamId) -> Result<Option<String>> {
    let latest: Option<i64> = sqlx::query_scalar(
        "SELECT stream_version FROM events \
         WHERE stream_id = $1 AND event_type IN ('InventoryReported', 'InventoryUnchanged') \
         ORDER BY stream_version DESC LIMIT 1",
    )
    .bind(stream.as_str())
    .fetch_optional(state.pool())
    .await?;
    let Some(version) = latest else {
        return Ok(None);
    };
    if let Some(hash) = state.inventory_hashes.get(stream, version) {
        return Ok(Some(hash));
    }
    let hash: Option<String> = sqlx::query_scalar(
        "SELECT payload->>'content_hash' FROM events WHERE stream_id = $1 AND stream_version = $2",
    )
    .bind(stream.as_str())
    .bind(version)
    .fetch_optional(state.pool())
    .await?
    .flatten();
    if let Some(hash) = &hash {
        state
            .inventory_hashes
            .remember(stream, version, hash.clone());
    }
    Ok(hash)
}

/// One component of an asset, as a client reports it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// `disk`, `memory`, `cpu`, `network`, `psu`, ...
    pub class: String,
    /// Vendor.
    pub vendor: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Serial number (required: it is the component's identity).
    pub serial: String,
    /// Firmware version.
    pub firmware: Option<String>,
    /// Slot or bus position.
    pub slot: Option<String>,
    /// Capacity in bytes.
    pub capacity: Option<u64>,
}

/// A hardware observation of one asset, in Fleetlog's own format.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// The client's id for this upload: a second upload with the same id writes nothing.
    pub bundle_id: String,
    /// The asset's serial number.
    pub asset_serial: String,
    /// The asset's vendor.
    pub vendor: Option<String>,
    /// The asset's model.
    pub model: Option<String>,
    /// When it was observed (RFC 3339); default now.
    pub timestamp: Option<String>,
    /// The components with serial numbers.
    pub components: Vec<Component>,
}

/// How the observation body is to be read.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct ObservationFormat {
    /// `lshw` for the output of `lshw -json` as it is (or send Content-Type
    /// `application/x-lshw+json`); default Fleetlog's own format.
    pub format: Option<String>,
    /// With `lshw`: the bundle id (else the `Idempotency-Key` header, else the document's hash).
    pub bundle_id: Option<String>,
}

/// The asset stream of a serial number within a tenant (asset ids derive from the serial).
pub fn asset_id(tenant: TenantId, serial: &str) -> Uuid {
    let namespace = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"fleetlog.asset-serial");
    Uuid::new_v5(&namespace, format!("{tenant}\0{serial}").as_bytes())
}

/// A hardware observation of one asset → HardwareObserved (and AssetRegistered the first time),
/// idempotent on the bundle id. Takes Fleetlog's format or `lshw -json` output as it is.
#[utoipa::path(post, path = "/api/assets/observations", tag = "ingest", security(("system" = []), ("tenant" = [])),
    params(ObservationFormat), request_body = Observation,
    responses((status = 202, body = Accepted), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn observations(
    reporter: Reporter,
    State(state): State<CommandState>,
    Query(format): Query<ObservationFormat>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<AcceptedResponse> {
    let lshw_content = body
        .content_type
        .as_deref()
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("lshw"));
    let observation = match format.format.as_deref() {
        Some("lshw") => from_lshw(&body.bytes, format.bundle_id.as_deref(), &headers)?,
        None if lshw_content => from_lshw(&body.bytes, format.bundle_id.as_deref(), &headers)?,
        None | Some("fleetlog") => parse_json::<Observation>(&body.bytes)?,
        Some(other) => {
            return Err(CommandError::bad_request(
                "invalid_query",
                format!("unknown format {other:?} (lshw or fleetlog)"),
            ))
        }
    };
    let tenant = reporter.tenant_id();
    let at = occurred_at(observation.timestamp.as_deref(), &state.limits, Utc::now())?;
    let bundle_id = checked_text("bundle_id", &observation.bundle_id)?;
    let asset_serial = checked_text("asset_serial", &observation.asset_serial)?;
    let mut seen = HashSet::new();
    let mut components = Vec::with_capacity(observation.components.len());
    for c in observation.components {
        let serial = checked_text("components[].serial", &c.serial)?;
        if !seen.insert(serial.clone()) {
            return Err(CommandError::InvalidBody(format!(
                "component serial {serial:?} appears twice"
            )));
        }
        components.push(ObservedComponent {
            class: checked_text("components[].class", &c.class)?.to_ascii_lowercase(),
            vendor: c.vendor,
            model: c.model,
            serial,
            firmware: c.firmware,
            slot: c.slot,
            capacity_bytes: c.capacity,
        });
    }
    let asset_id = asset_id(tenant, &asset_serial);
    let stream = StreamId::asset(asset_id);
    let observed = NewEvent::new(
        tenant,
        &HardwareObserved {
            bundle_id: bundle_id.clone(),
            asset_serial: asset_serial.clone(),
            components,
        },
        at,
    )
    .with_event_id(EventId::derived(
        "fleetlog.ingest.hardware-observed",
        format!("{tenant}\0{bundle_id}").as_bytes(),
    ))
    .with_metadata(http_metadata());
    // Every observation after the first goes to an existing stream; the first also registers
    // the asset. If another request registered it in between, append to the existing stream.
    let registered = NewEvent::new(
        tenant,
        &AssetRegistered {
            asset_id,
            serial: asset_serial,
            vendor: observation.vendor,
            model: observation.model,
        },
        at,
    )
    .with_event_id(EventId::derived(
        "fleetlog.ingest.asset-registered",
        asset_id.as_bytes(),
    ))
    .with_metadata(http_metadata());
    match append(
        &state,
        &stream,
        ExpectedVersion::NoStream,
        vec![registered, observed.clone()],
    )
    .await
    {
        // The asset exists (its stream, or its AssetRegistered id, is already stored): append
        // the observation alone. A bundle id reused for another asset still fails there (409).
        Err(CommandError::Conflict {
            code: "wrong_expected_version" | "idempotency_key_reused",
            ..
        }) => append(&state, &stream, ExpectedVersion::Any, vec![observed]).await,
        other => other,
    }
}

fn from_lshw(bytes: &[u8], bundle_id: Option<&str>, headers: &HeaderMap) -> Result<Observation> {
    let document: Value = parse_json(bytes)?;
    let parsed = lshw::parse_lshw(&document)
        .map_err(|e| CommandError::InvalidBody(format!("not usable lshw -json output: {e}")))?;
    let bundle_id = match (bundle_id, idempotency_key(headers)?) {
        (Some(id), _) => id.to_owned(),
        (None, Some(key)) => key,
        (None, None) => format!("lshw-{}", canonical::content_hash(&document)),
    };
    Ok(Observation {
        bundle_id,
        asset_serial: parsed.asset_serial,
        vendor: parsed.vendor,
        model: parsed.model,
        timestamp: None,
        components: parsed
            .components
            .into_iter()
            .map(|c| Component {
                class: c.class,
                vendor: c.vendor,
                model: c.model,
                serial: c.serial,
                firmware: c.firmware,
                slot: c.slot,
                capacity: c.capacity_bytes,
            })
            .collect(),
    })
}

/// A gateway forwards telemetry: the body is stored byte for byte and never decoded →
/// TelemetryReceived.
#[utoipa::path(post, path = "/api/gateways/telemetry", tag = "ingest", security(("system" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 202, body = Accepted), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn telemetry(
    SystemCaller(gateway): SystemCaller,
    State(state): State<CommandState>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<AcceptedResponse> {
    if gateway.kind != SystemKind::Gateway {
        return Err(CommandError::forbidden(
            "not_a_gateway",
            "only gateways send telemetry; this is a system",
        ));
    }
    if body.bytes.is_empty() {
        return Err(CommandError::bad_request(
            "empty_body",
            "telemetry needs a non-empty body",
        ));
    }
    let key = idempotency_key(&headers)?;
    let payload = TelemetryReceived {
        content_type: body.content_type.filter(|ct| ct.len() <= 200),
        size_bytes: body.bytes.len() as u64,
        subject: None,
        jetstream_sequence: None,
    };
    let event = NewEvent::new(gateway.tenant_id, &payload, Utc::now())
        .with_event_id(event_id("telemetry", &gateway.system_key, key.as_deref()))
        .with_data(body.bytes.to_vec())
        .with_metadata(http_metadata());
    append(
        &state,
        &own_stream(&gateway),
        ExpectedVersion::Any,
        vec![event],
    )
    .await
}

/// Counter or gauge, on the wire.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SampleType {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One metric sample.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// `counter` or `gauge`.
    #[serde(rename = "type")]
    pub kind: SampleType,
    /// Metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
    pub name: String,
    /// Value.
    pub value: f64,
    /// Series labels (names `[a-zA-Z_][a-zA-Z0-9_]*`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it was observed (RFC 3339).
    pub timestamp: String,
}

/// A batch of samples.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsBatch {
    /// 1 to 10,000 samples.
    pub samples: Vec<Sample>,
}

/// Most samples in one batch.
pub const MAX_SAMPLES: usize = 10_000;

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A batch of metric samples → one MetricsReported.
#[utoipa::path(post, path = "/api/metrics", tag = "ingest", security(("system" = []), ("tenant" = [])),
    request_body = MetricsBatch,
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn metrics_batch(
    reporter: Reporter,
    State(state): State<CommandState>,
    headers: HeaderMap,
    JsonBody(batch): JsonBody<MetricsBatch>,
) -> Result<AcceptedResponse> {
    if batch.samples.is_empty() || batch.samples.len() > MAX_SAMPLES {
        return Err(CommandError::InvalidBody(format!(
            "samples must hold 1 to {MAX_SAMPLES} samples"
        )));
    }
    let now = Utc::now();
    let mut samples = Vec::with_capacity(batch.samples.len());
    for (i, s) in batch.samples.into_iter().enumerate() {
        if !is_metric_name(&s.name) {
            return Err(CommandError::InvalidBody(format!(
                "samples[{i}].name {:?} is not a metric name",
                s.name
            )));
        }
        if let Some(bad) = s.labels.keys().find(|k| !is_label_name(k)) {
            return Err(CommandError::InvalidBody(format!(
                "samples[{i}].labels: {bad:?} is not a label name"
            )));
        }
        let timestamp = occurred_at(Some(&s.timestamp), &state.limits, now)?;
        let kind = match s.kind {
            SampleType::Counter => MetricKind::Counter,
            SampleType::Gauge => MetricKind::Gauge,
        };
        samples.push(MetricSample {
            kind,
            name: s.name,
            value: s.value,
            labels: s.labels,
            timestamp,
        });
    }
    let (tenant, source_id) = match &reporter {
        Reporter::System(system) => (system.tenant_id, system.system_id),
        Reporter::Tenant(tenant) => (*tenant, tenant.0),
    };
    let key = idempotency_key(&headers)?;
    let event = NewEvent::new(tenant, &MetricsReported { samples }, now)
        .with_event_id(event_id("metrics", &reporter.source(), key.as_deref()))
        .with_metadata(http_metadata());
    append(
        &state,
        &StreamId::of(StreamCategory::Metrics, source_id),
        ExpectedVersion::Any,
        vec![event],
    )
    .await
}

/// Trigger or resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertAction {
    /// The alert fires (again).
    Trigger,
    /// The alert is over.
    Resolve,
}

/// An alert event, as monitoring tools send it. Fields beyond these are kept as custom fields.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AlertEvent {
    /// The event manager (integration) sending it.
    pub event_manager_id: String,
    /// One-line summary (required to trigger).
    pub summary: Option<String>,
    /// `critical`, `high` / `error`, `medium` / `warning`, `low`, `info` (required to trigger).
    pub severity: Option<String>,
    /// `trigger` or `resolve`.
    pub action: AlertAction,
    /// Class of problem, used by grouping rules.
    pub class: Option<String>,
    /// Every trigger and resolve with this key is one alert.
    #[serde(rename = "dedupKey", alias = "dedup_key")]
    pub dedup_key: String,
    /// Labels that identify what the alert is about.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Any other fields, kept as sent.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub custom: Map<String, Value>,
}

fn severity(raw: &str) -> Result<AlertSeverity> {
    Ok(match raw.trim().to_ascii_lowercase().as_str() {
        "critical" => AlertSeverity::Critical,
        "high" | "error" => AlertSeverity::Error,
        "medium" | "warning" => AlertSeverity::Warning,
        "low" | "info" => AlertSeverity::Info,
        other => {
            return Err(CommandError::InvalidBody(format!(
                "severity {other:?} is not one of critical, high, error, medium, warning, low, info"
            )))
        }
    })
}

/// The stream of an alert: per tenant and dedup key. Alerts a system reports live in that
/// system's own namespace, so one system's credentials cannot resolve or overwrite another's
/// alerts (or the tenant's tools').
pub fn alert_stream(tenant: TenantId, system: Option<Uuid>, dedup_key: &str) -> StreamId {
    let namespace = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"fleetlog.alert-dedup-key");
    let scope = match system {
        Some(system) => format!("{tenant}/{system}"),
        None => tenant.to_string(),
    };
    StreamId::of(
        StreamCategory::Alert,
        Uuid::new_v5(&namespace, format!("{scope}\0{dedup_key}").as_bytes()),
    )
}

/// An alert event → AlertTriggered or AlertResolved on the alert's stream.
#[utoipa::path(post, path = "/v1/events", tag = "ingest", security(("tenant" = []), ("system" = [])),
    request_body = AlertEvent,
    responses((status = 202, body = Accepted), (status = 422, body = ErrorBody)))]
async fn alert_event(
    reporter: Reporter,
    State(state): State<CommandState>,
    headers: HeaderMap,
    JsonBody(alert): JsonBody<AlertEvent>,
) -> Result<AcceptedResponse> {
    let tenant = reporter.tenant_id();
    let dedup_key = checked_text("dedupKey", &alert.dedup_key)?;
    let event_manager_id = checked_text("event_manager_id", &alert.event_manager_id)?;
    let now = Utc::now();
    let event = match alert.action {
        AlertAction::Trigger => {
            let summary = alert.summary.as_deref().ok_or_else(|| {
                CommandError::InvalidBody("summary is required to trigger".into())
            })?;
            let severity = severity(alert.severity.as_deref().ok_or_else(|| {
                CommandError::InvalidBody("severity is required to trigger".into())
            })?)?;
            let mut labels = alert.labels;
            if let Reporter::System(system) = &reporter {
                // Labels that say who reported come from our records, never from the client.
                labels.insert("system_id".into(), system.system_id.to_string());
                labels.insert("system_key".into(), system.system_key.clone());
            }
            new_alert_event(
                tenant,
                &AlertTriggered {
                    dedup_key: dedup_key.clone(),
                    event_manager_id,
                    summary: summary.to_owned(),
                    severity,
                    class: alert.class,
                    labels,
                    custom: alert.custom,
                },
                now,
            )
        }
        AlertAction::Resolve => new_alert_event(
            tenant,
            &AlertResolved {
                dedup_key: dedup_key.clone(),
                event_manager_id,
            },
            now,
        ),
    };
    let key = idempotency_key(&headers)?;
    let event = event
        .with_event_id(event_id("alert", &reporter.source(), key.as_deref()))
        .with_metadata(http_metadata());
    append(
        &state,
        &alert_stream(tenant, reporter_system(&reporter), &dedup_key),
        ExpectedVersion::Any,
        vec![event],
    )
    .await
}

/// The reporting system, when a system (not a tenant tool) reports.
fn reporter_system(reporter: &Reporter) -> Option<Uuid> {
    match reporter {
        Reporter::System(system) => Some(system.system_id),
        Reporter::Tenant(_) => None,
    }
}

fn new_alert_event<E: DomainEvent>(tenant: TenantId, event: &E, at: DateTime<Utc>) -> NewEvent {
    NewEvent::new(tenant, event, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_must_be_rfc3339_and_not_far_ahead() {
        let limits = IngestLimits::default();
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        assert_eq!(occurred_at(None, &limits, now).unwrap(), now);
        assert_eq!(
            occurred_at(Some("2026-11-25T11:00:00+01:00"), &limits, now).unwrap(),
            now - chrono::Duration::hours(2)
        );
        assert_eq!(
            occurred_at(Some("2026-11-25T12:04:00Z"), &limits, now).unwrap(),
            now + chrono::Duration::minutes(4)
        );
        for (bad, code) in [
            ("yesterday", "invalid_timestamp"),
            ("2026-11-25 12:00", "invalid_timestamp"),
            ("2026-11-25T12:06:00Z", "timestamp_in_future"),
            ("3026-01-01T00:00:00Z", "timestamp_in_future"),
            ("1999-12-31T23:59:59Z", "timestamp_too_old"),
        ] {
            let error = occurred_at(Some(bad), &limits, now).unwrap_err();
            assert_eq!(error.status_and_code().1, code, "{bad}");
        }
    }

    #[test]
    fn metric_and_label_names_follow_prometheus() {
        assert!(is_metric_name("node_cpu_seconds_total"));
        assert!(is_metric_name("job:rate5m"));
        assert!(!is_metric_name("1abc"));
        assert!(!is_metric_name("a-b"));
        assert!(is_label_name("_instance"));
        assert!(!is_label_name("a:b"));
    }

    #[test]
    fn alert_streams_are_per_tenant_and_per_reporting_system() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let system = Uuid::now_v7();
        assert_eq!(
            alert_stream(a, None, "db:cpu"),
            alert_stream(a, None, "db:cpu")
        );
        assert_ne!(
            alert_stream(a, None, "db:cpu"),
            alert_stream(b, None, "db:cpu")
        );
        assert_ne!(
            alert_stream(a, None, "db:cpu"),
            alert_stream(a, Some(system), "db:cpu")
        );
        assert_ne!(
            alert_stream(a, Some(system), "db:cpu"),
            alert_stream(a, Some(Uuid::now_v7()), "db:cpu")
        );
        assert_eq!(alert_stream(a, None, "x").category(), StreamCategory::Alert);
    }
}
