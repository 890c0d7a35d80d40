//! `fleetlog bench ingest`: reports over HTTP keep-alive against a Fleetlog started in-process
//! (HTTP API, projectors and reactors, as `serve` runs them), next to raw `COPY` of the same rows.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use axum::body::Bytes;
use axum::http::{header, HeaderValue, Request, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::{Args, ValueEnum};
use command_side::event_store::PgEventStore;
use futures::future::try_join_all;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::append::{copy_baseline, percentile_ms};
use super::inventory::realistic_inventory;
use super::{progress, BenchRun, ScratchDatabase};
use crate::config::{
    AppendConfig, IngestConfig, InventoryConfig, LivenessConfig, NatsConfig, ProjectionConfig,
};
use crate::serve::Stop;

/// What the clients report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IngestKind {
    /// Heartbeats (a small JSON body).
    Heartbeat,
    /// ~20 KB inventory documents, every second one unchanged since the system's last report.
    Inventory,
}

/// Options of `fleetlog bench ingest`.
#[derive(Debug, Clone, Args)]
pub struct IngestBench {
    /// What to send.
    #[arg(long, value_enum, default_value_t = IngestKind::Heartbeat)]
    pub kind: IngestKind,
    /// Systems to register (N); each connection reports for its share of them in turn.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub systems: usize,
    /// Concurrent HTTP keep-alive connections (C).
    #[arg(long, short = 'c', default_value_t = 64)]
    pub connections: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Run without the projectors and reactors (only the HTTP API and the event store).
    #[arg(long)]
    pub no_projectors: bool,
    /// Where and how the bench runs.
    #[command(flatten)]
    pub run: BenchRun,
    /// Group commit settings.
    #[command(flatten)]
    pub append: AppendConfig,
    /// Projection settings (when the projectors run).
    #[command(flatten)]
    pub projection: ProjectionConfig,
    /// The liveness monitor, as `serve` runs it.
    #[command(flatten)]
    pub liveness: LivenessConfig,
    /// Inventory retention, as `serve` runs it.
    #[command(flatten)]
    pub inventory: InventoryConfig,
    /// The JetStream alert publisher runs when NATS_URL is set, as in `serve`.
    #[command(flatten)]
    pub nats: NatsConfig,
}

/// One registered system's credentials and, for inventory, its two documents.
struct Reporter {
    authorization: String,
    documents: Vec<Bytes>,
}

