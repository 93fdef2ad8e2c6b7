//! The knobs every simulator shares (latency ± jitter, failures, hangs),
//! the seeded dice that apply them, and `/_sim/config` / `/_sim/load`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Behaviour knobs of one simulator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Knobs {
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Share of calls (0–1) answered with `failure_status`.
    pub failure_rate: f64,
    pub failure_status: u16,
    /// Share of calls (0–1) that never answer.
    pub hang_rate: f64,
    /// Whether a POST that fails or hangs first does what it was asked (a
    /// partner that commits, then crashes or stalls before it answers).
    pub after_effect: bool,
    /// `Retry-After` seconds of a 429.
    pub retry_after_secs: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            latency_ms: 0,
            jitter_ms: 0,
            failure_rate: 0.0,
            failure_status: 503,
            hang_rate: 0.0,
            after_effect: false,
            retry_after_secs: 1,
        }
    }
}

/// A partial update of [`Knobs`], the body of `POST /_sim/config`.
#[derive(Debug, Default, Deserialize)]
pub struct KnobsPatch {
    pub latency_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
    pub failure_rate: Option<f64>,
    pub failure_status: Option<u16>,
    pub hang_rate: Option<f64>,
    pub after_effect: Option<bool>,
    pub retry_after_secs: Option<u64>,
}

/// Knobs plus the seeded random source, shared by one simulator's workers.
pub struct Chaos {
    knobs: RwLock<Knobs>,
    rng: Mutex<StdRng>,
    /// Calls being answered now (inside their latency), and the most seen
    /// at once since the last `GET /_sim/load?reset=true`.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts one call in flight until dropped.
struct InFlight<'a>(&'a Chaos);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the chaos layer decided for one call.
enum Fate {
    Proceed,
    Fail(u16),
    Hang,
}

