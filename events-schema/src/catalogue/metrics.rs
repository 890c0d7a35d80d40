//! `metrics-{source}`: batches of metric samples.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::DomainEvent;

/// The kind of a metric, as Prometheus names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Only goes up (resets on restart).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One sample of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricSample {
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Metric name.
    pub name: String,
    /// Value.
    pub value: f64,
    /// Series labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the value was observed.
    pub timestamp: DateTime<Utc>,
}

/// A batch of samples arrived in one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricsReported {
    /// The samples, as sent.
    pub samples: Vec<MetricSample>,
}

impl DomainEvent for MetricsReported {
    const EVENT_TYPE: &'static str = "MetricsReported";
    const SCHEMA_VERSION: u32 = 1;
}