/// Runs the bench and prints its result.
pub async fn run(options: IngestBench) -> anyhow::Result<()> {
    let IngestBench {
        kind,
        systems,
        connections,
        duration_s,
        ..
    } = options;
    ensure!(
        systems > 0 && connections > 0 && duration_s > 0,
        "systems, connections and duration must be positive"
    );
    let scratch = ScratchDatabase::create(&options.run).await?;
    let store = PgEventStore::start(scratch.pool.clone(), options.append.group_commit());
    let admin_token = uuid::Uuid::new_v4().simple().to_string();
    let app = crate::http::app_with(
        store.clone(),
        admin_token.clone().into(),
        None,
        &IngestConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop_sender, stop) = Stop::manual();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.requested())
        .into_future(),
    );
    let projectors = (!options.no_projectors).then(|| {
        let (store, stop, options) = (store.clone(), stop.clone(), options.clone());
        let worker = options.projection.worker_options();
        tokio::spawn(async move {
            crate::serve::run_workers(
                store,
                worker,
                &options.liveness,
                &options.inventory,
                &options.nats,
                &stop,
            )
            .await
        })
    });

    eprintln!(
        "bench ingest: kind={kind:?} N={systems} C={connections} T={duration_s}s projectors and reactors={}",
        !options.no_projectors
    );
    let reporters = register(address, &admin_token, systems, kind).await?;

    // Warm-up: one report per system, so every key:secret is verified (argon2) once, as in a
    // fleet that has been running; the timed part measures the steady state.
    let warmup_started = Instant::now();
    drive(address, kind, &reporters, connections, None).await?;
    eprintln!(
        "warm-up: {} first reports (argon2 verification each) in {:.1} s",
        reporters.len(),
        warmup_started.elapsed().as_secs_f64()
    );

    let before = reports_stored(&scratch.pool).await?;
    let started = Instant::now();
    let mut latencies = drive(
        address,
        kind,
        &reporters,
        connections,
        Some(Duration::from_secs(duration_s)),
    )
    .await?;
    let elapsed = started.elapsed();
    let after = reports_stored(&scratch.pool).await?;
    ensure!(
        (after - before) as usize == latencies.len(),
        "accepted {} reports but stored {} events",
        latencies.len(),
        after - before
    );
    latencies.sort_unstable();

    let _ = stop_sender.send(true);
    server.await.context("server task")??;
    if let Some(projectors) = projectors {
        projectors.await.context("projector task")?;
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&scratch.pool)
        .await?;
    let copy_elapsed = copy_baseline(&scratch.pool, rows as usize).await?;
    drop(store);
    scratch.finish().await?;

    let accepted_per_s = latencies.len() as f64 / elapsed.as_secs_f64();
    let baseline_per_s = rows as f64 / copy_elapsed.as_secs_f64();
    let ratio = accepted_per_s / baseline_per_s;
    let (p50, p99) = (
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
    );
    let kind_name = match kind {
        IngestKind::Heartbeat => "heartbeat",
        IngestKind::Inventory => "inventory",
    };
    eprintln!(
        "ingest {kind_name}: {accepted_per_s:.0} accepted/s (p50 {p50:.2} ms, p99 {p99:.2} ms) over {} requests\nCOPY baseline: {baseline_per_s:.0} rows/s\nratio: {ratio:.3}",
        latencies.len()
    );
    if options.run.json {
        let line = json!({
            "bench": "ingest",
            "kind": kind_name,
            "systems": systems,
            "connections": connections,
            "duration_s": duration_s,
            "requests": latencies.len(),
            "accepted_per_s": accepted_per_s.round(),
            "p50_ms": p50,
            "p99_ms": p99,
            "baseline": "copy",
            "baseline_per_s": baseline_per_s.round(),
            "ratio": (ratio * 1000.0).round() / 1000.0,
        });
        println!("{line}");
    }
    Ok(())
}

/// Events the reports became (reactors append events of their own, such as inventory diffs).
async fn reports_stored(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM events \
         WHERE event_type IN ('HeartbeatReceived', 'InventoryReported', 'InventoryUnchanged')",
    )
    .fetch_one(pool)
    .await?)
}

