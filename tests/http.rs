//! The HTTP API through the real router, against a real PostgreSQL database per test.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use chrono::Utc;
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{HeartbeatReceived, NewEvent, StreamId, SystemPaused, TenantId};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

const TOKEN: &str = "test-admin-token";

fn app(pool: &PgPool) -> (Router, PgEventStore) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    (
        fleetlog::http::app(store.clone(), Arc::from(TOKEN), None),
        store,
    )
}

async fn send(
    app: &Router,
    request: axum::http::request::Builder,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let request = match token {
        Some(token) => request.header("authorization", format!("Bearer {token}")),
        None => request,
    };
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    send(app, Request::get(uri), token).await
}

async fn post(app: &Router, uri: &str) -> (StatusCode, Value) {
    send(app, Request::post(uri), Some(TOKEN)).await
}

async fn seed(store: &PgEventStore) -> StreamId {
    let tenant = TenantId::new();
    let stream = StreamId::system(uuid::Uuid::now_v7());
    for _ in 0..5 {
        let event = NewEvent::new(
            tenant,
            &HeartbeatReceived {
                agent_version: None,
            },
            Utc::now(),
        );
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
    let paused = NewEvent::new(
        tenant,
        &SystemPaused {
            reason: Some("maintenance".into()),
        },
        Utc::now(),
    );
    store
        .append(&stream, ExpectedVersion::Exact(5), vec![paused])
        .await
        .unwrap();
    stream
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "body: {body}"
    );
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn health_and_readiness_answer_when_the_database_is_up(pool: PgPool) {
    let (app, _) = app(&pool);
    assert_eq!(
        get(&app, "/healthz", None).await,
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    );
    assert_eq!(get(&app, "/readyz", None).await.0, StatusCode::OK);
    pool.close().await;
    let (status, body) = get(&app, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_error(&body, "not_ready");
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn the_event_log_needs_the_admin_token(pool: PgPool) {
    let (app, _) = app(&pool);
    let request = Request::get("/api/events").header("authorization", format!("bearer {TOKEN}"));
    assert_eq!(
        send(&app, request, None).await.0,
        StatusCode::OK,
        "the scheme is case-insensitive"
    );
    for token in [None, Some("wrong")] {
        let (status, body) = get(&app, "/api/events", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_error(&body, "unauthorized");
    }
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn the_global_log_pages_with_a_cursor_and_filters_by_type(pool: PgPool) {
    let (app, store) = app(&pool);
    seed(&store).await;

    let (status, page) = get(&app, "/api/events?limit=4", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["events"].as_array().unwrap().len(), 4);
    assert_eq!(
        (page["next_after"].as_i64(), page["has_more"].as_bool()),
        (Some(4), Some(true))
    );

    let (_, rest) = get(&app, "/api/events?after=4&limit=4", Some(TOKEN)).await;
    let positions: Vec<i64> = rest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [5, 6]);
    assert_eq!(rest["has_more"], false);

    let (_, paused) = get(&app, "/api/events?type=SystemPaused", Some(TOKEN)).await;
    let events = paused["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_type"], "SystemPaused");
    assert_eq!(events[0]["payload"]["reason"], "maintenance");
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn one_stream_reads_from_a_version_and_a_missing_stream_is_404(pool: PgPool) {
    let (app, store) = app(&pool);
    let stream = seed(&store).await;

    let (status, page) = get(
        &app,
        &format!("/api/streams/{stream}/events?from_version=5"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream_version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [5, 6]);
    assert_eq!(page["next_from_version"], 7);

    let missing = StreamId::system(uuid::Uuid::now_v7());
    let (status, body) = get(&app, &format!("/api/streams/{missing}/events"), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn bad_queries_get_a_json_400_in_the_error_shape(pool: PgPool) {
    let (app, store) = app(&pool);
    let stream = seed(&store).await;
    for uri in [
        "/api/events?after=abc".to_owned(),
        "/api/events?limit=0".to_owned(),
        "/api/events?limit=100000".to_owned(),
        "/api/events?after=-1".to_owned(),
        "/api/events?type=NoSuchEvent".to_owned(),
        "/api/streams/printer-1/events".to_owned(),
        format!("/api/streams/{stream}/events?from_version=0"),
    ] {
        let (status, body) = get(&app, &uri, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            body["error"]["code"]
                .as_str()
                .unwrap()
                .starts_with("invalid_"),
            "{uri}: {body}"
        );
    }
    let request = Request::post("/api/events").body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_error(&body, "method_not_allowed");
    let (status, body) = get(&app, "/no/such/route", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn admins_see_projection_status_and_retry_or_skip_parked_events(pool: PgPool) {
    use projections::{EventTypeCounts, ProjectionRunner};
    let (app, store) = app(&pool);
    seed(&store).await;
    let runner = ProjectionRunner::new(store.clone(), EventTypeCounts, 100);
    runner.catch_up(Some(1)).await.unwrap();
    // Park position 2 as if it had failed, then let the projector go on past it.
    let second = store.read_all(1, 1).await.unwrap().remove(0);
    let mut tx = pool.begin().await.unwrap();
    projections::checkpoint::lock(&mut tx, "event_type_counts")
        .await
        .unwrap();
    projections::checkpoint::park(&mut tx, "event_type_counts", &second, "boom", 5)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    runner.catch_up(None).await.unwrap();

    let (status, body) = get(&app, "/api/admin/projections", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let projection = &body["projections"][0];
    assert_eq!(projection["projector"], "event_type_counts");
    assert_eq!(
        (
            projection["position"].as_i64(),
            projection["lag_positions"].as_i64()
        ),
        (Some(6), Some(0))
    );
    assert_eq!(projection["parked"], 1);

    let (_, parked) = get(
        &app,
        "/api/admin/parked?projector=event_type_counts",
        Some(TOKEN),
    )
    .await;
    assert_eq!(parked["parked"][0]["position"], 2);
    assert_eq!(parked["parked"][0]["error"], "boom");

    let (status, body) = post(&app, "/api/admin/parked/event_type_counts/2/retry").await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("applied"))
    );
    let counted: i64 = sqlx::query_scalar("SELECT sum(events)::bigint FROM event_type_counts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(counted, 6, "the retried event is counted once");

    for uri in [
        "/api/admin/parked/event_type_counts/2/retry",
        "/api/admin/parked/event_type_counts/2/skip",
        "/api/admin/parked/no_such_projector/2/retry",
        "/api/admin/parked/event_type_counts%237/2/retry",
    ] {
        let (status, body) = post(&app, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_error(&body, "not_found");
    }
    let (status, body) = post(&app, "/api/admin/parked/event_type_counts/two/skip").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_path");
}
