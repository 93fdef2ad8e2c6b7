//! Each `serve`'s cache of who a credential is, so that a request is
//! authenticated without a database round trip.
//!
//! A revoke or a sign-out bumps `staff_epoch` in its transaction; every
//! `serve` polls it every [`POLL`] and drops its cache when it moved. While
//! the poll fails the cache is not trusted (each request asks the
//! database), so a revoke is never missed for longer than [`POLL`] plus
//! one poll's time, on any replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{store, Principal};
use crate::db::{self, DbError, DbPool};

/// How often the epoch is polled.
pub const POLL: Duration = Duration::from_millis(250);
/// How long an entry is used without asking again (a belt to the epoch's
/// braces).
const ENTRY_TTL: Duration = Duration::from_secs(60);
/// How long a good poll makes the cache trusted.
const TRUST: Duration = Duration::from_millis(750);
/// Entries kept at most; beyond, the cache starts over.
const MAX_ENTRIES: usize = 10_000;

/// What kind of credential a hash is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    Token,
    Session,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<(Credential, [u8; 32]), (Option<Principal>, Instant)>,
    epoch: Option<i64>,
    trusted_until: Option<Instant>,
}

/// Principals by credential hash.
#[derive(Default)]
pub struct PrincipalCache {
    inner: Mutex<Inner>,
}

impl PrincipalCache {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Who `hash` (a credential of kind `kind`) is; `None` for an unknown,
    /// revoked or ended one.
    pub async fn resolve(
        &self,
        pool: &DbPool,
        kind: Credential,
        hash: [u8; 32],
    ) -> Result<Option<Principal>, DbError> {
        if let Some(hit) = self.cached(kind, &hash) {
            return Ok(hit);
        }
        let found = db::unit(pool, move |c| match kind {
            Credential::Token => store::by_token(c, &hash),
            Credential::Session => store::by_session(c, &hash),
        })
        .await?;
        let mut inner = self.lock();
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner
            .entries
            .insert((kind, hash), (found.clone(), Instant::now()));
        Ok(found)
    }

    fn cached(&self, kind: Credential, hash: &[u8; 32]) -> Option<Option<Principal>> {
        let inner = self.lock();
        let trusted = inner.trusted_until.is_some_and(|t| Instant::now() < t);
        let (who, at) = inner.entries.get(&(kind, *hash))?;
        (trusted && at.elapsed() < ENTRY_TTL).then(|| who.clone())
    }

    /// Forgets the entry of one credential now (this replica's own revoke
    /// or sign-out; the others see the epoch move).
    pub fn forget(&self, kind: Credential, hash: &[u8; 32]) {
        self.lock().entries.remove(&(kind, *hash));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it cannot leave the map half-written in a
        // way that matters: at worst an entry is missing.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one poll's answer: the epoch, or the failure to read it.
    fn polled(&self, epoch: Result<i64, DbError>) {
        let mut inner = self.lock();
        match epoch {
            Ok(n) => {
                if inner.epoch != Some(n) {
                    inner.entries.clear();
                    inner.epoch = Some(n);
                }
                inner.trusted_until = Some(Instant::now() + TRUST);
            }
            Err(_) => {
                inner.entries.clear();
                inner.trusted_until = None;
            }
        }
    }

    /// Polls the epoch until the process stops.
    pub async fn watch(self: Arc<Self>, pool: DbPool) {
        let mut tick = actix_rt::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let epoch = db::unit(&pool, store::epoch).await;
            if let Err(e) = &epoch {
                tracing::debug!(error = %e, "staff epoch not read; credentials are checked in the database");
            }
            self.polled(epoch);
        }
    }
}
