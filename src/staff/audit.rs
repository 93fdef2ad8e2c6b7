//! The audit trail: one entry for every changing ops request, refused ones
//! included, written in the transaction of its change where it has one.
//!
//! The gate hands a changing request's handler an [`Audit`]. The handler
//! runs its change through [`Audit::run`], which acts as the request's
//! actor (so the order events the change writes carry it) and writes the
//! success entry in the same transaction. Whatever no handler wrote (a
//! refusal, a failure, a change outside PostgreSQL) the gate writes after
//! the response, from its status.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use diesel::pg::PgConnection;
use diesel::prelude::*;

use super::store::{self, AuditRow};
use crate::db::events::act_as;
use crate::db::DbError;
use crate::domain::actor::Actor;
use crate::domain::status::text_enum;

text_enum! {
    /// How a changing request ended: `succeeded` (2xx, the change was
    /// made), `refused` (403: the principal may not, or a cookie request
    /// from another origin), `failed` (any other answer: nothing changed).
    Outcome {
        Succeeded => "succeeded",
        Refused => "refused",
        Failed => "failed",
    }
}

impl Outcome {
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Succeeded,
            401 | 403 => Outcome::Refused,
            _ => Outcome::Failed,
        }
    }
}

/// One changing ops request's audit: who, what, on what, from where.
#[derive(Debug, Clone)]
pub struct Audit {
    inner: Arc<Request>,
}

#[derive(Debug)]
struct Request {
    actor: Actor,
    action: &'static str,
    target: Mutex<Option<String>>,
    request_id: Option<String>,
    client_ip: Option<String>,
    written: AtomicBool,
}

impl Audit {
    pub fn new(
        actor: Actor,
        action: &'static str,
        target: Option<String>,
        request_id: Option<String>,
        client_ip: Option<String>,
    ) -> Audit {
        Audit {
            inner: Arc::new(Request {
                actor,
                action,
                target: Mutex::new(target),
                request_id,
                client_ip,
                written: AtomicBool::new(false),
            }),
        }
    }

    /// The audit of `req`, acting as `actor`: with its request id and the
    /// client's address.
    pub fn of_request(
        req: &actix_web::HttpRequest,
        actor: Actor,
        action: &'static str,
        target: Option<String>,
    ) -> Audit {
        use actix_web::HttpMessage as _;
        let request_id = req
            .extensions()
            .get::<actix_request_identifier::RequestId>()
            .map(|id| id.as_str().to_owned());
        let client_ip = req.peer_addr().map(|a| a.ip().to_string());
        Audit::new(actor, action, target, request_id, client_ip)
    }

    pub fn actor(&self) -> &Actor {
        &self.inner.actor
    }

    /// Names the target when the path does not (a created product's sku).
    pub fn set_target(&self, target: impl Into<String>) {
        *self.target_slot() = Some(target.into());
    }

    fn target_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.inner.target.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn target(&self) -> Option<String> {
        self.target_slot().clone()
    }

    /// Whether a handler wrote this request's entry.
    pub fn written(&self) -> bool {
        self.inner.written.load(Ordering::Acquire)
    }

    /// Runs `change` in one transaction as this request's actor; when it
    /// answers `Ok(Ok(_))` the success entry is written in that transaction.
    pub fn run<T, R>(
        &self,
        conn: &mut PgConnection,
        change: impl FnOnce(&mut PgConnection) -> Result<Result<T, R>, DbError>,
    ) -> Result<Result<T, R>, DbError> {
        let target = self.target();
        self.run_on(conn, target, change)
    }

    /// [`Audit::run`] for a change that has no refusal.
    pub fn apply<T>(
        &self,
        conn: &mut PgConnection,
        change: impl FnOnce(&mut PgConnection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let done = self.run(conn, |c| change(c).map(Ok::<T, std::convert::Infallible>))?;
        Ok(match done {
            Ok(v) => v,
            Err(never) => match never {},
        })
    }

    /// [`Audit::run`] for one of the request's targets (a bulk action's id).
    pub fn run_on<T, R>(
        &self,
        conn: &mut PgConnection,
        target: Option<String>,
        change: impl FnOnce(&mut PgConnection) -> Result<Result<T, R>, DbError>,
    ) -> Result<Result<T, R>, DbError> {
        let done = conn.transaction(|conn| {
            act_as(conn, &self.inner.actor)?;
            let done = change(conn)?;
            if done.is_ok() {
                self.write(conn, target, Outcome::Succeeded)?;
            }
            Ok::<_, DbError>(done)
        })?;
        if done.is_ok() {
            self.inner.written.store(true, Ordering::Release);
        }
        Ok(done)
    }

    /// Writes an entry for `target` with `outcome` (a bulk action's refused
    /// id, or the gate's entry after the response).
    pub fn record(
        &self,
        conn: &mut PgConnection,
        target: Option<String>,
        outcome: Outcome,
    ) -> Result<(), DbError> {
        self.write(conn, target, outcome)?;
        self.inner.written.store(true, Ordering::Release);
        Ok(())
    }

    /// The gate's entry: for the request's own target.
    pub fn record_request(&self, conn: &mut PgConnection, outcome: Outcome) -> Result<(), DbError> {
        let target = self.target();
        self.record(conn, target, outcome)
    }

    fn write(
        &self,
        conn: &mut PgConnection,
        target: Option<String>,
        outcome: Outcome,
    ) -> Result<(), DbError> {
        let r = &self.inner;
        store::insert_audit(
            conn,
            &AuditRow {
                at: chrono::Utc::now(),
                actor_type: r.actor.kind,
                actor_name: r.actor.name.clone(),
                action: r.action.into(),
                target,
                request_id: r.request_id.clone(),
                client_ip: r.client_ip.clone(),
                outcome,
            },
        )
    }
}

impl actix_web::FromRequest for Audit {
    type Error = crate::error::ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage as _;
        std::future::ready(req.extensions().get::<Audit>().cloned().ok_or_else(|| {
            crate::error::ApiError::Unexpected(anyhow::anyhow!(
                "no audit for {} {}: the route is not a change in staff::rules",
                req.method(),
                req.path()
            ))
        }))
    }
}
