//! The liveness API through the real router, against a real PostgreSQL database per test:
//! systems registered and heartbeating through the ingest API, the `liveness` projector caught
//! up (and the liveness monitor ticked by a hand-moved clock), then `GET /api/systems`,
//! `GET /api/systems/{id}/liveness`, `GET /api/fleet/summary` and `PUT /api/liveness/policy` with
//! tenant tokens. Another tenant's token sees nothing; bad input is a 4xx in the one error shape.

#[path = "support/api.rs"]
mod api;

use std::sync::Arc;

use api::{app, assert_error, bearer, get, new_tenant, register, send, System, Tenant, ADMIN};
use axum::http::{Method, StatusCode};
use axum::Router;
use command_side::event_store::{GroupCommitConfig, PgEventStore};
use projections::clock::ManualClock;
use projections::monitor::{LivenessMonitor, MonitorConfig};
use projections::{Liveness, ProjectionRunner};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

async fn heartbeat(app: &Router, system: &System) {
    let (status, body) = send(
        app,
        Method::POST,
        "/api/systems/heartbeat",
        &system.auth,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

async fn set_policy(app: &Router, tenant: &Tenant, body: Value) -> (StatusCode, Value) {
    send(
        app,
        Method::PUT,
        "/api/liveness/policy",
        &tenant.auth,
        Some(body),
    )
    .await
}

async fn catch_up(store: &PgEventStore) {
    let head = store.head_position().await.unwrap();
    let reached = ProjectionRunner::new(store.clone(), Liveness, 100)
        .catch_up(None)
        .await
        .unwrap();
    assert_eq!(reached, head);
}

/// The ids of a page of `GET /api/systems`.
fn ids(page: &Value) -> Vec<Uuid> {
    page["systems"]
        .as_array()
        .expect("a systems array")
        .iter()
        .map(|s| serde_json::from_value(s["system_id"].clone()).unwrap())
        .collect()
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn a_tenant_reads_the_liveness_of_its_fleet(pool: PgPool) {
    let (app, store) = app(&pool);
    let acme = new_tenant(&app, "acme").await;
    let db = register(&app, &acme, "db-01", "system").await;
    let web = register(&app, &acme, "web-01", "system").await;
    let gateway = register(&app, &acme, "gw-01", "gateway").await;
    let quiet = register(&app, &acme, "never-seen", "system").await;
    let old = register(&app, &acme, "old-01", "system").await;
    heartbeat(&app, &db).await;
    heartbeat(&app, &db).await;
    heartbeat(&app, &web).await;
    heartbeat(&app, &old).await;
    let (status, _) = send(
        &app,
        Method::POST,
        &format!("/api/systems/{}/decommission", old.id),
        &acme.auth,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &app,
        Method::POST,
        &format!("/api/systems/{}/pause", gateway.id),
        &acme.auth,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Policies: the tenant's 30 minutes, and 5 for web-01.
    let (status, accepted) =
        set_policy(&app, &acme, json!({"heartbeat_timeout_minutes": 30})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["stream_id"], format!("tenant-{}", acme.id));
    assert_eq!(accepted["heartbeat_timeout_minutes"], 30);
    let position = accepted["position"].as_i64().expect("a position");
    let stored: (String, String, Value) =
        sqlx::query_as("SELECT event_type, stream_id, payload FROM events WHERE position = $1")
            .bind(position)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        (
            "LivenessPolicySet".to_owned(),
            format!("tenant-{}", acme.id),
            json!({"heartbeat_timeout_minutes": 30})
        )
    );
    let event_id: Uuid = sqlx::query_scalar("SELECT event_id FROM events WHERE position = $1")
        .bind(position)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(accepted["event_id"], json!(event_id));
    let (status, accepted) = set_policy(
        &app,
        &acme,
        json!({"heartbeat_timeout_minutes": 5, "system_id": web.id}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["system_id"], json!(web.id));
    let reply = set_policy(
        &app,
        &acme,
        json!({"heartbeat_timeout_minutes": 5, "system_id": old.id}),
    )
    .await;
    assert_error(&reply, StatusCode::CONFLICT, "system_decommissioned");

    catch_up(&store).await;

    // The list: every system, by id, with its liveness.
    let (status, page) = get(&app, "/api/systems", &acme.auth).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let all = sorted(vec![db.id, web.id, gateway.id, quiet.id, old.id]);
    assert_eq!(ids(&page), all);
    assert_eq!(page["next_cursor"], Value::Null);
    let by_id = |id: Uuid| {
        page["systems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["system_id"] == json!(id))
            .unwrap()
            .clone()
    };
    let db_row = by_id(db.id);
    assert_eq!(
        (
            &db_row["status"],
            &db_row["lifecycle"],
            &db_row["kind"],
            &db_row["name"]
        ),
        (
            &json!("active"),
            &json!("active"),
            &json!("system"),
            &json!("db-01")
        )
    );
    assert!(db_row["last_seen_at"].is_string());
    // What the registry knows comes along.
    assert_eq!(
        (
            &db_row["labels"],
            &db_row["credentials_version"],
            db_row["registered_at"].is_string()
        ),
        (&json!({}), &json!(1), true)
    );
    assert_ne!(
        db_row["status_since"], db_row["last_seen_at"],
        "two heartbeats"
    );
    assert_eq!(
        (&db_row["timeout_minutes"], &db_row["timeout_source"]),
        (&json!(30), &json!("tenant"))
    );
    let web_row = by_id(web.id);
    assert_eq!(
        (&web_row["timeout_minutes"], &web_row["timeout_source"]),
        (&json!(5), &json!("system"))
    );
    let quiet_row = by_id(quiet.id);
    assert_eq!(
        (&quiet_row["status"], &quiet_row["last_seen_at"]),
        (&json!("unknown"), &Value::Null)
    );
    let gateway_row = by_id(gateway.id);
    assert_eq!(
        (
            &gateway_row["status"],
            &gateway_row["lifecycle"],
            &gateway_row["kind"]
        ),
        (&json!("unknown"), &json!("paused"), &json!("gateway"))
    );
    assert_eq!(by_id(old.id)["lifecycle"], "decommissioned");

    // Filters.
    let filtered = |query: &'static str| {
        let (app, auth) = (app.clone(), acme.auth.clone());
        async move {
            let (status, page) = get(&app, &format!("/api/systems?{query}"), &auth).await;
            assert_eq!(status, StatusCode::OK, "{query}: {page}");
            ids(&page)
        }
    };
    // A status filter leaves retired systems out, unless they are asked for.
    assert_eq!(filtered("status=active").await, sorted(vec![db.id, web.id]));
    assert_eq!(
        filtered("status=active&lifecycle=decommissioned").await,
        vec![old.id]
    );
    assert_eq!(
        filtered("status=unknown").await,
        sorted(vec![gateway.id, quiet.id])
    );
    assert!(filtered("status=inactive").await.is_empty());
    assert_eq!(filtered("kind=gateway").await, vec![gateway.id]);
    assert_eq!(filtered("lifecycle=decommissioned").await, vec![old.id]);
    assert_eq!(
        filtered("status=active&lifecycle=active&kind=system").await,
        sorted(vec![db.id, web.id])
    );

    // Pages of two, by cursor, cover every system once.
    let mut seen = Vec::new();
    let mut uri = "/api/systems?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = get(&app, &uri, &acme.auth).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 2);
        seen.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/systems?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!((seen, pages), (all.clone(), 3));

    // One system, with its intervals.
    let (status, detail) = get(
        &app,
        &format!("/api/systems/{}/liveness", db.id),
        &acme.auth,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["system"], db_row);
    assert_eq!(
        detail["intervals"],
        json!([{"status": "active", "started_at": db_row["status_since"], "ended_at": null}])
    );
    assert_eq!(detail["more_intervals"], false);
    let (_, old_detail) = get(
        &app,
        &format!("/api/systems/{}/liveness?limit=1", old.id),
        &acme.auth,
    )
    .await;
    assert!(
        old_detail["intervals"][0]["ended_at"].is_string(),
        "decommissioning closed it: {old_detail}"
    );

    // The summary: decommissioned systems are counted apart, not as inactive.
    let (status, summary) = get(&app, "/api/fleet/summary", &acme.auth).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(
        summary,
        json!({
            "total": 5,
            "by_status": {"unknown": 2, "active": 2, "inactive": 0},
            "by_lifecycle": {"active": 3, "paused": 1, "decommissioned": 1}
        })
    );
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn another_tenant_sees_nothing_and_bad_input_is_refused(pool: PgPool) {
    let (app, store) = app(&pool);
    let acme = new_tenant(&app, "acme").await;
    let globex = new_tenant(&app, "globex").await;
    let db = register(&app, &acme, "db-01", "system").await;
    heartbeat(&app, &db).await;
    let own = register(&app, &globex, "app-01", "system").await;
    heartbeat(&app, &own).await;
    catch_up(&store).await;

    // Globex sees its own system only, with the default timeout, and not acme's.
    let (status, page) = get(&app, "/api/systems", &globex.auth).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&page), vec![own.id]);
    assert_eq!(
        (
            &page["systems"][0]["timeout_minutes"],
            &page["systems"][0]["timeout_source"]
        ),
        (&json!(10), &json!("default"))
    );
    let reply = get(
        &app,
        &format!("/api/systems/{}/liveness", db.id),
        &globex.auth,
    )
    .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    let (_, summary) = get(&app, "/api/fleet/summary", &globex.auth).await;
    assert_eq!(summary["total"], 1);
    assert_eq!(summary["by_status"]["active"], 1);

    // A policy for another tenant's system, or for no system at all, is a 404; nothing is stored.
    for system_id in [db.id, Uuid::now_v7()] {
        let reply = set_policy(
            &app,
            &globex,
            json!({"heartbeat_timeout_minutes": 15, "system_id": system_id}),
        )
        .await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    }
    for body in [
        json!({"heartbeat_timeout_minutes": 0}),
        json!({"heartbeat_timeout_minutes": 10_081}),
        json!({"heartbeat_timeout_minutes": "ten"}),
        json!({"heartbeat_timeout_minutes": 10, "colour": "blue"}),
        json!({}),
    ] {
        let reply = set_policy(&app, &globex, body.clone()).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    let policies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'LivenessPolicySet'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(policies, 0);

    // Bad query parameters and paths are 400s in the one error shape.
    for uri in [
        "/api/systems?status=asleep",
        "/api/systems?kind=toaster",
        "/api/systems?lifecycle=retired",
        "/api/systems?limit=0",
        "/api/systems?limit=1001",
        "/api/systems?cursor=not-a-cursor",
        "/api/systems?after=not-a-cursor",
        "/api/systems?cursor=019ab7c24a107e55b1c92d7f0e6a9b13&after=019ab7c24a107e55b1c92d7f0e6a9b13",
        "/api/systems/not-a-uuid/liveness",
    ] {
        let reply = get(&app, uri, &acme.auth).await;
        assert_eq!(reply.0, StatusCode::BAD_REQUEST, "{uri}: {}", reply.1);
        assert!(reply.1["error"]["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("invalid_")));
    }
    let reply = get(
        &app,
        &format!("/api/systems/{}/liveness?limit=0", db.id),
        &acme.auth,
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_query");

    // No token, the admin token, a made-up token and a revoked one are all 401s.
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/api/admin/tenants/{}/tokens/{}", acme.id, acme.token_id),
        &bearer(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for auth in [
        String::new(),
        bearer(ADMIN),
        bearer("flt_made-up"),
        acme.auth.clone(),
    ] {
        for uri in ["/api/systems", "/api/fleet/summary"] {
            let reply = get(&app, uri, &auth).await;
            assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    let reply = set_policy(&app, &acme, json!({"heartbeat_timeout_minutes": 15})).await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn the_list_finds_inactive_and_unfolded_systems_a_page_at_a_time(pool: PgPool) {
    // A server whose default heartbeat timeout is 7 minutes: the monitor and the read API agree.
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    let app = fleetlog::http::app_with_liveness(
        store.clone(),
        Arc::from(ADMIN),
        None,
        &fleetlog::config::IngestConfig::default(),
        7,
    );
    let acme = new_tenant(&app, "acme").await;
    let first = register(&app, &acme, "app-01", "system").await;
    let second = register(&app, &acme, "app-02", "gateway").await;
    let patient = register(&app, &acme, "batch-01", "system").await;
    let quiet = register(&app, &acme, "never-seen", "system").await;
    for system in [&first, &second, &patient] {
        heartbeat(&app, system).await;
    }
    let (status, accepted) = set_policy(
        &app,
        &acme,
        json!({"heartbeat_timeout_minutes": 60, "system_id": patient.id}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    catch_up(&store).await;

    // Eight minutes later the monitor declares the two systems on the default timeout silent.
    let clock = ManualClock::at(chrono::Utc::now());
    let monitor = LivenessMonitor::new(
        store.clone(),
        clock.clone(),
        MonitorConfig {
            grace: std::time::Duration::ZERO,
            default_timeout_minutes: 7,
            projector_wait: std::time::Duration::from_millis(200),
            ..MonitorConfig::default()
        },
    );
    clock.advance(chrono::Duration::minutes(8));
    let report = monitor.tick().await.unwrap();
    assert_eq!(report.went_silent, 2, "{report:?}");
    catch_up(&store).await;

    // Registered after the last catch-up: the liveness projector has not folded it.
    let late = register(&app, &acme, "late-01", "system").await;

    let listed = |query: String| {
        let (app, auth) = (app.clone(), acme.auth.clone());
        async move {
            let (status, page) = get(&app, &format!("/api/systems?{query}"), &auth).await;
            assert_eq!(status, StatusCode::OK, "{query}: {page}");
            page
        }
    };

    // Only the inactive ones, on the default timeout as configured.
    let inactive = listed("status=inactive".into()).await;
    assert_eq!(ids(&inactive), sorted(vec![first.id, second.id]));
    for row in inactive["systems"].as_array().unwrap() {
        assert_eq!(row["status"], "inactive", "{row}");
        assert_eq!(row["lifecycle"], "active", "{row}");
        assert_eq!(
            (&row["timeout_minutes"], &row["timeout_source"]),
            (&json!(7), &json!("default"))
        );
    }
    assert_eq!(inactive["next_cursor"], Value::Null);
    assert_eq!(ids(&listed("status=active".into()).await), vec![patient.id]);
    assert_eq!(
        ids(&listed("status=inactive&kind=gateway".into()).await),
        vec![second.id]
    );

    // The unfolded system is listed, unknown since its registration.
    let unknown = listed("status=unknown".into()).await;
    assert_eq!(ids(&unknown), sorted(vec![quiet.id, late.id]));
    // The summary counts it the same way.
    let (status, summary) = get(&app, "/api/fleet/summary", &acme.auth).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["by_status"]["unknown"], 2, "{summary}");
    assert_eq!(summary["by_status"]["inactive"], 2, "{summary}");
    let late_row = unknown["systems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["system_id"] == json!(late.id))
        .unwrap()
        .clone();
    assert_eq!(
        (
            &late_row["name"],
            &late_row["lifecycle"],
            &late_row["last_seen_at"],
            &late_row["credentials_version"],
            &late_row["timeout_minutes"],
            &late_row["timeout_source"],
        ),
        (
            &json!("late-01"),
            &json!("active"),
            &Value::Null,
            &json!(1),
            &json!(7),
            &json!("default")
        )
    );
    assert_eq!(late_row["status_since"], late_row["registered_at"]);
    let not_folded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM liveness_systems WHERE system_id = $1")
            .bind(late.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(not_folded, 0, "the projector has not folded it yet");
    let (status, detail) = get(
        &app,
        &format!("/api/systems/{}/liveness", late.id),
        &acme.auth,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(
        (&detail["system"], &detail["intervals"]),
        (&late_row, &json!([]))
    );

    // Pages: one inactive system per page, then every system two at a time (with `after`, the
    // alias of `cursor`, on the way), each exactly once.
    let page = listed("status=inactive&limit=1".into()).await;
    assert_eq!(ids(&page), vec![sorted(vec![first.id, second.id])[0]]);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let page = listed(format!("status=inactive&limit=1&cursor={cursor}")).await;
    assert_eq!(ids(&page), vec![sorted(vec![first.id, second.id])[1]]);
    assert_eq!(page["next_cursor"], Value::Null);

    let all = sorted(vec![first.id, second.id, patient.id, quiet.id, late.id]);
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    for (n, parameter) in ["cursor", "after", "cursor"].into_iter().enumerate() {
        let page = listed(query.clone()).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&{parameter}={cursor}"),
            None => {
                assert_eq!(n, 2, "three pages");
                break;
            }
        }
    }
    assert_eq!(seen, all);
}
