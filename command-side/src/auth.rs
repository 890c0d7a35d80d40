//! Who is calling: the administrator, a tenant (API token) or a system (HTTP Basic).
//!
//! Systems send heartbeats every minute, thousands at a time, and an argon2 verification costs
//! tens of milliseconds of CPU. So [`SystemAuthenticator`] verifies a `key:secret` pair once and
//! then remembers that this exact pair verified, under an HMAC of the pair with a per-process
//! random key (never the secret itself). The memory ends at rotation, pause, resume or
//! decommission (announced on [`CREDENTIALS_CHANNEL`](crate::registry::CREDENTIALS_CHANNEL), so
//! every process forgets at once), or after a TTL. A wrong key and a wrong secret give the same
//! 401 after the same work; repeated failures for one key from one client are refused for a
//! growing while.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use events_schema::{SystemKind, TenantId};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::credentials::{self, SystemKey};
use crate::error::{Challenge, CommandError};
use crate::registry::{self, SystemRecord, SystemStatus, CREDENTIALS_CHANNEL};

/// A system or gateway whose credentials verified: what handlers may rely on. Everything here
/// comes from Fleetlog's own records, never from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedSystem {
    /// Its id.
    pub system_id: Uuid,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its key.
    pub system_key: String,
    /// Server or gateway.
    pub kind: SystemKind,
}

/// Failed verifications before a key is refused for a while.
const FREE_FAILURES: u32 = 5;
/// Longest refusal after repeated failures.
const MAX_LOCKOUT: Duration = Duration::from_secs(300);
/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(900);
/// Most (client, key) pairs whose failures are remembered; beyond it stale records are dropped.
const MAX_FAILURE_RECORDS: usize = 100_000;
/// How long a request waits, at start-up or after a lost connection, for the change feed before
/// it is verified without being remembered.
const LISTEN_WAIT: Duration = Duration::from_secs(2);
/// How long a request waits for a verification slot before it gets 503.
const VERIFICATION_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Whose failures are counted together: a client address (when known) and a well-formed key.
type Throttle = (Option<IpAddr>, String);

#[derive(Debug, Clone)]
struct Verified {
    system: AuthenticatedSystem,
    status: SystemStatus,
    at: Instant,
}

#[derive(Debug, Default)]
struct Cache {
    /// HMAC(key, secret) of a verified pair → what it verified as.
    verified: HashMap<[u8; 32], Verified>,
    /// System key → the pair HMACs cached for it, to forget them on a change.
    by_key: HashMap<String, Vec<[u8; 32]>>,
    /// System key → how often it was forgotten; a verification that started before a change
    /// must not be remembered after it.
    generations: HashMap<String, u64>,
    /// Bumped when everything is forgotten.
    epoch: u64,
}

