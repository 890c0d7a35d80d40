//! The HTTP server: every role's routes behind one listener, plus health, readiness and metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use command_side::auth::SystemAuthenticator;
use command_side::event_store::PgEventStore;
use command_side::http::CommandState;
use command_side::registry::RegistrySync;
use futures::future::BoxFuture;
use futures::FutureExt;
use metrics_exporter_prometheus::PrometheusHandle;
use projections::ProjectionRunner;
use serde_json::json;
use sqlx::PgPool;
use tower_http::trace::TraceLayer;

use crate::config::IngestConfig;

/// What the server-level routes need.
#[derive(Clone)]
pub struct ServerState {
    pool: PgPool,
    metrics: Option<PrometheusHandle>,
}

/// The whole HTTP API with default ingest settings. `metrics` is `None` where no recorder is
/// installed (tests).
pub fn app(
    store: PgEventStore,
    admin_token: Arc<str>,
    metrics: Option<PrometheusHandle>,
) -> Router {
    app_with(store, admin_token, metrics, &IngestConfig::default())
}

/// The whole HTTP API with the given ingest settings and the default heartbeat timeout
/// (`projections::liveness::DEFAULT_HEARTBEAT_TIMEOUT_MINUTES`).
pub fn app_with(
    store: PgEventStore,
    admin_token: Arc<str>,
    metrics: Option<PrometheusHandle>,
    ingest: &IngestConfig,
) -> Router {
    app_with_liveness(
        store,
        admin_token,
        metrics,
        ingest,
        projections::liveness::DEFAULT_HEARTBEAT_TIMEOUT_MINUTES,
    )
}

/// The whole HTTP API: the write side, the read side, health, readiness, metrics and the
/// OpenAPI description. Starts the task that forgets cached credentials when they change.
/// `default_timeout_minutes` is the liveness monitor's default heartbeat timeout
/// ([`LivenessConfig::monitor`](crate::config::LivenessConfig::monitor)), which the read API
/// reports for systems without their own or their tenant's timeout.
pub fn app_with_liveness(
    store: PgEventStore,
    admin_token: Arc<str>,
    metrics: Option<PrometheusHandle>,
    ingest: &IngestConfig,
    default_timeout_minutes: i32,
) -> Router {
    let server = ServerState {
        pool: store.pool().clone(),
        metrics,
    };
    let systems = Arc::new(SystemAuthenticator::new(
        store.pool().clone(),
        Duration::from_secs(ingest.auth_cache_ttl_s),
    ));
    tokio::spawn(systems.clone().follow_changes());
    let (write_api, write_paths) = command_side::http::router(CommandState {
        store: store.clone(),
        admin_token: admin_token.clone(),
        systems,
        registry: Arc::new(RegistryCatchUp(store.clone())),
        limits: ingest.limits(),
        inventory_hashes: Default::default(),
    });
    let projectors = Arc::new(crate::projectors::Registry(store.clone()));
    let (read_api, read_paths) = query_side::router(query_side::AppState {
        events: store,
        admin_token,
        projectors,
        default_timeout_minutes,
    });
    let openapi = Arc::new(openapi_document(write_paths, read_paths));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(server)
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .merge(write_api)
        .merge(read_api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TraceLayer::new_for_http())
}

/// The OpenAPI document of the whole API, as served at `/openapi.json` and committed as
/// `docs/openapi.json`.
pub fn openapi_document(
    write_api: utoipa::openapi::OpenApi,
    read_api: utoipa::openapi::OpenApi,
) -> serde_json::Value {
    let mut document =
        serde_json::to_value(write_api.merge_from(read_api)).expect("OpenAPI serializes to JSON");
    document["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    document
}

/// The OpenAPI document without a server (for `fleetlog openapi export|check`).
pub fn openapi() -> serde_json::Value {
    openapi_document(command_side::http::openapi(), query_side::openapi())
}

/// Makes registry commands read-your-writes: catches the registry projector up to the command's
/// event, on its own task so a client that disconnects cannot cancel it mid-transaction.
struct RegistryCatchUp(PgEventStore);

impl RegistrySync for RegistryCatchUp {
    fn caught_up(&self, position: i64) -> BoxFuture<'_, Result<(), String>> {
        let store = self.0.clone();
        async move {
            let runner = ProjectionRunner::new(store, projections::Registry, 1000);
            tokio::spawn(async move { runner.catch_up(Some(position)).await })
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        .boxed()
    }
}

/// Health, readiness and metrics only: what a process without the API (`fleetlog project`) serves.
pub fn metrics_app(pool: PgPool, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(ServerState {
            pool,
            metrics: Some(metrics),
        })
        .fallback(not_found)
        .layer(TraceLayer::new_for_http())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers within two seconds.
async fn readyz(State(state): State<ServerState>) -> Response {
    let check = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await;
    match check {
        Ok(Ok(_)) => Json(json!({"status": "ready"})).into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check failed");
            unavailable("the database is unavailable")
        }
        Err(_) => unavailable("database did not answer within 2 s"),
    }
}

fn unavailable(message: &str) -> Response {
    let body = json!({"error": {"code": "not_ready", "message": message}});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn render_metrics(State(state): State<ServerState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": "metrics are not enabled"}})),
        )
            .into_response(),
    }
}

async fn method_not_allowed() -> Response {
    let body = json!({"error": {"code": "method_not_allowed", "message": "this route does not take that method"}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

async fn not_found() -> Response {
    let body = json!({"error": {"code": "not_found", "message": "no such route"}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
