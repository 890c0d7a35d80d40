//! The inventory diff reactor against a real PostgreSQL: baselines, identity-aware diffs, tenant
//! rules as of their place in the log, change notifications, pruned reports and replays.

use chrono::Utc;
use command_side::event_store::postgres::{read_range_on, ReadFilter};
use command_side::event_store::{EventStore, ExpectedVersion, GroupCommitConfig, PgEventStore};
use events_schema::{
    ChangeCategory, ChangeNotificationRule, ChangeNotificationRulesConfigured, ChangeSeverity,
    DomainEvent, InventoryChanged, InventoryReported, InventoryRulesConfigured, NewEvent, StreamId,
    TenantId,
};
use projections::inventory::InventoryDiff;
use projections::reactor::{Reactor, ReactorRunner};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

struct System {
    store: PgEventStore,
    tenant: TenantId,
    stream: StreamId,
}

impl System {
    fn new(pool: &PgPool) -> Self {
        Self {
            store: PgEventStore::start(pool.clone(), GroupCommitConfig::default()),
            tenant: TenantId::new(),
            stream: StreamId::system(Uuid::now_v7()),
        }
    }

    async fn report(&self, data: Value) {
        let hash = format!("{:x}", md5_like(&data));
        let event = NewEvent::from_payload::<InventoryReported>(
            self.tenant,
            InventoryReported::payload(hash, data),
            Utc::now(),
        );
        self.store
            .append(&self.stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }

    async fn tenant_event<E: DomainEvent>(&self, event: &E) {
        self.store
            .append(
                &StreamId::tenant(self.tenant),
                ExpectedVersion::Any,
                vec![NewEvent::new(self.tenant, event, Utc::now())],
            )
            .await
            .unwrap();
    }

    async fn react(&self) {
        ReactorRunner::new(self.store.clone(), InventoryDiff::default(), 7)
            .catch_up()
            .await
            .unwrap();
    }

    async fn diffs(&self) -> Vec<InventoryChanged> {
        let payloads: Vec<Value> = sqlx::query_scalar(
            "SELECT payload FROM events WHERE event_type = 'InventoryChanged' AND stream_id = $1 \
             ORDER BY position",
        )
        .bind(self.stream.as_str())
        .fetch_all(self.store.pool())
        .await
        .unwrap();
        payloads
            .into_iter()
            .map(|p| serde_json::from_value(p).unwrap())
            .collect()
    }

    async fn alerts(&self) -> Vec<Value> {
        sqlx::query_scalar(
            "SELECT payload FROM events WHERE event_type = 'AlertTriggered' ORDER BY position",
        )
        .fetch_all(self.store.pool())
        .await
        .unwrap()
    }
}

/// A stand-in content hash (the reactor only compares hashes for equality).
fn md5_like(data: &Value) -> u128 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data.to_string().hash(&mut hasher);
    u128::from(hasher.finish())
}

fn inventory(os_version: &str, eth1_ip: &str, dimms: &[&str], uptime: u64) -> Value {
    json!({
        "os": {"name": "Debian", "version": os_version, "uptime": uptime},
        "hardware": {
            "memory": dimms.iter().map(|serial| json!({"serial": serial, "size_gb": 32})).collect::<Vec<_>>(),
        },
        "network": {"interfaces": [
            {"name": "eth0", "mac": "aa:bb:cc:00:00:01", "ipv4": "10.0.0.5"},
            {"name": "eth1", "mac": "aa:bb:cc:00:00:02", "ipv4": eth1_ip},
        ]},
    })
}

