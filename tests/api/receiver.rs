//! A real HTTP receiver for webhook tests: it records every request it is
//! sent and answers as told (2xx, an error status, or not for a while).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::helpers::TestApp;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Status(u16),
    /// Waits this long before answering 200 (a hang, past the timeout).
    Hang(Duration),
    /// Answers 500 to every n-th request, 200 to the rest (the fault
    /// tests' receiver).
    #[allow(dead_code)]
    FailEvery(usize),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Got {
    pub event_id: String,
    pub signature: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Whether it was answered 2xx.
    pub accepted: bool,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct State {
    got: Vec<Got>,
    /// Requests that arrived, answered or not yet.
    started: usize,
    mode: Option<Mode>,
}

pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<State>>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    /// Listens on 127.0.0.1 (a free port) at `/hooks?token=…` (a query
    /// the service must never log).
    pub fn start(mode: Mode) -> Receiver {
        let state = Arc::new(Mutex::new(State {
            got: Vec::new(),
            started: 0,
            mode: Some(mode),
        }));
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(shared.clone()))
                .default_service(web::to(receive))
        })
        .workers(1)
        .max_connections(100_000)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hooks?token=receiver-secret-token"),
            state,
            server: handle,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    pub fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }

    /// Requests that arrived, including those not answered yet.
    pub fn started(&self) -> usize {
        self.state.lock().unwrap().started
    }

    /// The requests answered 2xx.
    pub fn accepted(&self) -> Vec<Got> {
        self.got().into_iter().filter(|g| g.accepted).collect()
    }

    /// Waits until `done` holds for what was received, or panics.
    pub async fn wait_for(&self, secs: u64, what: &str, done: impl Fn(&[Got]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.got();
            if done(&got) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "receiver never got {what}: {} requests",
                got.len()
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let server = self.server.clone();
        actix_rt::spawn(async move { server.stop(false).await });
    }
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (mode, nth) = {
        let mut s = state.lock().unwrap();
        s.started += 1;
        (s.mode.unwrap_or(Mode::Ok), s.started)
    };
    if let Mode::Hang(d) = mode {
        actix_rt::time::sleep(d).await;
    }
    let status = match mode {
        Mode::Status(s) => s,
        Mode::FailEvery(n) if nth % n.max(1) == 0 => 500,
        _ => 200,
    };
    state.lock().unwrap().got.push(Got {
        event_id: header("orderflow-event-id"),
        signature: header("orderflow-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
        accepted: (200..300).contains(&status) && !matches!(mode, Mode::Hang(_)),
    });
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

/// Registers `url` for `events`: its id and secret.
pub async fn register(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let resp = app
        .ops(
            "POST",
            "/api/v1/webhook-endpoints",
            Some(&json!({"url": url, "events": events, "description": "test receiver"})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.body["enabled"], true);
    let id = resp.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("we_"));
    let secret = resp.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    (id, secret)
}

/// A receiver that accepts connections and never answers (a host that
/// hangs). It samples, from the kernel's table, how many of its
/// connections the sender still holds open (ESTABLISHED on its side: one
/// the sender closed is CLOSE_WAIT), and keeps the most seen at once.
#[allow(dead_code)]
pub struct BlackHole {
    pub url: String,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[allow(dead_code)]
impl BlackHole {
    pub fn start() -> BlackHole {
        use std::io::Read;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (most, accepted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                count.fetch_add(1, SeqCst);
                std::thread::spawn(move || {
                    // Reads the request and never answers; ends when the
                    // sender gives up and closes.
                    let mut buf = [0u8; 4096];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
        let seen = most.clone();
        std::thread::spawn(move || loop {
            seen.fetch_max(established_on(addr.port()), SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(10));
        });
        BlackHole {
            url: format!("http://{addr}"),
            most,
            accepted,
        }
    }

    /// The most connections the sender held open to it at once.
    pub fn most_at_once(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Sockets in /proc/net/tcp whose local port is `port` and whose state is
/// ESTABLISHED (01).
fn established_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&local) && cols[3] == "01"
        })
        .count()
}
