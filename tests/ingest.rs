//! The ingest and admin HTTP API through the real router, against a real PostgreSQL database per
//! test.
//!
//! Covers, each in its own test: tenants and tokens (admin API), system registration and HTTP
//! Basic authentication (cached verification, identical 401s, 429 after repeated failures),
//! credential rotation, pause / resume / decommission and tenant isolation, inventory reports and
//! their de-duplication, bad input (each a 4xx in the one error shape, appending nothing),
//! hardware observations in Fleetlog's format and as `lshw -json` output, gateway telemetry,
//! metric batches, alert events (`/v1/events`), `Idempotency-Key`, and `/openapi.json`.
//!
//! Every test checks the HTTP answer *and* what was stored (`SELECT ... FROM events`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use chrono::Utc;
use command_side::event_store::{GroupCommitConfig, PgEventStore};
use fleetlog::config::IngestConfig;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

const ADMIN: &str = "test-admin-token";
const JSON: &str = "application/json";
const LSHW_FIXTURE: &str = include_str!("../command-side/tests/fixtures/lshw-server.json");

// ---------------------------------------------------------------------------------------------
// The router and requests
// ---------------------------------------------------------------------------------------------

/// The whole API with default ingest settings.
fn app(pool: &PgPool) -> Router {
    app_with(pool, IngestConfig::default())
}

/// The whole API with the given ingest settings.
fn app_with(pool: &PgPool, ingest: IngestConfig) -> Router {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    fleetlog::http::app_with(store, Arc::from(ADMIN), None, &ingest)
}

