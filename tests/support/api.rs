//! Helpers shared by the HTTP API tests (`liveness_api`, `inventory_api`): the whole router on a
//! test's own database, requests with an `Authorization` value, the one error shape, tenants
//! with a token and registered systems with their credentials.
//!
//! Included with `#[path = "support/api.rs"] mod api;` rather than as a submodule of `support`,
//! so only the tests that call the API compile it, and every helper here is used by each of them
//! (no `dead_code` allowance beyond the one field below).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use base64::Engine;
use command_side::event_store::{GroupCommitConfig, PgEventStore};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

/// The admin token the test router is started with.
pub const ADMIN: &str = "test-admin-token";

/// The whole API, and the store projectors and reactors run on.
pub fn app(pool: &PgPool) -> (Router, PgEventStore) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    (
        fleetlog::http::app(store.clone(), Arc::from(ADMIN), None),
        store,
    )
}

/// Sends a request with an `Authorization` value and an optional JSON body; returns the status
/// and the body as JSON (`Null` when it is not JSON).
pub async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    auth: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", auth);
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A `GET` without a body; see [`send`].
pub async fn get(app: &Router, uri: &str, auth: &str) -> (StatusCode, Value) {
    send(app, Method::GET, uri, auth, None).await
}

/// Asserts `{"error": {"code": code, "message": "..."}}` with `status`.
pub fn assert_error(reply: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(reply.0, status, "body: {}", reply.1);
    assert_eq!(reply.1["error"]["code"], code, "body: {}", reply.1);
    assert!(reply.1["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

/// `Bearer token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A tenant, the `Authorization` value of one of its tokens, and that token's id.
pub struct Tenant {
    pub id: Uuid,
    pub auth: String,
    /// For revoking the token; not every test binary does.
    #[allow(dead_code)]
    pub token_id: Uuid,
}

/// Creates a tenant named `name` and issues it a token, both as the admin.
pub async fn new_tenant(app: &Router, name: &str) -> Tenant {
    let (status, created) = send(
        app,
        Method::POST,
        "/api/admin/tenants",
        &bearer(ADMIN),
        Some(json!({"name": name})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id: Uuid = serde_json::from_value(created["tenant_id"].clone()).unwrap();
    let (status, issued) = send(
        app,
        Method::POST,
        &format!("/api/admin/tenants/{id}/tokens"),
        &bearer(ADMIN),
        Some(json!({"name": "ops"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    Tenant {
        id,
        auth: bearer(issued["token"].as_str().unwrap()),
        token_id: serde_json::from_value(issued["token_id"].clone()).unwrap(),
    }
}

/// A registered system's id and `Authorization` value.
pub struct System {
    pub id: Uuid,
    pub auth: String,
}

/// Registers a system of `kind` named `name` for `tenant`.
pub async fn register(app: &Router, tenant: &Tenant, name: &str, kind: &str) -> System {
    let (status, body) = send(
        app,
        Method::POST,
        "/api/systems",
        &tenant.auth,
        Some(json!({"name": name, "kind": kind})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    System {
        id: serde_json::from_value(body["system_id"].clone()).unwrap(),
        auth: basic(
            body["system_key"].as_str().unwrap(),
            body["secret"].as_str().unwrap(),
        ),
    }
}
