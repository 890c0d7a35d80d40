//! The inventory history API through the real router, against a real PostgreSQL database per
//! test: systems report inventories through `POST /api/systems/inventory`, the diff reactor
//! (`InventoryDiff`) and the `inventory` projector (`InventoryHistory`) are caught up, then the
//! read routes (latest, as of a time, a system's timeline, the fleet's changes) and the rule
//! commands (`PUT /api/inventory/rules`, `PUT /api/inventory/notification-rules`) are called
//! with tenant tokens. Another tenant's token sees nothing; bad input is a 4xx in the one error
//! shape.

#[path = "support/api.rs"]
mod api;

use api::{app, assert_error, get, new_tenant, register, send, System};
use axum::http::{Method, StatusCode};
use axum::Router;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use command_side::event_store::PgEventStore;
use projections::inventory::rules::PathPattern;
use projections::inventory::{DiffRules, InventoryDiff, InventoryHistory};
use projections::reactor::ReactorRunner;
use projections::ProjectionRunner;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// A GET that must answer 200.
async fn get_ok(app: &Router, uri: &str, auth: &str) -> Value {
    let (status, body) = get(app, uri, auth).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

/// Reports an inventory; returns the position of the stored event.
async fn report(app: &Router, system: &System, data: &Value) -> i64 {
    let (status, body) = send(
        app,
        Method::POST,
        "/api/systems/inventory",
        &system.auth,
        Some(json!({"data": data})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["events"][0]["position"]
        .as_i64()
        .unwrap_or_else(|| panic!("a position in {body}"))
}

/// Runs the diff reactor, then the inventory projector, over everything stored.
async fn catch_up(store: &PgEventStore) {
    ReactorRunner::new(store.clone(), InventoryDiff::default(), 100)
        .catch_up()
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    let reached = ProjectionRunner::new(store.clone(), InventoryHistory, 100)
        .catch_up(None)
        .await
        .unwrap();
    assert_eq!(reached, head);
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// When Fleetlog recorded the event at `position`, as the read models store it.
async fn recorded_at(pool: &PgPool, position: i64) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT recorded_at FROM events WHERE position = $1")
        .bind(position)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The `(path, category, severity)` of a page of changes.
fn paths(page: &Value) -> Vec<String> {
    changes(page)
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_owned())
        .collect()
}

fn changes(page: &Value) -> Vec<Value> {
    page["changes"].as_array().expect("a changes array").clone()
}

/// Every change of a listing, page by page of `limit`, following `next_cursor`.
async fn all_pages(app: &Router, base: &str, limit: usize, auth: &str) -> (Vec<Value>, usize) {
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut uri = format!("{base}{separator}limit={limit}");
    let (mut seen, mut pages) = (Vec::new(), 0);
    loop {
        let page = get_ok(app, &uri, auth).await;
        pages += 1;
        let page_changes = changes(&page);
        assert!(page_changes.len() <= limit);
        seen.extend(page_changes);
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("{base}{separator}limit={limit}&cursor={cursor}"),
            None => break,
        }
    }
    (seen, pages)
}

fn doc1() -> Value {
    json!({
        "hostname": "db-01",
        "uptime_seconds": 100,
        "os": {"name": "debian", "version": "12", "kernel": "6.1.0"},
        "osx": {"flag": 1},
        "hardware": {"memory": [
            {"serial": "A", "size_gb": 16},
            {"serial": "B", "size_gb": 16}
        ]},
        "network": {"interfaces": [{"name": "eth0", "address": "10.0.0.1"}]},
        "features": {"docker": false}
    })
}

/// doc1 with a new OS version and kernel, a DIMM gone, a new address, and osx changed.
fn doc2() -> Value {
    let mut doc = doc1();
    doc["uptime_seconds"] = json!(200);
    doc["os"]["version"] = json!("13");
    doc["os"]["kernel"] = json!("6.12.0");
    doc["osx"]["flag"] = json!(2);
    doc["hardware"]["memory"] = json!([{"serial": "A", "size_gb": 16}]);
    doc["network"]["interfaces"][0]["address"] = json!("10.0.0.2");
    doc
}

/// doc2 with a new hostname and packages.
fn doc3() -> Value {
    let mut doc = doc2();
    doc["uptime_seconds"] = json!(300);
    doc["hostname"] = json!("db-01b");
    doc["packages"] = json!(["openssl", "nginx"]);
    doc
}

/// doc3 with docker enabled.
fn doc4() -> Value {
    let mut doc = doc3();
    doc["uptime_seconds"] = json!(400);
    doc["features"]["docker"] = json!(true);
    doc
}

/// `doc` with the uptime of doc1 (an ignored field keeps the snapshot's value in an as-of read).
fn with_first_uptime(mut doc: Value) -> Value {
    doc["uptime_seconds"] = json!(100);
    doc
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn a_tenant_reads_the_inventory_history_of_its_systems(pool: PgPool) {
    let (app, store) = app(&pool);
    let acme = new_tenant(&app, "acme").await;
    let globex = new_tenant(&app, "globex").await;
    let db = register(&app, &acme, "db-01", "system").await;
    let web = register(&app, &acme, "web-01", "system").await;
    let quiet = register(&app, &acme, "quiet-01", "system").await;
    let theirs = register(&app, &globex, "their-01", "system").await;

    let p1 = report(&app, &db, &doc1()).await;
    let p2 = report(&app, &db, &doc2()).await;
    let p3 = report(&app, &db, &doc3()).await;
    let p4 = report(&app, &db, &doc4()).await;
    let unchanged = report(&app, &db, &doc4()).await;
    report(&app, &web, &json!({"hostname": "web-01"})).await;
    report(&app, &web, &json!({"hostname": "web-02"})).await;
    report(&app, &theirs, &json!({"hostname": "a"})).await;
    report(&app, &theirs, &json!({"hostname": "b"})).await;
    catch_up(&store).await;
    let [t1, t2, t3, t4] = [
        recorded_at(&pool, p1).await,
        recorded_at(&pool, p2).await,
        recorded_at(&pool, p3).await,
        recorded_at(&pool, p4).await,
    ];
    assert!(t1 < t2 && t2 < t3 && t3 < t4, "{t1} {t2} {t3} {t4}");

    // Latest: the fourth document; the unchanged fifth report moves only last_reported_at.
    let latest = get_ok(
        &app,
        &format!("/api/systems/{}/inventory/latest", db.id),
        &acme.auth,
    )
    .await;
    assert_eq!(latest["system_id"], json!(db.id));
    assert_eq!(latest["position"], p4);
    assert_eq!(latest["data"], doc4());
    assert!(latest["content_hash"]
        .as_str()
        .is_some_and(|h| h.len() == 64));
    let reported_at: DateTime<Utc> = serde_json::from_value(latest["reported_at"].clone()).unwrap();
    let last_reported_at: DateTime<Utc> =
        serde_json::from_value(latest["last_reported_at"].clone()).unwrap();
    assert_eq!(reported_at, t4);
    assert_eq!(last_reported_at, recorded_at(&pool, unchanged).await);
    for (uri, auth) in [
        (
            format!("/api/systems/{}/inventory/latest", quiet.id),
            &acme.auth,
        ),
        (
            format!("/api/systems/{}/inventory/latest", theirs.id),
            &acme.auth,
        ),
        (
            format!("/api/systems/{}/inventory/latest", db.id),
            &globex.auth,
        ),
        (
            format!("/api/systems/{}/inventory/latest", Uuid::now_v7()),
            &acme.auth,
        ),
    ] {
        assert_error(
            &get(&app, &uri, auth).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    assert_error(
        &get(&app, "/api/systems/not-a-uuid/inventory/latest", &acme.auth).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    );
    assert_eq!(
        get(
            &app,
            &format!("/api/systems/{}/inventory/latest", db.id),
            "Bearer nope"
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );

    // Retention prunes the documents of reports 2 and 3 (as the retention job does: payload
    // down to the hash, snapshot row deleted), so as-of reads between them fold diffs.
    for position in [p2, p3] {
        sqlx::query(
            "UPDATE events SET payload = jsonb_build_object('content_hash', \
             payload -> 'content_hash', 'pruned', true) WHERE position = $1",
        )
        .bind(position)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("DELETE FROM inventory_snapshots WHERE position = $1")
            .bind(position)
            .execute(&pool)
            .await
            .unwrap();
    }
    let as_of = |at: DateTime<Utc>| {
        let (app, auth) = (app.clone(), acme.auth.clone());
        let uri = format!("/api/systems/{}/inventory?at={}", db.id, rfc3339(at));
        async move { get(&app, &uri, &auth).await }
    };
    let micro = Duration::microseconds(1);
    assert_error(&as_of(t1 - micro).await, StatusCode::NOT_FOUND, "not_found");
    for (at, snapshot, applied, expected) in [
        (t1, p1, 0, doc1()),
        (t2 - micro, p1, 0, doc1()),
        (t2, p1, 1, with_first_uptime(doc2())),
        (t3 - micro, p1, 1, with_first_uptime(doc2())),
        (t3, p1, 2, with_first_uptime(doc3())),
        (t4 - micro, p1, 2, with_first_uptime(doc3())),
        (t4, p4, 0, doc4()),
        (t4 + Duration::days(365), p4, 0, doc4()),
    ] {
        let (status, body) = as_of(at).await;
        assert_eq!(status, StatusCode::OK, "{at}: {body}");
        assert_eq!(body["snapshot"]["position"], snapshot, "{at}: {body}");
        assert_eq!(body["changes_applied"], applied, "{at}");
        assert_eq!(body["data"], expected, "{at}");
        let echoed: DateTime<Utc> = serde_json::from_value(body["at"].clone()).unwrap();
        assert_eq!(echoed, at);
    }
    // An offset other than Z, percent-encoded, is the same instant.
    let (status, body) = get(
        &app,
        &format!(
            "/api/systems/{}/inventory?at={}",
            db.id,
            (t2 + Duration::hours(2))
                .with_timezone(&chrono::FixedOffset::east_opt(7200).unwrap())
                .to_rfc3339_opts(SecondsFormat::Micros, false)
                .replace('+', "%2B")
        ),
        &acme.auth,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for uri in [
        format!("/api/systems/{}/inventory?at=yesterday", db.id),
        format!("/api/systems/{}/inventory", db.id),
    ] {
        assert_error(
            &get(&app, &uri, &acme.auth).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        );
    }
    let far = rfc3339(t4 + Duration::days(1));
    assert_error(
        &get(
            &app,
            &format!("/api/systems/{}/inventory?at={far}", db.id),
            &globex.auth,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &get(
            &app,
            &format!("/api/systems/{}/inventory?at={far}", quiet.id),
            &acme.auth,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // The timeline, newest first: report 4's change, then report 3's, then report 2's (each
    // diff's changes in document order).
    let timeline = format!("/api/systems/{}/inventory/timeline", db.id);
    let page = get_ok(&app, &timeline, &acme.auth).await;
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(
        paths(&page),
        [
            "/features/docker",
            "/hostname",
            "/packages",
            "/hardware/memory[serial=B]",
            "/network/interfaces[name=eth0]/address",
            "/os/kernel",
            "/os/version",
            "/osx/flag",
        ]
    );
    let all = changes(&page);
    let memory = &all[3];
    assert_eq!(
        (
            &memory["op"],
            &memory["category"],
            &memory["severity"],
            &memory["previous"],
            &memory["current"]
        ),
        (
            &json!("removed"),
            &json!("hardware"),
            &json!("critical"),
            &json!({"serial": "B", "size_gb": 16}),
            &Value::Null
        )
    );
    let version = &all[6];
    assert_eq!(
        (&version["previous"], &version["current"], &version["op"]),
        (&json!("12"), &json!("13"), &json!("changed"))
    );
    let changed_at: DateTime<Utc> = serde_json::from_value(version["changed_at"].clone()).unwrap();
    assert_eq!(changed_at, t2);
    assert!(version["position"].as_i64().unwrap() > p2);
    assert!(version["index"].is_i64());

    // Oldest first is the reverse, diff by diff, each diff still in document order.
    let asc = get_ok(&app, &format!("{timeline}?order=asc"), &acme.auth).await;
    assert_eq!(
        paths(&asc),
        [
            "/hardware/memory[serial=B]",
            "/network/interfaces[name=eth0]/address",
            "/os/kernel",
            "/os/version",
            "/osx/flag",
            "/hostname",
            "/packages",
            "/features/docker",
        ]
    );

    // Filters.
    let filtered = |query: String| {
        let (app, auth, timeline) = (app.clone(), acme.auth.clone(), timeline.clone());
        async move { paths(&get_ok(&app, &format!("{timeline}?{query}"), &auth).await) }
    };
    assert_eq!(
        filtered("category=os".into()).await,
        ["/packages", "/os/kernel", "/os/version"]
    );
    assert_eq!(
        filtered("severity=high".into()).await,
        ["/hardware/memory[serial=B]", "/os/version"]
    );
    assert_eq!(
        filtered("severity=critical".into()).await,
        ["/hardware/memory[serial=B]"]
    );
    assert_eq!(
        filtered("path_prefix=/os".into()).await,
        ["/os/kernel", "/os/version"],
        "segment-wise: /osx is not under /os"
    );
    assert_eq!(
        filtered("path_prefix=/hardware/memory".into()).await,
        ["/hardware/memory[serial=B]"]
    );
    assert_eq!(filtered("path_prefix=/os/".into()).await.len(), 2);
    assert_eq!(filtered("path_prefix=/".into()).await.len(), 8);
    assert_eq!(
        filtered("category=os&severity=medium&path_prefix=/os".into()).await,
        ["/os/kernel", "/os/version"]
    );
    assert_eq!(
        filtered(format!("from={}&to={}", rfc3339(t3), rfc3339(t4))).await,
        ["/hostname", "/packages"],
        "from is inclusive, to exclusive"
    );
    assert_eq!(
        filtered(format!("from={}", rfc3339(t4 + micro))).await,
        Vec::<String>::new()
    );

    // Pages of 3 (and of 1), both orders, cover every change once, in order.
    let (paged, pages) = all_pages(&app, &timeline, 3, &acme.auth).await;
    assert_eq!((paged, pages), (all.clone(), 3));
    let (paged, pages) = all_pages(&app, &format!("{timeline}?order=asc"), 1, &acme.auth).await;
    assert_eq!((paged, pages), (changes(&asc), 8));
    let (paged, _) = all_pages(&app, &format!("{timeline}?category=os"), 1, &acme.auth).await;
    assert_eq!(paged.len(), 3);

    // Bad parameters and other tenants.
    let first_page = get_ok(&app, &format!("{timeline}?limit=2"), &acme.auth).await;
    let cursor = first_page["next_cursor"].as_str().unwrap().to_owned();
    for query in [
        "limit=0".to_owned(),
        "limit=1001".to_owned(),
        "severity=urgent".to_owned(),
        "category=plumbing".to_owned(),
        "order=sideways".to_owned(),
        "path_prefix=os".to_owned(),
        "from=yesterday".to_owned(),
        format!("from={}&to={}", rfc3339(t4), rfc3339(t1)),
        "cursor=abc".to_owned(),
        format!("order=asc&cursor={cursor}"),
        // Well-formed, but at times PostgreSQL cannot hold (year -93000) or no change has.
        format!("cursor={}", forged_cursor(-3_000_000_000_000_000_000)),
        format!("cursor={}", forged_cursor(8_000_000_000_000_000_000)),
    ] {
        assert_error(
            &get(&app, &format!("{timeline}?{query}"), &acme.auth).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        );
    }
    assert_error(
        &get(&app, &timeline, &globex.auth).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let quiet_page = get_ok(
        &app,
        &format!("/api/systems/{}/inventory/timeline", quiet.id),
        &acme.auth,
    )
    .await;
    assert_eq!(quiet_page, json!({"changes": [], "next_cursor": null}));

    // The fleet: acme's two systems, not globex's.
    let fleet = get_ok(&app, "/api/inventory/changes", &acme.auth).await;
    let fleet_changes = changes(&fleet);
    assert_eq!(fleet_changes.len(), 9);
    assert_eq!(fleet_changes[0]["system_id"], json!(web.id));
    assert_eq!(fleet_changes[0]["path"], "/hostname");
    assert_eq!(
        (&fleet_changes[0]["previous"], &fleet_changes[0]["current"]),
        (&json!("web-01"), &json!("web-02"))
    );
    assert!(fleet_changes[1..]
        .iter()
        .all(|c| c["system_id"] == json!(db.id)));
    let (paged, pages) = all_pages(&app, "/api/inventory/changes", 4, &acme.auth).await;
    assert_eq!((paged, pages), (fleet_changes.clone(), 3));
    let hostnames = get_ok(
        &app,
        "/api/inventory/changes?path_prefix=/hostname&order=asc",
        &acme.auth,
    )
    .await;
    assert_eq!(
        changes(&hostnames)
            .iter()
            .map(|c| c["system_id"].clone())
            .collect::<Vec<_>>(),
        [json!(db.id), json!(web.id)]
    );
    let theirs_page = get_ok(&app, "/api/inventory/changes", &globex.auth).await;
    assert_eq!(changes(&theirs_page).len(), 1);
    assert_eq!(changes(&theirs_page)[0]["system_id"], json!(theirs.id));
    let newcomer = new_tenant(&app, "initech").await;
    assert_eq!(
        get_ok(&app, "/api/inventory/changes", &newcomer.auth).await,
        json!({"changes": [], "next_cursor": null})
    );
    assert_error(
        &get(&app, "/api/inventory/changes?severity=urgent", &acme.auth).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
}

/// A well-formed newest-first cursor at `micros` since the epoch (position 1, index 0).
fn forged_cursor(micros: i64) -> String {
    let mut bytes = vec![b'd'];
    bytes.extend_from_slice(&micros.to_be_bytes());
    bytes.extend_from_slice(&1i64.to_be_bytes());
    bytes.extend_from_slice(&0i32.to_be_bytes());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prunes reports as the retention job does: payload down to the hash, snapshot row deleted.
async fn prune(pool: &PgPool, positions: &[i64]) {
    for &position in positions {
        sqlx::query(
            "UPDATE events SET payload = jsonb_build_object('content_hash', \
             payload -> 'content_hash', 'pruned', true) WHERE position = $1",
        )
        .bind(position)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query("DELETE FROM inventory_snapshots WHERE position = $1")
            .bind(position)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// As of a time, the diffs applied are those of the reports after the snapshot in the log, up
/// to the latest report at or before the time by `(recorded_at, position)`, whatever order the
/// recording times are in: two reports recorded at the same microsecond, or a clock out of step
/// with the log, neither hide a report nor break the chain of diffs.
#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn as_of_follows_the_log_when_recording_times_tie_or_run_backwards(pool: PgPool) {
    let (app, store) = app(&pool);
    let acme = new_tenant(&app, "acme").await;
    let db = register(&app, &acme, "db-01", "system").await;
    let p1 = report(&app, &db, &doc1()).await;
    let p2 = report(&app, &db, &doc2()).await;
    let p3 = report(&app, &db, &doc3()).await;
    let p4 = report(&app, &db, &doc4()).await;
    catch_up(&store).await;
    let [t1, t3, t4] = [
        recorded_at(&pool, p1).await,
        recorded_at(&pool, p3).await,
        recorded_at(&pool, p4).await,
    ];
    prune(&pool, &[p2, p3]).await;
    let diffs: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT position FROM inventory_changes WHERE system_id = $1 ORDER BY position",
    )
    .bind(db.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(diffs.len(), 3);
    let (d2, d3) = (diffs[0], diffs[1]);
    let set_changed_at = |position: i64, at: DateTime<Utc>| {
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE inventory_changes SET changed_at = $2 WHERE position = $1")
                .bind(position)
                .bind(at)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    let as_of = |at: DateTime<Utc>| {
        let (app, auth) = (app.clone(), acme.auth.clone());
        let uri = format!("/api/systems/{}/inventory?at={}", db.id, rfc3339(at));
        async move {
            let (status, body) = get(&app, &uri, &auth).await;
            assert_eq!(status, StatusCode::OK, "{at}: {body}");
            (
                body["snapshot"]["position"].as_i64().unwrap(),
                body["changes_applied"].as_u64().unwrap(),
                body["data"].clone(),
            )
        }
    };

    // Report 2 recorded in the same microsecond as report 1: as of then, report 2 is the
    // latest (it comes later in the log), not hidden behind the snapshot's time.
    set_changed_at(d2, t1).await;
    assert_eq!(as_of(t1).await, (p1, 1, with_first_uptime(doc2())));

    // Report 2 recorded after report 3 (a clock out of step): as of report 3's time, report 3
    // is the latest, and reaching it from report 1 still goes through report 2's diff.
    let between = t3 + (t4 - t3) / 2;
    assert!(t3 < between && between < t4, "{t3} {t4}");
    set_changed_at(d2, between).await;
    assert_eq!(as_of(t3).await, (p1, 2, with_first_uptime(doc3())));
    // As of report 2's time, it is the latest by time: the log up to it.
    assert_eq!(as_of(between).await, (p1, 1, with_first_uptime(doc2())));
    // Report 4's own diff, and the late diffs of earlier reports, come after its position in
    // the log but are never applied to its snapshot.
    set_changed_at(d3, t4).await;
    assert_eq!(as_of(t4).await, (p4, 0, doc4()));
}

/// Stored rule events of a tenant's stream, oldest first: (event type, payload).
async fn tenant_events(pool: &PgPool, tenant: Uuid, event_type: &str) -> Vec<(i64, Value)> {
    sqlx::query_as(
        "SELECT position, payload FROM events WHERE stream_id = $1 AND event_type = $2 \
         ORDER BY position",
    )
    .bind(format!("tenant-{tenant}"))
    .bind(event_type)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn a_tenant_configures_its_inventory_rules(pool: PgPool) {
    let (app, store) = app(&pool);
    let acme = new_tenant(&app, "acme").await;
    let put = |uri: &'static str, auth: String, body: Value| {
        let app = app.clone();
        async move { send(&app, Method::PUT, uri, &auth, Some(body)).await }
    };

    // Diff rules: accepted, stored on the tenant's stream as sent.
    let rules = json!({
        "identity_keys": ["wwn"],
        "ignored_paths": ["/**/fan_rpm"],
        "path_rules": [
            {"pattern": "/hostname", "category": "security", "severity": "critical"},
            {"pattern": "/hardware/gpus[*]", "op": "removed", "category": "hardware",
             "severity": "high"}
        ]
    });
    let (status, accepted) = put("/api/inventory/rules", acme.auth.clone(), rules.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["stream_id"], format!("tenant-{}", acme.id));
    let stored = tenant_events(&pool, acme.id, "InventoryRulesConfigured").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(accepted["position"], stored[0].0);
    assert_eq!(stored[0].1, rules);
    let event_id: Uuid = sqlx::query_scalar("SELECT event_id FROM events WHERE position = $1")
        .bind(stored[0].0)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(accepted["event_id"], json!(event_id));
    let event: events_schema::InventoryRulesConfigured =
        serde_json::from_value(stored[0].1.clone()).unwrap();
    DiffRules::for_tenant(&event).expect("the differ takes what the command side accepted");

    // They apply to diffs computed after them: a hostname change is now security/critical.
    let system = register(&app, &acme, "db-01", "system").await;
    report(&app, &system, &json!({"hostname": "a", "fan_rpm": 1})).await;
    report(&app, &system, &json!({"hostname": "b", "fan_rpm": 2})).await;
    catch_up(&store).await;
    let timeline = get_ok(
        &app,
        &format!("/api/systems/{}/inventory/timeline", system.id),
        &acme.auth,
    )
    .await;
    let only = changes(&timeline);
    assert_eq!(only.len(), 1, "{timeline}");
    assert_eq!(
        (&only[0]["path"], &only[0]["category"], &only[0]["severity"]),
        (&json!("/hostname"), &json!("security"), &json!("critical"))
    );

    // Notification rules.
    let notify = json!({"rules": [
        {"name": "hardware", "min_severity": "high", "category": "hardware"},
        {"name": "os", "min_severity": "info", "path_prefix": "/os"}
    ]});
    let (status, accepted) = put(
        "/api/inventory/notification-rules",
        acme.auth.clone(),
        notify.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let stored = tenant_events(&pool, acme.id, "ChangeNotificationRulesConfigured").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(accepted["position"], stored[0].0);
    assert_eq!(stored[0].1, notify);
    let (status, _) = put(
        "/api/inventory/notification-rules",
        acme.auth.clone(),
        json!({"rules": []}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Invalid bodies: 422, nothing stored.
    for body in [
        json!({"ignored_paths": ["fan_rpm"]}),
        json!({"ignored_paths": [""]}),
        json!({"ignored_paths": ["/a[x]"]}),
        json!({"ignored_paths": ["/a~9"]}),
        json!({"path_rules": [{"pattern": "/a[", "category": "os", "severity": "low"}]}),
        json!({"path_rules": [{"pattern": "/a", "category": "plumbing", "severity": "low"}]}),
        json!({"identity_keys": [""]}),
        json!({"identity_keys": ["a", "a"]}),
        json!({"ignored_path": ["/typo"]}),
        json!({"ignored_paths": vec!["/x"; 201]}),
        json!({"ignored_paths": ["/**/a/**/b/**/c/**/d"]}),
        json!({"path_rules": [
            {"pattern": "/**".repeat(160), "category": "os", "severity": "low"}
        ]}),
    ] {
        let reply = put("/api/inventory/rules", acme.auth.clone(), body.clone()).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    let rule = |name: &str| json!({"name": name, "min_severity": "low"});
    for body in [
        json!({"rules": [rule("a"), rule("a")]}),
        json!({"rules": [rule(" ")]}),
        json!({"rules": [{"name": "x", "min_severity": "low", "path_prefix": "os"}]}),
        json!({"rules": [{"name": "x", "min_severity": "low", "path_prefix": "/a[*]"}]}),
        // A prefix compares text: wildcards would never match, so they are refused.
        json!({"rules": [{"name": "x", "min_severity": "low", "path_prefix": "/**"}]}),
        json!({"rules": [{"name": "x", "min_severity": "low", "path_prefix": "/**/firewall"}]}),
        json!({"rules": [{"name": "x", "min_severity": "low", "path_prefix": "/os/*"}]}),
        json!({"rules": [{"name": "x", "min_severity": "urgent"}]}),
        json!({"rules": (0..101).map(|i| rule(&i.to_string())).collect::<Vec<_>>()}),
        json!({}),
    ] {
        let reply = put(
            "/api/inventory/notification-rules",
            acme.auth.clone(),
            body.clone(),
        )
        .await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
    assert_eq!(
        tenant_events(&pool, acme.id, "InventoryRulesConfigured")
            .await
            .len(),
        1
    );
    assert_eq!(
        tenant_events(&pool, acme.id, "ChangeNotificationRulesConfigured")
            .await
            .len(),
        2
    );
    let (status, _) = put("/api/inventory/rules", "Bearer nope".into(), json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// command-side cannot call the differ's pattern parser (projections depends on command-side),
/// so it checks the grammar itself: it must accept exactly the patterns the differ parses that
/// start with `/` (and have at most three `/**`, a limit of the command side only).
#[test]
fn the_command_side_pattern_check_agrees_with_the_differ() {
    use command_side::inventory_rules::check_pattern;
    let samples = [
        "/",
        "/os",
        "/os/",
        "//",
        "/a[0]",
        "/a[00]",
        "/a[*]",
        "/a[*]/b",
        "/**",
        "/**/x",
        "/*",
        "/a[k=v]",
        "/a[k=]",
        "/a[=v]",
        "/a[=]",
        "/a[k=v=w]",
        "/a[]",
        "/a[-1]",
        "/a[x]",
        "/a[",
        "/a]",
        "/a=",
        "/a~",
        "/a~0",
        "/a~1~2~3~4",
        "/a~5",
        "/a[k~4=v~3]",
        "/a[k~=v]",
        "/a[1][2]/b",
        "/a[ 1]",
        "/é/ü",
        "/a[99999999999999999999999]",
        "/a[*x]",
        "/a[[]",
        "/a[k=[]",
        "/a[k=v]x",
    ];
    for sample in samples {
        assert_eq!(
            check_pattern(sample, true).is_ok(),
            PathPattern::parse(sample).is_ok(),
            "{sample:?}"
        );
    }
    for not_rooted in ["", "a", "[0]", "[*]/a"] {
        assert!(check_pattern(not_rooted, true).is_err(), "{not_rooted:?}");
    }
}
