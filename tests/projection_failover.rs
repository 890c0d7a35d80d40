//! Scale-out: `fleetlog project` processes share projectors through leases; when the one running
//! a projector dies (SIGKILL), another takes over from the checkpoint without loss or double-apply.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use command_side::event_store::{GroupCommitConfig, PgEventStore};
use sqlx::PgPool;
use tokio::process::{Child, Command};

fn spawn_worker(database_url: &str, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fleetlog"))
        .arg("project")
        .env("DATABASE_URL", database_url)
        .env("PROJECTION_BATCH_SIZE", "5")
        .env("PROJECTION_LEASE_TTL_MS", "600")
        .env("PROJECTION_HOLDER", name)
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the fleetlog binary starts")
}

async fn progress(pool: &PgPool) -> (i64, Option<String>) {
    sqlx::query_as(
        "SELECT coalesce((SELECT position FROM projection_checkpoints WHERE projector = 'event_type_counts'), 0), \
                (SELECT holder FROM projection_leases WHERE projector = 'event_type_counts' AND expires_at > now())",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_for(
    pool: &PgPool,
    what: &str,
    done: impl Fn(i64, &Option<String>) -> bool,
) -> (i64, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (position, holder) = progress(pool).await;
        if done(position, &holder) {
            return (position, holder);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} (at {position}, holder {holder:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[sqlx::test(migrator = "migrations::MIGRATOR")]
async fn three_project_processes_share_a_projector_and_survive_a_sigkill(pool: PgPool) {
    let store = PgEventStore::start(pool.clone(), GroupCommitConfig::default());
    support::append_heartbeats(&store, 400, 10, 20).await;
    let head = store.head_position().await.unwrap();
    assert_eq!(head, 4000);

    let url = support::database_url(&pool);
    let names = ["worker-0", "worker-1", "worker-2"];
    let mut workers: Vec<Child> = names.iter().map(|name| spawn_worker(&url, name)).collect();

    let (at_kill, holder) = wait_for(&pool, "a worker to make progress", |p, h| {
        p > 0 && h.is_some()
    })
    .await;
    let holder = holder.unwrap();
    assert!(
        at_kill < head,
        "the projector finished before it could be killed; make the history longer"
    );
    let victim = names
        .iter()
        .position(|n| *n == holder)
        .expect("the holder is one of ours");
    workers[victim].start_kill().unwrap(); // SIGKILL
    workers[victim].wait().await.unwrap();

    let (done, new_holder) = wait_for(&pool, "another worker to finish", |p, _| p == head).await;
    assert_eq!(done, head);
    let new_holder = new_holder.expect("a live worker holds the lease");
    assert_ne!(
        new_holder, holder,
        "the killed worker cannot hold the lease"
    );

    let counted: i64 = sqlx::query_scalar("SELECT sum(events)::bigint FROM event_type_counts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        counted, head,
        "every event counted exactly once across the takeover"
    );
    for worker in &mut workers {
        let _ = worker.start_kill();
    }
}
