//! Gateway telemetry from NATS JetStream, stored verbatim and acknowledged only once durable.