impl Cache {
    fn generation(&self, system_key: &str) -> (u64, u64) {
        (
            self.epoch,
            self.generations.get(system_key).copied().unwrap_or(0),
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first_at: Instant,
    refused_until: Option<Instant>,
}

/// Verifies system credentials, remembering verified pairs (see the module docs).
pub struct SystemAuthenticator {
    pool: PgPool,
    pair_key: [u8; 32],
    ttl: Duration,
    cache: RwLock<Cache>,
    failures: Mutex<HashMap<Throttle, Failures>>,
    /// Bounds the CPU that argon2 verifications may take at once.
    verifications: Arc<Semaphore>,
    /// Verified against when the key is unknown, so an unknown key costs the same as a wrong
    /// secret. Made on first use: hashing takes a while.
    decoy_hash: std::sync::OnceLock<String>,
    /// Whether [`follow_changes`](Self::follow_changes) is listening; nothing is remembered
    /// while it is not, since a change could go unnoticed.
    listening: watch::Sender<bool>,
}

impl SystemAuthenticator {
    /// An authenticator over the registry in `pool`; verified pairs are remembered for `ttl`.
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        let mut pair_key = [0u8; 32];
        rand::rng().fill_bytes(&mut pair_key);
        // Half the cores at most, so verifications never take all CPU from the requests.
        let parallel = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        Self {
            pool,
            pair_key,
            ttl,
            cache: RwLock::default(),
            failures: Mutex::default(),
            verifications: Arc::new(Semaphore::new(parallel)),
            decoy_hash: std::sync::OnceLock::new(),
            listening: watch::Sender::new(false),
        }
    }

    /// Checks `key:secret` and the system's status. 401 for any wrong credential, 429 while a
    /// client is refused after repeated failures for this key, 403 for a paused or decommissioned
    /// system, 503 when too many verifications are waiting. `client` is the caller's address:
    /// failures are counted per client and key, so a stranger who knows a key (keys are not
    /// secret) cannot lock the real agent out.
    pub async fn authenticate(
        &self,
        client: Option<IpAddr>,
        key: &str,
        secret: &str,
    ) -> Result<AuthenticatedSystem, CommandError> {
        self.until_listening().await;
        let pair = self.pair_hmac(key, secret);
        if let Some(hit) = self.cached(&pair) {
            metrics::counter!("fleetlog_auth_total", "result" => "cache_hit").increment(1);
            return admit(hit.system, hit.status);
        }
        // The key format is public: a malformed key is refused without hashing or remembering.
        let Some(system_key) = SystemKey::parse(key) else {
            metrics::counter!("fleetlog_auth_total", "result" => "failed").increment(1);
            return Err(CommandError::Unauthorized(Challenge::Basic));
        };
        let throttle = (client, system_key.as_str().to_owned());
        self.check_not_refused(&throttle)?;
        let permit = tokio::time::timeout(
            VERIFICATION_QUEUE_WAIT,
            self.verifications.clone().acquire_owned(),
        )
        .await
        .map_err(|_| CommandError::Unavailable)?
        .map_err(|_| CommandError::Unavailable)?;
        let generation = self.generation(system_key.as_str());
        let record = registry::system_by_key(&self.pool, system_key.as_str()).await?;
        let hash = record.as_ref().map(|r| r.secret_hash.clone());
        let verified = self.verify(permit, secret.to_owned(), hash).await?;
        let record = match record {
            Some(record) if verified => record,
            _ => {
                metrics::counter!("fleetlog_auth_total", "result" => "failed").increment(1);
                self.record_failure(throttle);
                return Err(CommandError::Unauthorized(Challenge::Basic));
            }
        };
        metrics::counter!("fleetlog_auth_total", "result" => "verified").increment(1);
        self.failures
            .lock()
            .expect("not poisoned")
            .remove(&throttle);
        if self.generation(system_key.as_str()) != generation {
            // The system changed while its secret was being verified: judge by what is stored now.
            return match registry::system_by_key(&self.pool, system_key.as_str()).await? {
                Some(now) if now.secret_hash == record.secret_hash => {
                    admit(identity(&now), now.status)
                }
                _ => Err(CommandError::Unauthorized(Challenge::Basic)),
            };
        }
        let system = identity(&record);
        self.remember(pair, &record, generation, system.clone(), record.status);
        admit(system, record.status)
    }

    /// Forgets every verified pair of this system (its credentials or status changed).
    pub fn forget(&self, system_key: &str) {
        let mut cache = self.cache.write().expect("not poisoned");
        *cache.generations.entry(system_key.to_owned()).or_default() += 1;
        if let Some(pairs) = cache.by_key.remove(system_key) {
            for pair in pairs {
                cache.verified.remove(&pair);
            }
        }
    }

    /// Forgets every verified pair (the change feed was interrupted, so changes may be missed).
    pub fn forget_all(&self) {
        let mut cache = self.cache.write().expect("not poisoned");
        cache.verified.clear();
        cache.by_key.clear();
        cache.generations.clear();
        cache.epoch += 1;
    }

    /// Follows [`CREDENTIALS_CHANNEL`] until the process ends, forgetting each announced system.
    /// After a lost connection it forgets everything, since announcements may have been missed.
    pub async fn follow_changes(self: Arc<Self>) {
        loop {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => match listener.listen(CREDENTIALS_CHANNEL).await {
                    Ok(()) => {
                        // Only now may verified pairs be remembered: from here on, every change
                        // reaches this process.
                        self.listening.send_replace(true);
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(notification)) => self.forget(notification.payload()),
                                // The connection was lost: announcements may have been missed.
                                Ok(None) => break,
                                Err(error) => {
                                    tracing::warn!(%error, "credential change feed failed");
                                    break;
                                }
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot listen for credential changes"),
                },
                Err(error) => tracing::warn!(%error, "cannot connect for credential changes"),
            }
            self.listening.send_replace(false);
            self.forget_all();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits (briefly) until the change feed listens, so that a pair verified now may be
    /// remembered; without the feed, requests are still served, just verified every time.
    async fn until_listening(&self) {
        if *self.listening.borrow() {
            return;
        }
        let mut listening = self.listening.subscribe();
        let _ = tokio::time::timeout(LISTEN_WAIT, listening.wait_for(|listening| *listening)).await;
    }

    fn generation(&self, system_key: &str) -> (u64, u64) {
        self.cache
            .read()
            .expect("not poisoned")
            .generation(system_key)
    }

    fn pair_hmac(&self, key: &str, secret: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.pair_key).expect("any key length works");
        mac.update(key.trim().to_ascii_uppercase().as_bytes());
        mac.update(b"\0");
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn cached(&self, pair: &[u8; 32]) -> Option<Verified> {
        let cache = self.cache.read().expect("not poisoned");
        cache
            .verified
            .get(pair)
            .filter(|v| v.at.elapsed() < self.ttl)
            .cloned()
    }

    fn remember(
        &self,
        pair: [u8; 32],
        record: &SystemRecord,
        generation: (u64, u64),
        system: AuthenticatedSystem,
        status: SystemStatus,
    ) {
        if !*self.listening.borrow() {
            return;
        }
        let mut cache = self.cache.write().expect("not poisoned");
        if cache.generation(&record.system_key) != generation {
            // The system changed while its secret was being verified: do not remember.
            return;
        }
        let verified = Verified {
            system,
            status,
            at: Instant::now(),
        };
        if cache.verified.insert(pair, verified).is_none() {
            cache
                .by_key
                .entry(record.system_key.clone())
                .or_default()
                .push(pair);
        }
        metrics::gauge!("fleetlog_auth_cache_entries").set(cache.verified.len() as f64);
    }

    /// Verifies `secret` against `hash`, or against the decoy when there is no hash (so the
    /// answer takes as long, and is `false`). The permit goes with the work onto the blocking
    /// thread: a client that disconnects cannot free it while the hash still runs.
    async fn verify(
        &self,
        permit: OwnedSemaphorePermit,
        secret: String,
        hash: Option<String>,
    ) -> Result<bool, CommandError> {
        let decoy = self.decoy_hash.get().cloned();
        let (verified, made) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match (hash, decoy) {
                (Some(hash), _) => (credentials::verify_secret(&secret, &hash), None),
                (None, Some(decoy)) => {
                    credentials::verify_secret(&secret, &decoy);
                    (false, None)
                }
                (None, None) => {
                    let decoy = credentials::hash_secret(&credentials::generate_secret());
                    credentials::verify_secret(&secret, &decoy);
                    (false, Some(decoy))
                }
            }
        })
        .await
        .map_err(CommandError::internal)?;
        if let Some(decoy) = made {
            let _ = self.decoy_hash.set(decoy);
        }
        Ok(verified)
    }