/// One HTTP/1.1 keep-alive connection to the server under test: a thin client, so the bench
/// spends its CPU on Fleetlog rather than on itself.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Connection {
    async fn open(address: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            host: HeaderValue::from_str(&address.to_string())?,
        })
    }

    /// Sends one POST and returns the status and the body.
    async fn post(
        &mut self,
        path: &str,
        authorization: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let request = Request::post(path)
            .header(header::HOST, self.host.clone())
            .header(header::AUTHORIZATION, authorization)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Sends one POST that must answer `expected`, and returns the JSON body.
    async fn post_json(
        &mut self,
        path: &str,
        authorization: &str,
        body: &Value,
        expected: StatusCode,
    ) -> anyhow::Result<Value> {
        let (status, body) = self
            .post(path, authorization, Bytes::from(body.to_string()))
            .await?;
        ensure!(
            status == expected,
            "POST {path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(serde_json::from_slice(&body)?)
    }
}

/// Creates a tenant and a token, then registers `systems` systems through the API.
async fn register(
    address: SocketAddr,
    admin_token: &str,
    systems: usize,
    kind: IngestKind,
) -> anyhow::Result<Vec<Reporter>> {
    let mut admin = Connection::open(address).await?;
    let admin_auth = format!("Bearer {admin_token}");
    let tenant = admin
        .post_json(
            "/api/admin/tenants",
            &admin_auth,
            &json!({"name": "bench"}),
            StatusCode::CREATED,
        )
        .await?;
    let tenant_id = tenant["tenant_id"]
        .as_str()
        .context("tenant id")?
        .to_owned();
    let token = admin
        .post_json(
            &format!("/api/admin/tenants/{tenant_id}/tokens"),
            &admin_auth,
            &json!({"name": "bench"}),
            StatusCode::CREATED,
        )
        .await?;
    let token_auth = format!("Bearer {}", token["token"].as_str().context("token")?);
    let bar = progress(systems as u64, "register");
    let chunks: Vec<Vec<usize>> = (0..systems)
        .collect::<Vec<_>>()
        .chunks(systems.div_ceil(16))
        .map(<[usize]>::to_vec)
        .collect();
    let registered = try_join_all(chunks.into_iter().map(|chunk| {
        let (token_auth, bar) = (token_auth.clone(), bar.clone());
        async move {
            let mut connection = Connection::open(address).await?;
            let mut out = Vec::with_capacity(chunk.len());
            for i in chunk {
                let credentials = connection
                    .post_json(
                        "/api/systems",
                        &token_auth,
                        &json!({"name": format!("srv-{i:05}")}),
                        StatusCode::CREATED,
                    )
                    .await?;
                let key = credentials["system_key"].as_str().context("system key")?;
                let secret = credentials["secret"].as_str().context("secret")?;
                let authorization = format!("Basic {}", STANDARD.encode(format!("{key}:{secret}")));
                let documents = match kind {
                    IngestKind::Heartbeat => vec![Bytes::from(
                        json!({"agent_version": "fleetlog-bench/1"}).to_string(),
                    )],
                    IngestKind::Inventory => (0..2u32)
                        .map(|revision| {
                            Bytes::from(
                                json!({"data": realistic_inventory(i as u64, revision)})
                                    .to_string(),
                            )
                        })
                        .collect(),
                };
                out.push(Reporter {
                    authorization,
                    documents,
                });
                bar.inc(1);
            }
            anyhow::Ok(out)
        }
    }))
    .await?;
    bar.finish_and_clear();
    Ok(registered.into_iter().flatten().collect())
}

/// Sends reports from `connections` keep-alive connections: each connection reports for its
/// share of the systems in turn. With `duration`, until it has passed; without, one report per
/// system. Returns every request's latency. Any answer but 202 fails the bench.
async fn drive(
    address: SocketAddr,
    kind: IngestKind,
    reporters: &[Reporter],
    connections: usize,
    duration: Option<Duration>,
) -> anyhow::Result<Vec<Duration>> {
    let path = match kind {
        IngestKind::Heartbeat => "/api/systems/heartbeat",
        IngestKind::Inventory => "/api/systems/inventory",
    };
    let connections = connections.min(reporters.len());
    let bar = progress(
        duration.map_or(reporters.len() as u64, |d| d.as_secs()),
        if duration.is_some() {
            "seconds"
        } else {
            "warm-up"
        },
    );
    let deadline = duration.map(|d| Instant::now() + d);
    let ticker = deadline.map(|_| {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.inc(1);
            }
        })
    });
    let per_connection = try_join_all((0..connections).map(|c| {
        let bar = bar.clone();
        let mine: Vec<&Reporter> = reporters.iter().skip(c).step_by(connections).collect();
        async move {
            let mut connection = Connection::open(address).await?;
            let mut latencies = Vec::new();
            let mut round = 0usize;
            loop {
                for reporter in &mine {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return anyhow::Ok(latencies);
                    }
                    // Inventory: documents A, A, B, B, A, ...: every second report is unchanged.
                    let document = &reporter.documents[(round / 2) % reporter.documents.len()];
                    let started = Instant::now();
                    let (status, body) = connection
                        .post(path, &reporter.authorization, document.clone())
                        .await?;
                    ensure!(
                        status == StatusCode::ACCEPTED,
                        "a report got {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                    latencies.push(started.elapsed());
                    if deadline.is_none() {
                        bar.inc(1);
                    }
                }
                round += 1;
                if deadline.is_none() {
                    return Ok(latencies);
                }
            }
        }
    }))
    .await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    bar.finish_and_clear();
    Ok(per_connection?.into_iter().flatten().collect())
}