/// An HTTP answer: status, headers and the body as JSON (`Null` when it is not JSON).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    /// Asserts a status and returns the body.
    fn expect(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        &self.body
    }

    /// Asserts an error answer: the status and `{"error": {"code": code, "message": "..."}}`.
    fn expect_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "body: {}",
            self.body
        );
    }

    /// The events of a 202 answer, as `(event_type, stream_id, position)`.
    fn accepted_events(&self) -> Vec<(String, String, i64)> {
        self.expect(StatusCode::ACCEPTED)["events"]
            .as_array()
            .expect("an events array")
            .iter()
            .map(|e| {
                (
                    e["event_type"].as_str().unwrap().to_owned(),
                    e["stream_id"].as_str().unwrap().to_owned(),
                    e["position"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    /// `duplicate` of a 202 answer.
    fn duplicate(&self) -> bool {
        self.expect(StatusCode::ACCEPTED)["duplicate"]
            .as_bool()
            .expect("a duplicate flag")
    }
}

/// Sends one request with the given headers and body through the router.
async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer_to(app, request.body(body.into()).unwrap()).await
}

/// Sends a built request through the router and reads the answer.
async fn answer_to(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// POSTs a JSON document with the given `Authorization` header value.
async fn post_json(app: &Router, uri: &str, auth: &str, body: &Value) -> Reply {
    post_text(app, uri, auth, &body.to_string()).await
}

/// POSTs JSON text as it is (to control key order or send malformed JSON).
async fn post_text(app: &Router, uri: &str, auth: &str, text: &str) -> Reply {
    send(
        app,
        Method::POST,
        uri,
        &[("authorization", auth), ("content-type", JSON)],
        text.to_owned(),
    )
    .await
}

/// POSTs with no body.
async fn post_empty(app: &Router, uri: &str, auth: &str) -> Reply {
    send(
        app,
        Method::POST,
        uri,
        &[("authorization", auth)],
        Body::empty(),
    )
    .await
}

/// GETs with the given `Authorization` header value.
async fn get(app: &Router, uri: &str, auth: &str) -> Reply {
    send(
        app,
        Method::GET,
        uri,
        &[("authorization", auth)],
        Body::empty(),
    )
    .await
}

/// A heartbeat without a body.
async fn heartbeat(app: &Router, auth: &str) -> Reply {
    post_empty(app, "/api/systems/heartbeat", auth).await
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

/// `Bearer <token>`.
fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding (the root package does not depend on a base64 crate).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether `key` looks like `FL-XXXX-XXXX-XXXX`.
fn is_system_key(key: &str) -> bool {
    let Some(rest) = key.strip_prefix("FL-") else {
        return false;
    };
    let groups: Vec<&str> = rest.split('-').collect();
    groups.len() == 3
        && groups.iter().all(|g| {
            g.len() == 4
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        })
}

/// A tenant and one of its API tokens.
struct Tenant {
    id: Uuid,
    token: String,
    token_id: Uuid,
}

impl Tenant {
    /// `Authorization` value of its token.
    fn auth(&self) -> String {
        bearer(&self.token)
    }
}

/// Creates a tenant and issues it a token, through the admin API.
async fn new_tenant(app: &Router, name: &str) -> Tenant {
    let created = post_json(
        app,
        "/api/admin/tenants",
        &bearer(ADMIN),
        &json!({"name": name}),
    )
    .await;
    let id: Uuid = serde_json::from_value(created.expect(StatusCode::CREATED)["tenant_id"].clone())
        .expect("a tenant id");
    let issued = post_json(
        app,
        &format!("/api/admin/tenants/{id}/tokens"),
        &bearer(ADMIN),
        &json!({"name": "ci"}),
    )
    .await;
    let body = issued.expect(StatusCode::CREATED);
    Tenant {
        id,
        token: body["token"].as_str().expect("a token").to_owned(),
        token_id: serde_json::from_value(body["token_id"].clone()).expect("a token id"),
    }
}

/// A registered system's or gateway's credentials.
#[derive(Debug, Clone)]
struct Creds {
    system_id: Uuid,
    key: String,
    secret: String,
}

impl Creds {
    /// `Authorization` value of its key and secret.
    fn auth(&self) -> String {
        basic(&self.key, &self.secret)
    }
}

/// Registers a system (`kind` = "system") or gateway ("gateway") with the tenant's token.
async fn register(app: &Router, tenant: &Tenant, kind: &str) -> Creds {
    let reply = post_json(
        app,
        "/api/systems",
        &tenant.auth(),
        &json!({"name": format!("{kind}-{}", Uuid::now_v7()), "kind": kind}),
    )
    .await;
    let body = reply.expect(StatusCode::CREATED);
    assert_eq!(body["kind"], kind, "body: {body}");
    Creds {
        system_id: serde_json::from_value(body["system_id"].clone()).expect("a system id"),
        key: body["system_key"].as_str().expect("a key").to_owned(),
        secret: body["secret"].as_str().expect("a secret").to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The stored events
// ---------------------------------------------------------------------------------------------

/// One stored event, as far as these tests look at it.
#[derive(Debug, sqlx::FromRow)]
struct Stored {
    position: i64,
    event_id: Uuid,
    stream_id: String,
    event_type: String,
    tenant_id: Uuid,
    payload: Value,
    data: Option<Vec<u8>>,
}

const STORED_COLUMNS: &str =
    "SELECT position, event_id, stream_id, event_type, tenant_id, payload, data FROM events";

/// Every stored event of a type, by position.
async fn events_of_type(pool: &PgPool, event_type: &str) -> Vec<Stored> {
    sqlx::query_as(&format!(
        "{STORED_COLUMNS} WHERE event_type = $1 ORDER BY position"
    ))
    .bind(event_type)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Every stored event of a stream, by stream version.
async fn events_of_stream(pool: &PgPool, stream_id: &str) -> Vec<Stored> {
    sqlx::query_as(&format!(
        "{STORED_COLUMNS} WHERE stream_id = $1 ORDER BY stream_version"
    ))
    .bind(stream_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// How many events of a type are stored.
async fn count_of_type(pool: &PgPool, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// How many events are stored in all.
async fn count_all(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The event types of a stream, in order.
async fn types_of_stream(pool: &PgPool, stream_id: &str) -> Vec<String> {
    events_of_stream(pool, stream_id)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Tenants, tokens, registration, the first heartbeat, and 401s
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn a_tenant_token_registers_a_system_whose_heartbeat_is_stored(pool: PgPool) {
    let app = app(&pool);

    let created = post_json(
        &app,
        "/api/admin/tenants",
        &bearer(ADMIN),
        &json!({"name": "acme"}),
    )
    .await;
    let body = created.expect(StatusCode::CREATED);
    assert_eq!(body["name"], "acme");
    let tenant_id: Uuid = serde_json::from_value(body["tenant_id"].clone()).unwrap();
    assert_eq!(count_of_type(&pool, "TenantCreated").await, 1);

    post_json(
        &app,
        "/api/admin/tenants",
        &bearer(ADMIN),
        &json!({"name": "acme"}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "tenant_exists");
    assert_eq!(count_of_type(&pool, "TenantCreated").await, 1);

    let issued = post_json(
        &app,
        &format!("/api/admin/tenants/{tenant_id}/tokens"),
        &bearer(ADMIN),
        &json!({"name": "deploy"}),
    )
    .await;
    let body = issued.expect(StatusCode::CREATED).clone();
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("flt_"), "token {token}");
    assert_eq!(body["tenant_id"], tenant_id.to_string());
    let token_id = body["token_id"].as_str().unwrap().to_owned();
    let tenant = Tenant {
        id: tenant_id,
        token: token.clone(),
        token_id: token_id.parse().unwrap(),
    };

    let system = register(&app, &tenant, "system").await;
    assert!(is_system_key(&system.key), "key {}", system.key);
    assert!(!system.secret.is_empty());
    let registered = events_of_type(&pool, "SystemRegistered").await;
    assert_eq!(registered.len(), 1);
    assert_eq!(
        registered[0].stream_id,
        format!("system-{}", system.system_id)
    );
    assert_eq!(registered[0].tenant_id, tenant_id);
    assert!(
        registered[0].payload.get("secret").is_none()
            && !registered[0].payload.to_string().contains(&system.secret),
        "the secret itself is never stored"
    );

    // The key works at once.
    let reply = heartbeat(&app, &system.auth()).await;
    let body = reply.expect(StatusCode::ACCEPTED);
    assert_eq!(body["duplicate"], false);
    let accepted = &body["events"][0];
    assert_eq!(accepted["event_type"], "HeartbeatReceived");
    let event_id: Uuid = serde_json::from_value(accepted["event_id"].clone()).unwrap();
    let position = accepted["position"].as_i64().unwrap();
    let stored = events_of_type(&pool, "HeartbeatReceived").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].stream_id, format!("system-{}", system.system_id));
    assert_eq!(stored[0].tenant_id, tenant_id);
    assert_eq!(
        (stored[0].event_id, stored[0].position),
        (event_id, position)
    );

    // 401 without auth, with the admin token on a tenant endpoint, and with a revoked token.
    let no_auth = send(
        &app,
        Method::POST,
        "/api/systems",
        &[("content-type", JSON)],
        json!({"name": "x"}).to_string(),
    )
    .await;
    no_auth.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let no_auth = send(
        &app,
        Method::POST,
        "/api/systems/heartbeat",
        &[],
        Body::empty(),
    )
    .await;
    no_auth.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(no_auth.headers.contains_key("www-authenticate"));
    post_json(&app, "/api/systems", &bearer(ADMIN), &json!({"name": "x"}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    get(&app, "/api/systems", &bearer(ADMIN))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // And the other way round: a tenant token is not the admin's.
    get(&app, "/api/admin/tenants", &tenant.auth())
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");

    get(&app, "/api/systems", &tenant.auth())
        .await
        .expect(StatusCode::OK);
    let revoked = send(
        &app,
        Method::DELETE,
        &format!("/api/admin/tenants/{tenant_id}/tokens/{}", tenant.token_id),
        &[("authorization", &bearer(ADMIN))],
        Body::empty(),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(count_of_type(&pool, "TenantTokenRevoked").await, 1);
    get(&app, "/api/systems", &tenant.auth())
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    post_json(&app, "/api/systems", &tenant.auth(), &json!({"name": "x"}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(count_of_type(&pool, "SystemRegistered").await, 1);
}

// ---------------------------------------------------------------------------------------------
// 2. Wrong credentials, and the refusal after repeated failures
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn bad_credentials_get_one_401_and_repeated_failures_get_429(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let system = register(&app, &tenant, "system").await;
    // Verified once, so this pair is remembered.
    heartbeat(&app, &system.auth())
        .await
        .expect(StatusCode::ACCEPTED);

    let wrong_secret = heartbeat(&app, &basic(&system.key, "not-the-secret")).await;
    let unknown_key = heartbeat(&app, &basic("FL-0000-0000-0000", &system.secret)).await;
    wrong_secret.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        (unknown_key.status, &unknown_key.body),
        (wrong_secret.status, &wrong_secret.body),
        "a wrong secret and an unknown key look alike"
    );
    assert_eq!(
        unknown_key.headers.get("www-authenticate"),
        wrong_secret.headers.get("www-authenticate")
    );
    for malformed in [
        "Basic !!!not-base64".to_owned(),
        format!("Basic {}", base64(b"no-colon-here")),
        format!(
            "Digest {}",
            base64(format!("{}:{}", system.key, system.secret).as_bytes())
        ),
    ] {
        heartbeat(&app, &malformed)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }

    // One failure so far for this key; four more make five.
    for _ in 0..4 {
        heartbeat(&app, &basic(&system.key, "not-the-secret"))
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let refused = heartbeat(&app, &basic(&system.key, "still-not-the-secret")).await;
    refused.expect_error(StatusCode::TOO_MANY_REQUESTS, "too_many_failures");
    let retry_after: u64 = refused
        .headers
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");

    // The pair verified before the failures is still remembered.
    let reply = heartbeat(&app, &system.auth()).await;
    assert_eq!(reply.accepted_events().len(), 1);
    assert_eq!(count_of_type(&pool, "HeartbeatReceived").await, 2);
}

// ---------------------------------------------------------------------------------------------
// 3. Rotation
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn rotation_ends_the_old_secret_at_once(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let old = register(&app, &tenant, "system").await;
    heartbeat(&app, &old.auth())
        .await
        .expect(StatusCode::ACCEPTED);

    let rotated = post_empty(
        &app,
        &format!("/api/systems/{}/credentials", old.system_id),
        &tenant.auth(),
    )
    .await;
    let body = rotated.expect(StatusCode::CREATED);
    assert_eq!(body["system_key"], old.key.as_str(), "the key stays");
    let new = Creds {
        secret: body["secret"].as_str().unwrap().to_owned(),
        ..old.clone()
    };
    assert_ne!(new.secret, old.secret);
    let stored = events_of_type(&pool, "CredentialsRotated").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].stream_id, format!("system-{}", old.system_id));

    heartbeat(&app, &old.auth())
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    heartbeat(&app, &new.auth())
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(count_of_type(&pool, "HeartbeatReceived").await, 2);

    let view = get(
        &app,
        &format!("/api/systems/{}", old.system_id),
        &tenant.auth(),
    )
    .await;
    assert_eq!(view.expect(StatusCode::OK)["credentials_version"], 2);
}

// ---------------------------------------------------------------------------------------------
// 4. Pause, resume, decommission, and tenant isolation
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn pause_resume_and_decommission_gate_reports_within_the_tenant(pool: PgPool) {
    let app = app(&pool);
    let acme = new_tenant(&app, "acme").await;
    let other = new_tenant(&app, "globex").await;
    let system = register(&app, &acme, "system").await;
    let sibling = register(&app, &acme, "gateway").await;
    let foreign = register(&app, &other, "system").await;
    let path = |action: &str| format!("/api/systems/{}/{action}", system.system_id);

    // Another tenant neither sees nor pauses it.
    get(
        &app,
        &format!("/api/systems/{}", system.system_id),
        &other.auth(),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "not_found");
    post_empty(&app, &path("pause"), &other.auth())
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(count_of_type(&pool, "SystemPaused").await, 0);

    // Each tenant lists only its own (`GET /api/systems`, served by the read side).
    let listed = |reply: &Reply| -> Vec<String> {
        let mut ids: Vec<String> = reply.expect(StatusCode::OK)["systems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["system_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let mut mine = vec![system.system_id.to_string(), sibling.system_id.to_string()];
    mine.sort();
    assert_eq!(listed(&get(&app, "/api/systems", &acme.auth()).await), mine);
    assert_eq!(
        listed(&get(&app, "/api/systems", &other.auth()).await),
        [foreign.system_id.to_string()]
    );

    // Remembered while active...
    heartbeat(&app, &system.auth())
        .await
        .expect(StatusCode::ACCEPTED);
    // ...and refused once paused.
    let paused = post_json(
        &app,
        &path("pause"),
        &acme.auth(),
        &json!({"reason": "maintenance"}),
    )
    .await;
    let body = paused.expect(StatusCode::OK);
    assert_eq!(
        (&body["status"], &body["changed"]),
        (&json!("paused"), &json!(true))
    );
    heartbeat(&app, &system.auth())
        .await
        .expect_error(StatusCode::FORBIDDEN, "system_paused");
    let again = post_empty(&app, &path("pause"), &acme.auth()).await;
    assert_eq!(again.expect(StatusCode::OK)["changed"], false);
    let pauses = events_of_type(&pool, "SystemPaused").await;
    assert_eq!(pauses.len(), 1, "pausing a paused system appends nothing");
    assert_eq!(pauses[0].payload["reason"], "maintenance");
    assert_eq!(pauses[0].tenant_id, acme.id);

    let resumed = post_empty(&app, &path("resume"), &acme.auth()).await;
    assert_eq!(resumed.expect(StatusCode::OK)["changed"], true);
    heartbeat(&app, &system.auth())
        .await
        .expect(StatusCode::ACCEPTED);

    let gone = post_empty(&app, &path("decommission"), &acme.auth()).await;
    assert_eq!(gone.expect(StatusCode::OK)["status"], "decommissioned");
    heartbeat(&app, &system.auth())
        .await
        .expect_error(StatusCode::FORBIDDEN, "system_decommissioned");
    post_empty(&app, &path("resume"), &acme.auth())
        .await
        .expect_error(StatusCode::CONFLICT, "system_decommissioned");

    assert_eq!(
        types_of_stream(&pool, &format!("system-{}", system.system_id)).await,
        [
            "SystemRegistered",
            "HeartbeatReceived",
            "SystemPaused",
            "SystemResumed",
            "HeartbeatReceived",
            "SystemDecommissioned",
        ]
    );
    // The sibling was never touched.
    heartbeat(&app, &sibling.auth())
        .await
        .expect(StatusCode::ACCEPTED);

    // The list shows the registry's lifecycle at once (the registry is caught up before a
    // command answers), and filters by it.
    let list = get(&app, "/api/systems", &acme.auth()).await;
    let list = list.expect(StatusCode::OK);
    let lifecycle_of = |id: Uuid| {
        list["systems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["system_id"] == json!(id))
            .map(|s| s["lifecycle"].clone())
    };
    assert_eq!(
        (
            lifecycle_of(system.system_id),
            lifecycle_of(sibling.system_id)
        ),
        (Some(json!("decommissioned")), Some(json!("active")))
    );
    assert_eq!(list["next_cursor"], Value::Null);
    assert_eq!(
        listed(&get(&app, "/api/systems?lifecycle=decommissioned", &acme.auth()).await),
        [system.system_id.to_string()]
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Inventory and its de-duplication
// ---------------------------------------------------------------------------------------------

/// Inventory A, with its keys in one order.
const INVENTORY_A: &str = r#"{"data": {"hostname": "web-1",
    "os": {"name": "debian", "version": "12", "kernel": {"release": "6.1.0", "arch": "x86_64"}},
    "packages": [{"name": "openssl", "version": "3.0.11"}, {"name": "curl", "version": "7.88"}]}}"#;

/// Inventory A again, every object's keys (nested too) in another order.
const INVENTORY_A_REORDERED: &str = r#"{"data": {
    "packages": [{"version": "3.0.11", "name": "openssl"}, {"version": "7.88", "name": "curl"}],
    "os": {"kernel": {"arch": "x86_64", "release": "6.1.0"}, "version": "12", "name": "debian"},
    "hostname": "web-1"}}"#;

/// Inventory B: A with one value changed.
const INVENTORY_B: &str = r#"{"data": {"hostname": "web-1",
    "os": {"name": "debian", "version": "12", "kernel": {"release": "6.1.0", "arch": "x86_64"}},
    "packages": [{"name": "openssl", "version": "3.0.13"}, {"name": "curl", "version": "7.88"}]}}"#;

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn an_unchanged_inventory_is_recorded_by_its_hash_only(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let system = register(&app, &tenant, "system").await;
    let stream = format!("system-{}", system.system_id);
    let report = |text: &'static str| {
        let app = app.clone();
        let auth = system.auth();
        async move { post_text(&app, "/api/systems/inventory", &auth, text).await }
    };

    let first = report(INVENTORY_A).await;
    assert!(!first.duplicate());
    assert_eq!(first.accepted_events()[0].0, "InventoryReported");
    assert_eq!(first.accepted_events()[0].1, stream);
    let reported = events_of_type(&pool, "InventoryReported").await;
    assert_eq!(reported.len(), 1);
    let a: Value = serde_json::from_str(INVENTORY_A).unwrap();
    assert_eq!(reported[0].payload["data"], a["data"]);
    assert_eq!(reported[0].tenant_id, tenant.id);
    let hash_a = reported[0].payload["content_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(hash_a.len(), 64, "a hex SHA-256: {hash_a}");

    let same = report(INVENTORY_A_REORDERED).await;
    assert!(same.duplicate());
    assert_eq!(same.accepted_events()[0].0, "InventoryUnchanged");
    let unchanged = events_of_type(&pool, "InventoryUnchanged").await;
    assert_eq!(unchanged.len(), 1);
    assert_eq!(
        unchanged[0].payload,
        json!({"content_hash": hash_a}),
        "only the hash is stored again"
    );
    assert_eq!(unchanged[0].stream_id, stream);

    let changed = report(INVENTORY_B).await;
    assert!(!changed.duplicate());
    assert_eq!(changed.accepted_events()[0].0, "InventoryReported");

    // Back to A: compared with the latest report (B) only, so reported in full again.
    let reverted = report(INVENTORY_A).await;
    assert!(!reverted.duplicate());
    assert_eq!(reverted.accepted_events()[0].0, "InventoryReported");

    let reported = events_of_type(&pool, "InventoryReported").await;
    let hashes: Vec<&str> = reported
        .iter()
        .map(|e| e.payload["content_hash"].as_str().unwrap())
        .collect();
    assert_eq!(hashes.len(), 3);
    assert_ne!(hashes[1], hash_a);
    assert_eq!(hashes[2], hash_a);
    assert_eq!(
        types_of_stream(&pool, &stream).await,
        [
            "SystemRegistered",
            "InventoryReported",
            "InventoryUnchanged",
            "InventoryReported",
            "InventoryReported",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Bad inventory input
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn bad_inventory_input_gets_a_4xx_and_appends_nothing(pool: PgPool) {
    let app = app_with(
        &pool,
        IngestConfig {
            api_max_request_size: 64 * 1024,
            ..IngestConfig::default()
        },
    );
    let tenant = new_tenant(&app, "acme").await;
    let system = register(&app, &tenant, "system").await;
    let gateway = register(&app, &tenant, "gateway").await;
    let before = count_all(&pool).await;
    let auth = system.auth();
    let uri = "/api/systems/inventory";

    post_text(&app, uri, &auth, r#"{"data": {"a": 1"#)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "invalid_json");
    post_json(
        &app,
        uri,
        &auth,
        &json!({"timestamp": "2026-01-01T00:00:00Z"}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    for not_an_object in [json!([1, 2]), json!("text"), json!(null), json!(42)] {
        post_json(&app, uri, &auth, &json!({"data": not_an_object}))
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    post_json(
        &app,
        uri,
        &auth,
        &json!({"timestamp": "2026-11-25 12:00", "data": {"a": 1}}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "invalid_timestamp");
    let next_year = (Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    post_json(
        &app,
        uri,
        &auth,
        &json!({"timestamp": next_year, "data": {"a": 1}}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "timestamp_in_future");
    send(
        &app,
        Method::POST,
        uri,
        &[("authorization", &auth), ("content-type", "text/plain")],
        json!({"data": {"a": 1}}).to_string(),
    )
    .await
    .expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");

    // 100 KiB against a 64 KiB limit, once streamed and once with a Content-Length.
    let large = json!({"data": {"blob": "x".repeat(100 * 1024)}}).to_string();
    post_text(&app, uri, &auth, &large)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let length = large.len().to_string();
    send(
        &app,
        Method::POST,
        uri,
        &[
            ("authorization", &auth),
            ("content-type", JSON),
            ("content-length", &length),
        ],
        large.clone(),
    )
    .await
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    post_json(&app, uri, &gateway.auth(), &json!({"data": {"a": 1}}))
        .await
        .expect_error(StatusCode::FORBIDDEN, "not_a_system");

    assert_eq!(
        count_all(&pool).await,
        before,
        "no bad request appended anything"
    );
    // The same system's good report, for contrast, is accepted.
    post_json(&app, uri, &auth, &json!({"data": {"a": 1}}))
        .await
        .expect(StatusCode::ACCEPTED);
    assert_eq!(count_all(&pool).await, before + 1);
}

// ---------------------------------------------------------------------------------------------
// 7. Hardware observations in Fleetlog's format
// ---------------------------------------------------------------------------------------------

/// An observation of asset `serial` in bundle `bundle_id`.
fn observation(bundle_id: &str, serial: &str) -> Value {
    json!({
        "bundle_id": bundle_id,
        "asset_serial": serial,
        "vendor": "Dell Inc.",
        "model": "PowerEdge R640",
        "components": [
            {"class": "Disk", "serial": "DISK-1", "vendor": "Samsung", "capacity": 960_197_124_096_u64},
            {"class": "memory", "serial": "DIMM-1", "slot": "A1"}
        ]
    })
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn an_observation_registers_the_asset_once_and_is_idempotent_per_bundle(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let system = register(&app, &tenant, "system").await;
    let uri = "/api/assets/observations";

    // By a system's Basic credentials.
    let first = post_json(&app, uri, &system.auth(), &observation("bundle-1", "SRV-1")).await;
    assert!(!first.duplicate());
    let events = first.accepted_events();
    let types: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(types, ["AssetRegistered", "HardwareObserved"]);
    let stream = events[0].1.clone();
    assert!(stream.starts_with("asset-"), "{stream}");
    assert_eq!(events[1].1, stream, "one stream");

    let stored = events_of_stream(&pool, &stream).await;
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|e| e.tenant_id == tenant.id));
    assert_eq!(stored[0].payload["serial"], "SRV-1");
    assert_eq!(stored[0].payload["vendor"], "Dell Inc.");
    let observed = &stored[1].payload;
    assert_eq!(observed["bundle_id"], "bundle-1");
    assert_eq!(observed["asset_serial"], "SRV-1");
    assert_eq!(
        observed["components"][0]["class"], "disk",
        "classes are lowercased"
    );
    assert_eq!(
        observed["components"][0]["capacity_bytes"],
        960_197_124_096_u64
    );
    assert_eq!(observed["components"][1]["slot"], "A1");
    let positions: Vec<i64> = stored.iter().map(|e| e.position).collect();

    // The same bundle again, by the tenant's token: nothing new, the original positions.
    let again = post_json(&app, uri, &tenant.auth(), &observation("bundle-1", "SRV-1")).await;
    assert!(again.duplicate());
    let again_positions: Vec<i64> = again.accepted_events().iter().map(|e| e.2).collect();
    assert_eq!(again_positions, positions);
    assert_eq!(events_of_stream(&pool, &stream).await.len(), 2);

    // A second bundle of the same asset: only a HardwareObserved more.
    let second = post_json(&app, uri, &tenant.auth(), &observation("bundle-2", "SRV-1")).await;
    assert_eq!(
        second.status,
        StatusCode::ACCEPTED,
        "a second bundle for an existing asset; body: {}",
        second.body
    );
    assert!(!second.duplicate());
    let events = second.accepted_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("HardwareObserved", stream.as_str())
    );
    assert_eq!(
        types_of_stream(&pool, &stream).await,
        ["AssetRegistered", "HardwareObserved", "HardwareObserved"]
    );
    assert_eq!(count_of_type(&pool, "AssetRegistered").await, 1);
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn observation_conflicts_and_bad_components_append_nothing(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let uri = "/api/assets/observations";
    post_json(&app, uri, &tenant.auth(), &observation("bundle-1", "SRV-1"))
        .await
        .expect(StatusCode::ACCEPTED);
    let before = count_all(&pool).await;

    // The same bundle id for another asset is not a retry.
    let reused = post_json(&app, uri, &tenant.auth(), &observation("bundle-1", "SRV-2")).await;
    assert_eq!(reused.status, StatusCode::CONFLICT, "body: {}", reused.body);
    assert!(
        reused.body["error"]["code"].is_string(),
        "body: {}",
        reused.body
    );

    let mut no_serial = observation("bundle-3", "SRV-3");
    no_serial["components"][1]
        .as_object_mut()
        .unwrap()
        .remove("serial");
    post_json(&app, uri, &tenant.auth(), &no_serial)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");

    let mut twice = observation("bundle-4", "SRV-4");
    twice["components"][1]["serial"] = json!("DISK-1");
    post_json(&app, uri, &tenant.auth(), &twice)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");

    assert_eq!(count_all(&pool).await, before);
    assert_eq!(count_of_type(&pool, "AssetRegistered").await, 1);
}

// ---------------------------------------------------------------------------------------------
// 8. Hardware observations as `lshw -json` output
// ---------------------------------------------------------------------------------------------

/// `(class, serial)` of every component of a HardwareObserved payload.
fn components(payload: &Value) -> Vec<(String, String)> {
    payload["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["class"].as_str().unwrap().to_owned(),
                c["serial"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn lshw_output_is_read_into_the_asset_and_its_components(pool: PgPool) {
    let app = app(&pool);
    let acme = new_tenant(&app, "acme").await;
    let other = new_tenant(&app, "globex").await;
    let uri = "/api/assets/observations";
    let lshw_headers = |auth: &str| -> Vec<(&'static str, String)> {
        vec![
            ("authorization", auth.to_owned()),
            ("content-type", "application/x-lshw+json".to_owned()),
        ]
    };
    let upload = |headers: Vec<(&'static str, String)>, uri: &'static str| {
        let app = app.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            send(&app, Method::POST, uri, &headers, LSHW_FIXTURE).await
        }
    };

    // By its content type.
    let first = upload(lshw_headers(&acme.auth()), uri).await;
    assert!(!first.duplicate());
    let types: Vec<String> = first.accepted_events().into_iter().map(|e| e.0).collect();
    assert_eq!(types, ["AssetRegistered", "HardwareObserved"]);

    let registered = events_of_type(&pool, "AssetRegistered").await;
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].payload["serial"], "S348716X9B21742");
    assert_eq!(registered[0].payload["vendor"], "Supermicro");
    assert_eq!(registered[0].payload["model"], "SYS-1029U-TRT");
    let observed = events_of_type(&pool, "HardwareObserved").await;
    assert_eq!(observed.len(), 1);
    assert_eq!(observed[0].payload["asset_serial"], "S348716X9B21742");
    let found = components(&observed[0].payload);
    for (class, serial) in [
        ("bus", "ZM19AS012345"),
        ("memory", "38A1F2C4"),
        ("memory", "38A1E1A2"),
        ("disk", "S45NNE0M812345"),
        ("disk", "S45NNE0M812391"),
        ("storage", "PHLJ9123004M2P0BGN"),
        ("network", "ac:1f:6b:4e:2a:10"),
        ("network", "ac:1f:6b:4e:2a:11"),
        ("psu", "P751PCI28AT1234"),
        ("psu", "P751PCI28AT1301"),
    ] {
        assert!(
            found.contains(&(class.to_owned(), serial.to_owned())),
            "{class} {serial} missing from {found:?}"
        );
    }
    assert_eq!(found.len(), 12, "{found:?}");
    for skipped in [
        "NO DIMM",
        "Not Specified",
        "3c1d-9a2f",
        "02:42:7c:91:3e:5a",
        "S348716X9B21742",
    ] {
        assert!(found.iter().all(|(_, s)| s != skipped), "{skipped} kept");
    }
    let disk = observed[0].payload["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["serial"] == "S45NNE0M812345")
        .unwrap()
        .clone();
    assert_eq!(disk["capacity_bytes"], 960_197_124_096_u64);
    assert_eq!(disk["firmware"], "404Q");

    // The same document again: the same bundle (its hash), nothing new.
    let again = upload(lshw_headers(&acme.auth()), uri).await;
    assert!(again.duplicate());
    assert_eq!(count_of_type(&pool, "HardwareObserved").await, 1);

    // By `?format=lshw` with a JSON content type (another tenant, so another asset stream).
    let by_query = upload(
        vec![
            ("authorization", other.auth()),
            ("content-type", JSON.to_owned()),
        ],
        "/api/assets/observations?format=lshw",
    )
    .await;
    assert!(!by_query.duplicate());
    let observed = events_of_type(&pool, "HardwareObserved").await;
    assert_eq!(observed.len(), 2);
    assert_eq!(observed[1].tenant_id, other.id);
    assert_ne!(observed[1].stream_id, observed[0].stream_id);
    assert_eq!(components(&observed[1].payload), found);

    // JSON that is not lshw output.
    let before = count_all(&pool).await;
    for not_lshw in [
        json!({"id": "host", "class": "system", "children": []}),
        json!({"hello": "world"}),
        json!([1, 2]),
    ] {
        send(
            &app,
            Method::POST,
            "/api/assets/observations?format=lshw",
            &[("authorization", &acme.auth()), ("content-type", JSON)],
            not_lshw.to_string(),
        )
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    assert_eq!(count_all(&pool).await, before);
}

// ---------------------------------------------------------------------------------------------
// 9. Gateway telemetry
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn gateway_telemetry_is_stored_byte_for_byte(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let gateway = register(&app, &tenant, "gateway").await;
    let system = register(&app, &tenant, "system").await;
    let uri = "/api/gateways/telemetry";
    let bytes: Vec<u8> = vec![0xff, 0xfe, 0x00, 0x80, b'{', 0xc3, 0x28, b'\n', 0xf5];
    assert!(std::str::from_utf8(&bytes).is_err());
    let octets = "application/octet-stream";

    let reply = send(
        &app,
        Method::POST,
        uri,
        &[("authorization", &gateway.auth()), ("content-type", octets)],
        bytes.clone(),
    )
    .await;
    let events = reply.accepted_events();
    let stream = format!("gateway-{}", gateway.system_id);
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("TelemetryReceived", stream.as_str())
    );
    let stored = events_of_type(&pool, "TelemetryReceived").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data.as_deref(), Some(bytes.as_slice()));
    assert_eq!(stored[0].payload["size_bytes"], bytes.len());
    assert_eq!(stored[0].payload["content_type"], octets);
    assert_eq!(stored[0].tenant_id, tenant.id);
    assert_eq!(stored[0].stream_id, stream);

    send(
        &app,
        Method::POST,
        uri,
        &[("authorization", &system.auth()), ("content-type", octets)],
        bytes.clone(),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "not_a_gateway");
    send(
        &app,
        Method::POST,
        uri,
        &[("authorization", &gateway.auth()), ("content-type", octets)],
        Body::empty(),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "empty_body");
    assert_eq!(count_of_type(&pool, "TelemetryReceived").await, 1);

    // A gateway's heartbeat goes to its gateway stream.
    let beat = heartbeat(&app, &gateway.auth()).await;
    assert_eq!(beat.accepted_events()[0].1, stream);
    let heartbeats = events_of_type(&pool, "HeartbeatReceived").await;
    assert_eq!(heartbeats.len(), 1);
    assert_eq!(heartbeats[0].stream_id, stream);
}

// ---------------------------------------------------------------------------------------------
// 10. Metrics
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn a_metrics_batch_is_one_event_and_bad_samples_are_refused(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let system = register(&app, &tenant, "system").await;
    let uri = "/api/metrics";
    let now = Utc::now().to_rfc3339();
    let sample = |name: &str, value: f64| {
        json!({"type": "gauge", "name": name, "value": value,
               "labels": {"mount": "/"}, "timestamp": now})
    };

    let batch = json!({"samples": [
        sample("disk_used_ratio", 0.42),
        sample("load1", 1.5),
        {"type": "counter", "name": "node_boot_total", "value": 3.0, "timestamp": now},
    ]});
    let reply = post_json(&app, uri, &system.auth(), &batch).await;
    let events = reply.accepted_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "MetricsReported");
    assert_eq!(events[0].1, format!("metrics-{}", system.system_id));
    let stored = events_of_type(&pool, "MetricsReported").await;
    assert_eq!(stored.len(), 1);
    let samples = stored[0].payload["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0]["name"], "disk_used_ratio");
    assert_eq!(samples[0]["value"], 0.42);
    assert_eq!(samples[0]["labels"]["mount"], "/");
    assert_eq!(samples[2]["name"], "node_boot_total");
    assert_eq!(stored[0].tenant_id, tenant.id);

    let auth = system.auth();
    post_json(&app, uri, &auth, &json!({"samples": []}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    post_json(
        &app,
        uri,
        &auth,
        &json!({"samples": [sample("1bad-name", 1.0)]}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let mut bad_time = sample("load1", 1.0);
    bad_time["timestamp"] = json!("yesterday");
    post_json(
        &app,
        uri,
        &auth,
        &json!({"samples": [sample("load5", 1.0), bad_time]}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "invalid_timestamp");
    let mut no_value = sample("load1", 1.0);
    no_value.as_object_mut().unwrap().remove("value");
    post_json(&app, uri, &auth, &json!({"samples": [no_value]}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    assert_eq!(count_of_type(&pool, "MetricsReported").await, 1);
}

// ---------------------------------------------------------------------------------------------
// 11. Alerts
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn alert_events_trigger_and_resolve_on_one_stream(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let uri = "/v1/events";
    let auth = tenant.auth();

    let trigger = json!({
        "event_manager_id": "zabbix-1",
        "action": "trigger",
        "dedupKey": "db-1:disk",
        "summary": "disk almost full on db-1",
        "severity": "high",
        "class": "disk",
        "labels": {"host": "db-1"},
        "runbook_url": "https://runbooks.example/disk"
    });
    let triggered = post_json(&app, uri, &auth, &trigger).await;
    let events = triggered.accepted_events();
    assert_eq!(events[0].0, "AlertTriggered");
    let stream = events[0].1.clone();
    assert!(stream.starts_with("alert-"), "{stream}");
    let stored = events_of_type(&pool, "AlertTriggered").await;
    assert_eq!(stored.len(), 1);
    let payload = &stored[0].payload;
    assert_eq!(payload["dedup_key"], "db-1:disk");
    assert_eq!(payload["severity"], "error", "high is error");
    assert_eq!(payload["summary"], "disk almost full on db-1");
    assert_eq!(payload["labels"]["host"], "db-1");
    assert_eq!(
        payload["custom"],
        json!({"runbook_url": "https://runbooks.example/disk"}),
        "the custom field is kept, and only it"
    );
    assert_eq!(stored[0].tenant_id, tenant.id);

    let resolve =
        json!({"event_manager_id": "zabbix-1", "action": "resolve", "dedupKey": "db-1:disk"});
    let resolved = post_json(&app, uri, &auth, &resolve).await;
    assert_eq!(resolved.accepted_events()[0].0, "AlertResolved");
    assert_eq!(resolved.accepted_events()[0].1, stream);
    assert_eq!(
        types_of_stream(&pool, &stream).await,
        ["AlertTriggered", "AlertResolved"]
    );

    let before = count_all(&pool).await;
    let mut unknown_severity = trigger.clone();
    unknown_severity["severity"] = json!("apocalyptic");
    let mut no_dedup_key = trigger.clone();
    no_dedup_key.as_object_mut().unwrap().remove("dedupKey");
    let mut no_summary = trigger.clone();
    no_summary.as_object_mut().unwrap().remove("summary");
    for bad in [unknown_severity, no_dedup_key, no_summary] {
        post_json(&app, uri, &auth, &bad)
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    assert_eq!(count_all(&pool).await, before);
}

// ---------------------------------------------------------------------------------------------
// 12. Idempotency-Key
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn a_retried_heartbeat_with_the_same_idempotency_key_is_stored_once(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let system = register(&app, &tenant, "system").await;
    let auth = system.auth();
    let beat = |key: &'static str| {
        let app = app.clone();
        let auth = auth.clone();
        async move {
            send(
                &app,
                Method::POST,
                "/api/systems/heartbeat",
                &[("authorization", &auth), ("idempotency-key", key)],
                Body::empty(),
            )
            .await
        }
    };

    let first = beat("beat-42").await;
    assert!(!first.duplicate());
    let retry = beat("beat-42").await;
    assert!(retry.duplicate());
    assert_eq!(
        retry.body["events"][0]["position"],
        first.body["events"][0]["position"]
    );
    assert_eq!(
        retry.body["events"][0]["event_id"],
        first.body["events"][0]["event_id"]
    );
    assert_eq!(count_of_type(&pool, "HeartbeatReceived").await, 1);

    // Another key is another heartbeat.
    assert!(!beat("beat-43").await.duplicate());
    assert_eq!(count_of_type(&pool, "HeartbeatReceived").await, 2);
}

// ---------------------------------------------------------------------------------------------
// 13. OpenAPI
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn the_openapi_document_is_served(pool: PgPool) {
    let app = app(&pool);
    let reply = send(&app, Method::GET, "/openapi.json", &[], Body::empty()).await;
    let document = reply.expect(StatusCode::OK);
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "openapi: {}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/api/systems/heartbeat",
        "/v1/events",
        "/api/systems/inventory",
        "/api/admin/tenants",
    ] {
        assert!(paths.contains_key(path), "{path} is not listed");
    }
    assert!(paths["/api/systems/heartbeat"].get("post").is_some());
    // Registration (write side) and the list (read side) share one path.
    assert!(paths["/api/systems"].get("post").is_some());
    assert!(paths["/api/systems"].get("get").is_some());
}

// ---------------------------------------------------------------------------------------------
// Failures per client, and changes seen by other processes
// ---------------------------------------------------------------------------------------------

/// A heartbeat as if it came from `ip` (what `serve` records as the connection's peer).
async fn heartbeat_from(app: &Router, auth: &str, ip: [u8; 4]) -> Reply {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri("/api/systems/heartbeat")
        .header("authorization", auth)
        .body(Body::empty())
        .unwrap();
    let peer = std::net::SocketAddr::from((ip, 40_000));
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    answer_to(app, request).await
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn one_clients_failures_do_not_lock_the_key_out_for_another_client(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let system = register(&app, &tenant, "system").await;
    let attacker = [10, 0, 0, 66];
    for _ in 0..5 {
        heartbeat_from(&app, &basic(&system.key, "guess"), attacker)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // The attacker's address is refused now, even with the right secret...
    heartbeat_from(&app, &system.auth(), attacker)
        .await
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "too_many_failures");
    // ...while the agent, from its own address, verifies (nothing was cached yet) and reports.
    let reply = heartbeat_from(&app, &system.auth(), [10, 0, 0, 7]).await;
    assert_eq!(reply.accepted_events().len(), 1);
    assert_eq!(count_of_type(&pool, "HeartbeatReceived").await, 1);
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn a_pause_made_by_another_process_ends_this_ones_remembered_credentials(pool: PgPool) {
    // Two API processes on one database: each remembers verified pairs on its own.
    let (this, other) = (app(&pool), app(&pool));
    let tenant = new_tenant(&this, "acme").await;
    let system = register(&this, &tenant, "system").await;
    heartbeat(&this, &system.auth())
        .await
        .expect(StatusCode::ACCEPTED);

    post_empty(
        &other,
        &format!("/api/systems/{}/pause", system.system_id),
        &tenant.auth(),
    )
    .await
    .expect(StatusCode::OK);

    // The registry's fold announced the change; this process forgets the pair within moments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reply = heartbeat(&this, &system.auth()).await;
        if reply.status == StatusCode::FORBIDDEN {
            reply.expect_error(StatusCode::FORBIDDEN, "system_paused");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still accepted 10 s after the pause: {}",
            reply.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn a_retried_inventory_answers_with_the_event_that_is_stored(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let system = register(&app, &tenant, "system").await;
    let auth = system.auth();
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", JSON),
        ("idempotency-key", "inventory-7"),
    ];
    let body = json!({"data": {"os": {"name": "Debian", "version": "12"}}}).to_string();
    let report = || {
        send(
            &app,
            Method::POST,
            "/api/systems/inventory",
            &headers,
            body.clone(),
        )
    };
    let first = report().await;
    assert_eq!(first.accepted_events()[0].0, "InventoryReported");
    // The retry finds its own document as the latest, so it would decide "unchanged"; the
    // answer names what is stored instead, at the original position.
    let retry = report().await;
    assert!(retry.duplicate());
    assert_eq!(retry.accepted_events(), first.accepted_events());
    assert_eq!(count_of_type(&pool, "InventoryReported").await, 1);
    assert_eq!(count_of_type(&pool, "InventoryUnchanged").await, 0);
}

/// Two processes ingest for one system, each remembering the hashes it stored: a report is still
/// compared with the latest report in the log, not with the latest one this process saw.
#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn inventory_dedup_follows_the_log_when_another_process_reported_in_between(pool: PgPool) {
    let (first, second) = (app(&pool), app(&pool));
    let tenant = new_tenant(&first, "acme").await;
    let system = register(&first, &tenant, "system").await;
    let report = |app: &Router, text: &'static str| {
        let (app, auth) = (app.clone(), system.auth());
        async move { post_text(&app, "/api/systems/inventory", &auth, text).await }
    };

    assert!(!report(&first, INVENTORY_A).await.duplicate());
    assert!(report(&first, INVENTORY_A_REORDERED).await.duplicate());
    assert!(!report(&second, INVENTORY_B).await.duplicate());
    // The first process last stored A; the log's latest report is B.
    let again = report(&first, INVENTORY_A).await;
    assert!(!again.duplicate());
    assert_eq!(again.accepted_events()[0].0, "InventoryReported");
    // And the second process, which never stored A, knows it is now the latest.
    assert!(report(&second, INVENTORY_A_REORDERED).await.duplicate());
    assert_eq!(events_of_type(&pool, "InventoryReported").await.len(), 3);
    assert_eq!(events_of_type(&pool, "InventoryUnchanged").await.len(), 2);
}

/// A retry that reuses an idempotency key with another document is answered with the report
/// stored first; the document it carried must not be taken for the system's latest.
#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn a_reused_idempotency_key_does_not_make_its_document_the_latest(pool: PgPool) {
    let app = app(&pool);
    let tenant = new_tenant(&app, "acme").await;
    let system = register(&app, &tenant, "system").await;
    let auth = system.auth();
    let report = |key: &'static str, text: &'static str| {
        let (app, auth) = (app.clone(), auth.clone());
        async move {
            let headers = [
                ("authorization", auth.as_str()),
                ("content-type", JSON),
                ("idempotency-key", key),
            ];
            send(&app, Method::POST, "/api/systems/inventory", &headers, text).await
        }
    };

    assert!(!report("first", INVENTORY_A).await.duplicate());
    assert!(report("first", INVENTORY_B).await.duplicate());
    let b = report("second", INVENTORY_B).await;
    assert!(!b.duplicate(), "B was never stored: it is a change from A");
    assert_eq!(b.accepted_events()[0].0, "InventoryReported");
    assert_eq!(events_of_type(&pool, "InventoryReported").await.len(), 2);
}