    fn check_not_refused(&self, throttle: &Throttle) -> Result<(), CommandError> {
        let failures = self.failures.lock().expect("not poisoned");
        match failures.get(throttle).and_then(|f| f.refused_until) {
            Some(until) if until > Instant::now() => Err(CommandError::TooManyFailures {
                retry_after_s: (until - Instant::now()).as_secs().max(1),
            }),
            _ => Ok(()),
        }
    }

    fn record_failure(&self, throttle: Throttle) {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("not poisoned");
        if failures.len() >= MAX_FAILURE_RECORDS {
            failures.retain(|_, f| now.duration_since(f.first_at) < FAILURE_WINDOW);
            if failures.len() >= MAX_FAILURE_RECORDS {
                // Keep the refusals still running; forget finished ones.
                failures.retain(|_, f| f.refused_until.is_some_and(|until| until > now));
            }
        }
        let entry = failures.entry(throttle).or_insert(Failures {
            count: 0,
            first_at: now,
            refused_until: None,
        });
        if now.duration_since(entry.first_at) > FAILURE_WINDOW {
            *entry = Failures {
                count: 0,
                first_at: now,
                refused_until: None,
            };
        }
        entry.count += 1;
        entry.refused_until = lockout(entry.count).map(|d| now + d);
    }
}

/// How long a key is refused after `failures` consecutive failures: nothing for the first few,
/// then doubling from one second up to [`MAX_LOCKOUT`].
pub fn lockout(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(FREE_FAILURES)?;
    let seconds = 1u64.checked_shl(over).unwrap_or(u64::MAX);
    Some(Duration::from_secs(seconds).min(MAX_LOCKOUT))
}

fn identity(record: &SystemRecord) -> AuthenticatedSystem {
    AuthenticatedSystem {
        system_id: record.system_id,
        tenant_id: record.tenant_id,
        system_key: record.system_key.clone(),
        kind: record.kind,
    }
}

fn admit(
    system: AuthenticatedSystem,
    status: SystemStatus,
) -> Result<AuthenticatedSystem, CommandError> {
    match status {
        SystemStatus::Active => Ok(system),
        SystemStatus::Paused => Err(CommandError::forbidden(
            "system_paused",
            "this system is paused; its reports are refused until it is resumed",
        )),
        SystemStatus::Decommissioned => Err(CommandError::forbidden(
            "system_decommissioned",
            "this system is decommissioned",
        )),
    }
}

/// Splits an `Authorization: Basic base64(key:secret)` header value.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (key, secret) = text.split_once(':')?;
    Some((key.to_owned(), secret.to_owned()))
}

/// The token of an `Authorization: Bearer ...` header value.
pub fn parse_bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Compares secrets without leaking, through timing, how long a matching prefix was.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_failures_are_free_then_the_refusal_doubles_up_to_a_cap() {
        assert_eq!(lockout(1), None);
        assert_eq!(lockout(FREE_FAILURES - 1), None);
        assert_eq!(lockout(FREE_FAILURES), Some(Duration::from_secs(1)));
        assert_eq!(lockout(FREE_FAILURES + 3), Some(Duration::from_secs(8)));
        assert_eq!(lockout(FREE_FAILURES + 40), Some(MAX_LOCKOUT));
        assert_eq!(lockout(u32::MAX), Some(MAX_LOCKOUT));
    }

    #[test]
    fn only_identical_secrets_compare_equal() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        // "FL-AAAA-BBBB-CCCC:s:e" in base64.
        use base64::Engine as _;
        let header = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode("FL-AAAA-BBBB-CCCC:s:e")
        );
        assert_eq!(
            parse_basic(&header),
            Some(("FL-AAAA-BBBB-CCCC".into(), "s:e".into()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_bearer("bearer  tok "), Some("tok"));
    }
}