impl Chaos {
    pub fn new(knobs: Knobs, seed: u64) -> Self {
        Chaos {
            knobs: RwLock::new(knobs),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// The most calls this simulator answered at once since the last reset.
    fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Starts a new measurement of [`Chaos::max_in_flight`].
    fn reset_max_in_flight(&self) {
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    pub fn knobs(&self) -> Knobs {
        self.knobs.read().map(|k| k.clone()).unwrap_or_default()
    }

    pub fn set(&self, patch: &KnobsPatch) -> Result<Knobs, String> {
        let mut k = self.knobs.write().map_err(|_| "lock poisoned".to_owned())?;
        let mut next = k.clone();
        if let Some(v) = patch.latency_ms {
            next.latency_ms = v;
        }
        if let Some(v) = patch.jitter_ms {
            next.jitter_ms = v;
        }
        if let Some(v) = patch.failure_rate {
            next.failure_rate = v;
        }
        if let Some(v) = patch.failure_status {
            next.failure_status = v;
        }
        if let Some(v) = patch.hang_rate {
            next.hang_rate = v;
        }
        if let Some(v) = patch.after_effect {
            next.after_effect = v;
        }
        if let Some(v) = patch.retry_after_secs {
            next.retry_after_secs = v;
        }
        if !(0.0..=1.0).contains(&next.failure_rate) || !(0.0..=1.0).contains(&next.hang_rate) {
            return Err("rates must be between 0 and 1".into());
        }
        if !(400..=599).contains(&next.failure_status) {
            return Err("failure_status must be a 4xx or 5xx status".into());
        }
        *k = next.clone();
        Ok(next)
    }

    fn decide(&self) -> (Duration, Fate, Knobs) {
        let k = self.knobs();
        let Ok(mut rng) = self.rng.lock() else {
            return (Duration::ZERO, Fate::Proceed, k);
        };
        let jitter = if k.jitter_ms > 0 {
            rng.random_range(0..=2 * k.jitter_ms)
        } else {
            0
        };
        let delay = (k.latency_ms + jitter).saturating_sub(k.jitter_ms);
        let roll: f64 = rng.random();
        let fate = if roll < k.hang_rate {
            Fate::Hang
        } else if roll < k.hang_rate + k.failure_rate {
            Fate::Fail(k.failure_status)
        } else {
            Fate::Proceed
        };
        (Duration::from_millis(delay), fate, k)
    }

    /// Waits the configured latency; returns a failure response if this call
    /// is to fail, and never returns if it is to hang.
    pub async fn apply(&self) -> Option<HttpResponse> {
        self.answer(None::<fn() -> HttpResponse>).await
    }

    /// As [`Chaos::apply`] for a call with an effect (a POST): `effect`
    /// runs when the call proceeds, and also before its failure or hang when
    /// `after_effect` is set.
    pub async fn around(&self, effect: impl FnOnce() -> HttpResponse) -> HttpResponse {
        match self.answer(Some(effect)).await {
            Some(resp) => resp,
            None => HttpResponse::InternalServerError().finish(),
        }
    }

    async fn answer(&self, effect: Option<impl FnOnce() -> HttpResponse>) -> Option<HttpResponse> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _counted = InFlight(self);
        let (delay, fate, knobs) = self.decide();
        if !delay.is_zero() {
            actix_rt::time::sleep(delay).await;
        }
        let proceeds = matches!(fate, Fate::Proceed);
        let done = match effect {
            Some(effect) if proceeds || knobs.after_effect => Some(effect()),
            _ => None,
        };
        match fate {
            Fate::Proceed => done,
            Fate::Hang => {
                std::future::pending::<()>().await;
                None
            }
            Fate::Fail(status) => {
                let code = actix_web::http::StatusCode::from_u16(status)
                    .unwrap_or(actix_web::http::StatusCode::SERVICE_UNAVAILABLE);
                let mut b = HttpResponse::build(code);
                if status == 429 {
                    b.insert_header(("Retry-After", knobs.retry_after_secs.to_string()));
                }
                Some(
                    b.json(json!({"error": {"type": "api_error", "message": "simulated failure"}})),
                )
            }
        }
    }
}

#[derive(Deserialize)]
struct LoadQuery {
    #[serde(default)]
    reset: bool,
}

/// `GET /_sim/load`: calls in flight now and the most at once so far
/// (`?reset=true` starts a new maximum after reading it).
async fn get_load(chaos: web::Data<Chaos>, q: web::Query<LoadQuery>) -> HttpResponse {
    let body = json!({"in_flight": chaos.in_flight.load(Ordering::SeqCst), "max_in_flight": chaos.max_in_flight()});
    if q.reset {
        chaos.reset_max_in_flight();
    }
    HttpResponse::Ok().json(body)
}

async fn get_config(chaos: web::Data<Chaos>) -> HttpResponse {
    HttpResponse::Ok().json(chaos.knobs())
}

async fn set_config(chaos: web::Data<Chaos>, body: web::Json<KnobsPatch>) -> HttpResponse {
    match chaos.set(&body) {
        Ok(k) => HttpResponse::Ok().json(k),
        Err(e) => HttpResponse::UnprocessableEntity()
            .json(json!({"error": {"code": "validation_failed", "message": e}})),
    }
}

/// Mounts `GET/POST /_sim/config`.
pub fn control_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sim/load", web::get().to(get_load))
        .route("/_sim/config", web::get().to(get_config))
        .route("/_sim/config", web::post().to(set_config));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let knobs = Knobs {
            latency_ms: 100,
            jitter_ms: 50,
            failure_rate: 0.3,
            failure_status: 500,
            hang_rate: 0.1,
            ..Knobs::default()
        };
        let a = Chaos::new(knobs.clone(), 7);
        let b = Chaos::new(knobs, 7);
        for _ in 0..100 {
            let (da, fa, _) = a.decide();
            let (db, fb, _) = b.decide();
            assert_eq!(da, db);
            assert!(da >= Duration::from_millis(50) && da <= Duration::from_millis(150));
            assert_eq!(std::mem::discriminant(&fa), std::mem::discriminant(&fb));
        }
    }

    #[test]
    fn knobs_are_validated() {
        let c = Chaos::new(Knobs::default(), 1);
        assert!(c
            .set(&KnobsPatch {
                failure_rate: Some(1.5),
                ..Default::default()
            })
            .is_err());
        assert!(c
            .set(&KnobsPatch {
                failure_status: Some(200),
                ..Default::default()
            })
            .is_err());
        let k = c
            .set(&KnobsPatch {
                latency_ms: Some(20),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(k.latency_ms, 20);
    }
}