#[sqlx::test(migrations = "../migrations")]
async fn reports_are_diffed_against_the_previous_one_by_identity(pool: PgPool) {
    let system = System::new(&pool);
    system
        .report(inventory("12.1", "10.0.1.5", &["D1", "D2"], 100))
        .await;
    system.react().await;
    assert!(
        system.diffs().await.is_empty(),
        "the first report is the baseline"
    );

    // eth1's address changes and the NICs come in the other order; uptime always changes.
    let mut reordered = inventory("12.1", "10.0.1.99", &["D1", "D2"], 200);
    reordered["network"]["interfaces"]
        .as_array_mut()
        .unwrap()
        .reverse();
    system.report(reordered).await;
    // Only the uptime changes: no diff at all.
    system
        .report(inventory("12.1", "10.0.1.99", &["D1", "D2"], 300))
        .await;
    // A DIMM disappears and the OS is upgraded.
    system
        .report(inventory("12.2", "10.0.1.99", &["D1"], 400))
        .await;
    // And back: a revert is a change too.
    system
        .report(inventory("12.1", "10.0.1.99", &["D1"], 500))
        .await;
    system.react().await;

    let diffs = system.diffs().await;
    assert_eq!(diffs.len(), 3, "{diffs:#?}");
    let ip = &diffs[0].changes;
    assert_eq!(ip.len(), 1, "{ip:#?}");
    assert_eq!(ip[0].path, "/network/interfaces[name=eth1]/ipv4");
    assert_eq!(ip[0].previous, Some(json!("10.0.1.5")));
    assert_eq!(ip[0].current, Some(json!("10.0.1.99")));
    assert_eq!(ip[0].category, ChangeCategory::Network);
    assert_eq!(ip[0].severity, ChangeSeverity::Medium);

    let upgrade = &diffs[1].changes;
    let dimm = upgrade
        .iter()
        .find(|c| c.path.starts_with("/hardware/memory"))
        .expect("the DIMM removal");
    assert_eq!(dimm.path, "/hardware/memory[serial=D2]");
    assert_eq!(dimm.severity, ChangeSeverity::Critical);
    assert_eq!(dimm.previous, Some(json!({"serial": "D2", "size_gb": 32})));
    let os = upgrade.iter().find(|c| c.path == "/os/version").unwrap();
    assert_eq!(
        (os.category, os.severity),
        (ChangeCategory::Os, ChangeSeverity::High)
    );
    assert_eq!(diffs[2].changes.len(), 1);
    assert_eq!(diffs[2].changes[0].current, Some(json!("12.1")));
    // Each diff names the two reports it is between; the uptime-only report between the first
    // two diffs has no diff of its own.
    assert_ne!(diffs[1].previous_hash, diffs[0].current_hash);
    assert_eq!(diffs[2].previous_hash, diffs[1].current_hash);

    // A replay from 0 derives the same ids: nothing new.
    sqlx::query(
        "UPDATE projection_checkpoints SET position = 0 WHERE projector = 'inventory_diff'",
    )
    .execute(&pool)
    .await
    .unwrap();
    system.react().await;
    assert_eq!(system.diffs().await.len(), 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn tenant_rules_apply_from_where_they_stand_in_the_log(pool: PgPool) {
    let system = System::new(&pool);
    system
        .report(inventory("12.1", "10.0.1.5", &["D1"], 1))
        .await;
    system
        .report(inventory("12.1", "10.0.1.6", &["D1"], 2))
        .await;
    // From here on, interface addresses are not changes and OS changes are critical.
    let rules = InventoryRulesConfigured {
        ignored_paths: vec!["/network/interfaces[*]/ipv4".into()],
        path_rules: vec![events_schema::InventoryPathRule {
            pattern: "/os".into(),
            op: None,
            category: ChangeCategory::Os,
            severity: ChangeSeverity::Critical,
        }],
        ..Default::default()
    };
    system.tenant_event(&rules).await;
    system
        .report(inventory("12.1", "10.0.1.7", &["D1"], 3))
        .await;
    system
        .report(inventory("12.2", "10.0.1.8", &["D1"], 4))
        .await;
    system.react().await;
    let diffs = system.diffs().await;
    assert_eq!(diffs.len(), 2, "{diffs:#?}");
    assert_eq!(
        diffs[0].changes[0].path,
        "/network/interfaces[name=eth1]/ipv4"
    );
    assert_eq!(diffs[1].changes.len(), 1);
    assert_eq!(diffs[1].changes[0].path, "/os/version");
    assert_eq!(diffs[1].changes[0].severity, ChangeSeverity::Critical);

    // Replayed from 0 in batches of other sizes, the rules still apply from the same place.
    sqlx::query(
        "UPDATE projection_checkpoints SET position = 0 WHERE projector = 'inventory_diff'",
    )
    .execute(&pool)
    .await
    .unwrap();
    ReactorRunner::new(system.store.clone(), InventoryDiff::default(), 1)
        .catch_up()
        .await
        .unwrap();
    assert_eq!(system.diffs().await, diffs);
}

#[sqlx::test(migrations = "../migrations")]
async fn matching_changes_raise_one_notification_per_rule(pool: PgPool) {
    let system = System::new(&pool);
    let notify = ChangeNotificationRulesConfigured {
        rules: vec![
            ChangeNotificationRule {
                name: "hardware-high".into(),
                min_severity: ChangeSeverity::High,
                category: Some(ChangeCategory::Hardware),
                path_prefix: None,
            },
            ChangeNotificationRule {
                name: "anything-os".into(),
                min_severity: ChangeSeverity::Info,
                category: None,
                path_prefix: Some("/os".into()),
            },
        ],
    };
    system.tenant_event(&notify).await;
    system
        .report(inventory("12.1", "10.0.1.5", &["D1", "D2"], 1))
        .await;
    // Only a medium network change: no rule matches.
    system
        .report(inventory("12.1", "10.0.1.6", &["D1", "D2"], 2))
        .await;
    // A DIMM removed: hardware-high; the OS untouched.
    system
        .report(inventory("12.1", "10.0.1.6", &["D1"], 3))
        .await;
    // An OS upgrade: anything-os only.
    system
        .report(inventory("12.2", "10.0.1.6", &["D1"], 4))
        .await;
    system.react().await;
    system.react().await;

    let alerts = system.alerts().await;
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let system_id = system
        .stream
        .as_str()
        .trim_start_matches("system-")
        .to_owned();
    // Alerts of different keys are different streams, appended concurrently: find each by key.
    let alert = |rule: &str| {
        let key = format!("inventory:{rule}:{system_id}");
        alerts
            .iter()
            .find(|a| a["dedup_key"] == key.as_str())
            .unwrap_or_else(|| panic!("no alert {key} in {alerts:#?}"))
    };
    let hardware = alert("hardware-high");
    assert_eq!(hardware["severity"], "critical");
    assert_eq!(hardware["custom"]["change_count"], 1);
    assert_eq!(
        hardware["custom"]["changes"][0]["path"],
        "/hardware/memory[serial=D2]"
    );
    assert_eq!(hardware["labels"]["rule"], "hardware-high");
    let os = alert("anything-os");
    assert_eq!(os["custom"]["changes"][0]["path"], "/os/version");
}

#[sqlx::test(migrations = "../migrations")]
async fn unreadable_stored_rules_stand_for_the_defaults_in_any_batch_size(pool: PgPool) {
    let system = System::new(&pool);
    let rules = InventoryRulesConfigured {
        ignored_paths: vec!["/network".into()],
        ..Default::default()
    };
    system.tenant_event(&rules).await;
    system
        .report(inventory("12.1", "10.0.1.5", &["D1"], 1))
        .await;
    // A rules event that does not parse (the command side would have refused it).
    let mut broken = NewEvent::new(system.tenant, &rules, Utc::now());
    broken.payload =
        json!({"path_rules": [{"pattern": "no slash", "category": "os", "severity": "high"}]});
    system
        .store
        .append(
            &StreamId::tenant(system.tenant),
            ExpectedVersion::Any,
            vec![broken],
        )
        .await
        .unwrap();
    system
        .report(inventory("12.1", "10.0.1.6", &["D1"], 2))
        .await;

    for batch_size in [1, 2, 100] {
        // Derived ids: whichever batch size ran first, every run must agree with it.
        sqlx::query("DELETE FROM projection_checkpoints WHERE projector = 'inventory_diff'")
            .execute(&pool)
            .await
            .unwrap();
        ReactorRunner::new(system.store.clone(), InventoryDiff::default(), batch_size)
            .catch_up()
            .await
            .unwrap();
        let diffs = system.diffs().await;
        assert_eq!(diffs.len(), 1, "batch size {batch_size}");
        assert_eq!(
            diffs[0].changes[0].path, "/network/interfaces[name=eth1]/ipv4",
            "the defaults, not the earlier rules that ignored /network"
        );
    }
    let parked = projections::checkpoint::parked(&pool, Some("inventory_diff"))
        .await
        .unwrap();
    assert!(parked.is_empty());
}

/// The reactions of `reactor` to the whole log, fed to it in batches of `batch_size` as the
/// runner does (load, react to each event, release), without appending them.
async fn reactions(pool: &PgPool, reactor: &InventoryDiff, batch_size: usize) -> Vec<(i64, Value)> {
    let filter = ReadFilter {
        event_types: reactor.event_types(),
        skip_payloads: false,
    };
    let events = read_range_on(pool, 0, None, 10_000, filter).await.unwrap();
    let mut out = Vec::new();
    for batch in events.chunks(batch_size) {
        let mut context = reactor.load(pool, batch).await.unwrap();
        for event in batch {
            for reaction in reactor.react(&mut context, event, Utc::now()).unwrap() {
                out.push((event.position, reaction.event.payload));
            }
        }
        reactor.release(batch.to_vec());
    }
    out
}

#[sqlx::test(migrations = "../migrations")]
async fn diffs_are_the_same_whatever_the_report_cache_holds(pool: PgPool) {
    let first = System::new(&pool);
    let systems: Vec<System> = (0..3)
        .map(|_| System {
            store: first.store.clone(),
            tenant: first.tenant,
            stream: StreamId::system(Uuid::now_v7()),
        })
        .collect();
    for round in 0..5u64 {
        for (index, system) in systems.iter().enumerate() {
            // The systems report in turn, one of them twice in a row now and then.
            let ip = format!("10.0.{index}.{}", round % 3);
            system
                .report(inventory(&format!("12.{round}"), &ip, &["D1"], round))
                .await;
            if index == 1 && round % 2 == 0 {
                system
                    .report(inventory(&format!("12.{round}"), &ip, &["D1", "D2"], round))
                    .await;
            }
        }
    }
    // Every previous report read from the log, one batch: what the reactor derives by definition.
    let expected = reactions(&pool, &InventoryDiff::with_cached_reports(0), 1000).await;
    assert_eq!(expected.len(), 3 * 4 + 3, "{expected:#?}");
    for (capacity, batch_size) in [(0, 1), (1, 1), (1, 2), (2, 3), (3, 1), (3, 4), (2048, 5)] {
        let reactor = InventoryDiff::with_cached_reports(capacity);
        let got = reactions(&pool, &reactor, batch_size).await;
        assert_eq!(
            got, expected,
            "capacity {capacity}, batch size {batch_size}"
        );
    }

    // The runner, loading each batch ahead while it reacts to the one before, appends the same.
    ReactorRunner::new(first.store.clone(), InventoryDiff::default(), 2)
        .catch_up()
        .await
        .unwrap();
    let appended: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE event_type = 'InventoryChanged' ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // Appends to different systems go concurrently: compare regardless of their interleaving.
    let sorted = |payloads: Vec<Value>| {
        let mut texts: Vec<String> = payloads.iter().map(Value::to_string).collect();
        texts.sort();
        texts
    };
    let expected = expected.into_iter().map(|(_, payload)| payload).collect();
    assert_eq!(sorted(appended), sorted(expected));
}
