//! The ops page in a real browser: Debian's headless Chromium driven over the
//! WebDriver protocol (chromedriver), against the real app, worker, Redis
//! and PostgreSQL. `.ci/run` installs chromium and chromium-driver; without
//! them this test fails unless `ORDERFLOW_SKIP_BROWSER=1` skips it on purpose.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Browser {
    base: String,
    session: String,
    client: awc::Client,
    driver: Child,
    _profile: std::path::PathBuf,
}

impl Browser {
    async fn start() -> Option<Browser> {
        let chromedriver =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if !std::path::Path::new(&chromedriver).exists()
            || !std::path::Path::new(&chromium).exists()
        {
            if std::env::var("ORDERFLOW_SKIP_BROWSER").as_deref() == Ok("1") {
                eprintln!("browser test skipped: ORDERFLOW_SKIP_BROWSER=1");
                return None;
            }
            panic!("{chromedriver} / {chromium} missing: install chromium and chromium-driver, or set ORDERFLOW_SKIP_BROWSER=1");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, so that the Drop below also ends the
        // chromium it starts (a failed test otherwise leaves browsers running).
        let driver = Command::new(chromedriver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        for _ in 0..100 {
            if client.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("orderflow-chromium-{}", Uuid::new_v4().simple()));
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1400,900", format!("--user-data-dir={}", profile.display())]
        }}}});
        let mut res = client
            .post(format!("{base}/session"))
            .send_json(&caps)
            .await
            .unwrap();
        let body: Value = res.json().limit(1 << 20).await.unwrap();
        let session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {body}"))
            .to_owned();
        Some(Browser {
            base,
            session,
            client,
            driver,
            _profile: profile,
        })
    }

    /// A WebDriver command: its value, or the error WebDriver answered.
    async fn try_cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = self.client.request(
            awc::http::Method::from_bytes(method.as_bytes()).unwrap(),
            url,
        );
        let mut res = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .unwrap();
        let v: Value = res.json().limit(32 << 20).await.unwrap();
        if res.status().is_success() {
            Ok(v["value"].clone())
        } else {
            Err(v["value"].clone())
        }
    }

    /// A WebDriver command that must succeed (a click on a node the page
    /// replaced meanwhile is a failure, not something to shrug off).
    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_cmd(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("webdriver {method} {path}: {e}"),
        }
    }

    /// Accepts the confirmation dialog the last click opened.
    async fn accept_dialog(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.try_cmd("POST", "/alert/accept", Some(json!({}))).await {
                Ok(_) => return,
                Err(e) if e["error"] == "no such alert" && Instant::now() < deadline => {
                    actix_rt::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("no dialog to accept: {e}"),
            }
        }
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    async fn wait_for(&self, what: &str, js: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.script(js).await;
            if v.as_bool() == Some(true) || (v.is_array() && !v.as_array().unwrap().is_empty()) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {v}"
            );
            actix_rt::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn row_ids(&self) -> Vec<String> {
        let v = self
            .script("return [...document.querySelectorAll('#rows tr')].map(r => r.dataset.id)")
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap_or("").to_owned())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            // SAFETY: sends a signal to the process group we created; no memory involved.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self._profile);
    }
}

#[actix_rt::test]
async fn ops_staff_log_in_see_orders_arrive_live_filter_retry_and_no_customer_text_runs() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let page = app.client.get(app.url("/dashboard")).send().await.unwrap();
    let csp = page
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let worker = app.start_worker(orderflow::worker::WorkerOptions {
        refresh_every: Some(Duration::from_secs(1)),
        ..fast_worker()
    });
    // An order whose delivery fails for good (the partner refuses it).
    app.client
        .post(format!("{}/_sim/config", app.sims.shipping_url()))
        .send_json(&json!({"failure_rate": 1.0, "failure_status": 400}))
        .await
        .unwrap();
    let failed = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(failed, 15, |o| o["delivery"]["status"] == "failed")
        .await;
    app.client
        .post(format!("{}/_sim/config", app.sims.shipping_url()))
        .send_json(&json!({"failure_rate": 0.0}))
        .await
        .unwrap();

    // Log in once; the token stays out of the URL.
    browser.goto(&app.url("/dashboard")).await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#login-form button[type=submit]").await;
    browser.wait_for("the board", &format!("return [...document.querySelectorAll('#rows tr')].some(r => r.dataset.id === '{failed}')")).await;
    let url = browser.cmd("GET", "/url", None).await;
    assert!(!url.as_str().unwrap().contains(TOKEN));

    // A new order, placed after the page loaded, appears without reload; its
    // customer name is markup and must show as text.
    let evil = "<img src=x onerror=alert(1)>";
    let mut body = visa();
    body["customer"]["name"] = json!(evil);
    let newcomer = order_id(&app.purchase(&body, None).await);
    browser.wait_for("the new order", &format!("return [...document.querySelectorAll('#rows tr')].some(r => r.dataset.id === '{newcomer}')")).await;
    let shown = browser
        .script(&format!(
            "return document.querySelector('tr[data-id=\"{newcomer}\"] .customer').textContent"
        ))
        .await;
    assert_eq!(shown, json!(evil));
    assert_eq!(
        browser
            .script("return document.querySelectorAll('img').length")
            .await,
        json!(0)
    );
    let alert = browser.try_cmd("GET", "/alert/text", None).await;
    assert!(
        matches!(&alert, Err(e) if e["error"] == "no such alert"),
        "a script ran: {alert:?}"
    );

    // Filter by status: the failed delivery's order is the only `paid` one.
    browser.click("#filter option[value=paid]").await;
    browser.wait_for("the filter", &format!("const ids = [...document.querySelectorAll('#rows tr')].map(r => r.dataset.id); return ids.length === 1 && ids[0] === '{failed}'")).await;
    assert_eq!(browser.row_ids().await, vec![failed.to_string()]);

    // A refresh that changes nothing but the check times leaves the row (and
    // its retry button) the same node: a click is never lost to a re-render.
    browser
        .script(&format!(
            "document.querySelector('tr[data-id=\"{failed}\"]').dataset.mark = 'kept'; return true"
        ))
        .await;
    let before = browser
        .script("return document.getElementById('last-refresh').textContent")
        .await;
    browser
        .wait_for(
            "a refresh",
            &format!("return document.getElementById('last-refresh').textContent !== {before}"),
        )
        .await;
    assert_eq!(
        browser
            .script(&format!(
                "const r = document.querySelector('tr[data-id=\"{failed}\"]'); return r && r.dataset.mark"
            ))
            .await,
        json!("kept"),
        "the unchanged row was rebuilt"
    );

    // A hidden tab pauses the live stream; visible again, it resumes.
    browser
        .script("Object.defineProperty(document, 'hidden', {configurable: true, get: () => true}); document.dispatchEvent(new Event('visibilitychange')); return true")
        .await;
    browser
        .wait_for(
            "paused",
            "return document.getElementById('live-text').textContent === 'paused'",
        )
        .await;
    browser
        .script("Object.defineProperty(document, 'hidden', {configurable: true, get: () => false}); document.dispatchEvent(new Event('visibilitychange')); return true")
        .await;
    browser
        .wait_for(
            "live again",
            "return document.getElementById('live-text').textContent === 'live'",
        )
        .await;

    if let Ok(path) = std::env::var("ORDERFLOW_SCREENSHOT") {
        browser.click("#filter option[value='']").await;
        browser
            .wait_for(
                "all rows",
                "return document.querySelectorAll('#rows tr').length >= 2",
            )
            .await;
        let png = browser.cmd("GET", "/screenshot", None).await;
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(&path, bytes).unwrap();
        browser.click("#filter option[value=paid]").await;
        browser
            .wait_for(
                "the filter",
                "return document.querySelectorAll('#rows tr').length === 1",
            )
            .await;
    }

    // Retry the failed delivery, confirming the dialog.
    browser
        .click(&format!("tr[data-id=\"{failed}\"] button.retry"))
        .await;
    browser.accept_dialog().await;
    app.wait_order(failed, 20, |o| o["status"] == "fulfilling")
        .await;
    assert_eq!(
        app.sims
            .shipping
            .stats()
            .shipments_by_reference
            .get(&failed.to_string()),
        Some(&1)
    );

    browser.cmd("DELETE", "", None).await;
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn ops_open_an_order_see_its_timeline_and_webhooks_resend_one_and_find_stuck_orders() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app_with(Opts {
        env: vec![
            ("STUCK_PAID_SECS", "3".into()),
            ("WEBHOOK_STALLED_AFTER_SECS", "1".into()),
        ],
        ..Opts::default()
    })
    .await;
    let receiver = crate::receiver::Receiver::start(crate::receiver::Mode::Ok);
    let hostile = "<script>alert(2)</script>";
    let resp = app
        .ops(
            "POST",
            "/api/v1/webhook-endpoints",
            Some(&json!({"url": receiver.url, "events": ["*"], "description": hostile})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let endpoint = resp.body["id"].as_str().unwrap().to_owned();
    let worker = app.start_worker(orderflow::worker::WorkerOptions {
        refresh_every: Some(Duration::from_secs(1)),
        ..fast_worker()
    });
    // One order the partner refuses to ship: paid for good, soon stuck.
    app.set_shipping(json!({"failure_rate": 1.0, "failure_status": 400}))
        .await;
    let stuck = order_id(&app.purchase(&visa(), None).await);
    app.wait_order(stuck, 15, |o| o["delivery"]["status"] == "failed")
        .await;
    app.set_shipping(json!({"failure_rate": 0.0})).await;
    // One whose customer name is markup; its events carry it.
    let evil = "<img src=x onerror=alert(1)>";
    let mut body = visa();
    body["customer"]["name"] = json!(evil);
    let shipped = order_id(&app.purchase(&body, None).await);
    app.wait_order(shipped, 15, |o| o["status"] == "fulfilling")
        .await;

    browser.goto(&app.url("/dashboard")).await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#login-form button[type=submit]").await;
    browser
        .wait_for(
            "the order on the board",
            &format!("return !!document.querySelector('tr[data-id=\"{shipped}\"] button.open')"),
        )
        .await;
    browser
        .click(&format!("tr[data-id=\"{shipped}\"] button.open"))
        .await;
    let types = browser
        .wait_for(
            "the timeline",
            "const t = [...document.querySelectorAll('#timeline tbody tr')].map(r => r.dataset.type); return t.length >= 3 ? t : []",
        )
        .await;
    assert_eq!(
        types,
        json!(["order.created", "order.paid", "order.fulfilling"])
    );
    let customer = browser
        .script("return document.getElementById('panel-customer').textContent")
        .await;
    assert!(
        customer.as_str().unwrap().starts_with(evil),
        "the name shows as text: {customer}"
    );
    browser
        .wait_for(
            "the order's webhook deliveries",
            "return [...document.querySelectorAll('#order-deliveries tbody tr')].filter(r => r.textContent.includes('delivered')).length >= 3",
        )
        .await;

    // The webhooks view: the endpoint, its health, its log; resend one.
    let description = browser
        .wait_for(
            "the endpoint",
            &format!("const d = document.querySelector('#endpoints tr[data-id=\"{endpoint}\"] .description'); return d ? [d.textContent] : []"),
        )
        .await;
    assert_eq!(description, json!([hostile]));
    browser
        .click(&format!("#endpoints tr[data-id=\"{endpoint}\"] button.log"))
        .await;
    browser
        .wait_for(
            "the delivery log",
            "return document.querySelectorAll('#endpoint-log-rows button.resend').length >= 1",
        )
        .await;
    // Re-rendering the view (as every board update does) keeps unchanged
    // rows the same nodes: the resend button is never swapped away from
    // under a click.
    browser
        .script(&format!(
            "document.querySelector('#endpoint-log-rows tr').dataset.mark = 'kept'; \
             document.querySelector('#endpoints tr[data-id=\"{endpoint}\"]').dataset.mark = 'kept'; \
             window.rerendered = false; loadEndpoints().then(() => {{ window.rerendered = true; }}); return true"
        ))
        .await;
    let marks = browser
        .wait_for(
            "the view re-rendered",
            &format!("return window.rerendered ? [document.querySelector('#endpoint-log-rows tr').dataset.mark || 'rebuilt', \
                      document.querySelector('#endpoints tr[data-id=\"{endpoint}\"]').dataset.mark || 'rebuilt'] : []"),
        )
        .await;
    assert_eq!(
        marks,
        json!(["kept", "kept"]),
        "unchanged rows were rebuilt"
    );
    let before = receiver.accepted().len();
    browser.click("#endpoint-log-rows button.resend").await;
    receiver
        .wait_for(10, "the resent event", |got| {
            got.iter().filter(|g| g.accepted).count() > before
        })
        .await;

    // The stuck order is marked, and the filter shows only it.
    browser
        .wait_for(
            "the stuck mark",
            &format!("return !!document.querySelector('tr[data-id=\"{stuck}\"] .stuck')"),
        )
        .await;
    browser.click("#stuck-only").await;
    browser
        .wait_for(
            "the stuck filter",
            &format!("const ids = [...document.querySelectorAll('#rows tr')].map(r => r.dataset.id); return ids.length === 1 && ids[0] === '{stuck}'"),
        )
        .await;

    // The marks agree with the API, not with the board: with the refresh
    // stopped (the board keeps the order's old status time), an order the
    // API no longer counts as stuck loses its mark at the next load.
    worker.stop().unwrap();
    app.db(move |c| {
        use diesel::prelude::*;
        diesel::sql_query("UPDATE orders SET status_since = now() WHERE id = $1")
            .bind::<diesel::sql_types::Uuid, _>(stuck)
            .execute(c)
            .expect("fresh status");
    })
    .await;
    browser.click("#stuck-only").await;
    browser
        .wait_for(
            "the mark gone with the API's word",
            &format!("const row = document.querySelector('tr[data-id=\"{stuck}\"]'); return !!row && !row.querySelector('.stuck')"),
        )
        .await;
    let worker = app.start_worker(orderflow::worker::WorkerOptions {
        refresh_every: Some(Duration::from_secs(1)),
        ..fast_worker()
    });

    // A transaction someone leaves open holds every first delivery back:
    // the webhook tile says so, and stops saying so once it ends.
    let stall = "const t = document.querySelector('.webhook-tile'); return !!t && t.classList.contains('bad') && t.textContent.includes('webhooks stalled')";
    let held = app.hold_transaction_id();
    browser.wait_for("the stalled webhooks mark", stall).await;
    held.commit();
    browser
        .wait_for(
            "the stalled mark gone",
            &format!("return !(() => {{ {stall} }})()"),
        )
        .await;

    // No markup from customers or ops ran or rendered.
    assert_eq!(
        browser
            .script(
                "return document.querySelectorAll('img, #panel script, #endpoints script').length"
            )
            .await,
        json!(0)
    );
    let alert = browser.try_cmd("GET", "/alert/text", None).await;
    assert!(
        matches!(&alert, Err(e) if e["error"] == "no such alert"),
        "a script ran: {alert:?}"
    );
    browser.cmd("DELETE", "", None).await;
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn ops_see_the_gateway_events_replay_one_and_an_order_shows_its_dispute() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let secret = "whsec_browser_gateway";
    let app = spawn_app_with(Opts {
        env: vec![("GATEWAY_WEBHOOK_SECRETS", secret.into())],
        ..Opts::default()
    })
    .await;
    let sim = |path: String, body: Value| {
        let (client, base) = (app.client.clone(), app.sims.payment_url());
        async move {
            let mut res = client
                .post(format!("{base}{path}"))
                .send_json(&body)
                .await
                .unwrap();
            assert!(res.status().is_success(), "{path}");
            res.json::<Value>().await.unwrap_or(Value::Null)
        }
    };
    sim(
        "/_sim/events".into(),
        json!({"url": app.url("/api/v1/gateway/webhooks"), "secret": secret}),
    )
    .await;
    let worker = app.start_worker(orderflow::worker::WorkerOptions {
        refresh_every: Some(Duration::from_secs(1)),
        ..fast_worker()
    });
    // Shipping refuses: the order stays paid, on the board.
    app.set_shipping(json!({"failure_rate": 1.0, "failure_status": 503}))
        .await;
    let resp = app.purchase(&visa(), None).await;
    let id = order_id(&resp);
    let intent = resp.body["payment"]["intent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sim(
        format!("/_sim/payment_intents/{intent}/dispute"),
        json!({"reason": "product_not_received"}),
    )
    .await;
    app.wait_order(id, 20, |o| !o["payment"]["dispute"].is_null())
        .await;
    // A signed event of a type orderflow does not know, its type markup.
    let hostile = "<img src=x onerror=alert(3)>";
    let body =
        json!({"id": "evt_browser_hostile", "type": hostile, "data": {"object": {}}}).to_string();
    let sig = orderflow::webhooks::signature::sign_all(
        &[secret.to_owned().into()],
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    );
    let posted = app
        .client
        .post(app.url("/api/v1/gateway/webhooks"))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Stripe-Signature", sig))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);

    browser.goto(&app.url("/dashboard")).await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#login-form button[type=submit]").await;
    let shown = browser
        .wait_for(
            "the hostile event, as text",
            "const r = document.querySelector('#gateway-events tr[data-id=\"evt_browser_hostile\"]'); return r ? [r.children[1].textContent, r.dataset.status] : []",
        )
        .await;
    assert_eq!(shown, json!([hostile, "ignored"]));
    browser
        .wait_for(
            "the dispute's event, processed",
            "return [...document.querySelectorAll('#gateway-events tr')].some(r => r.textContent.includes('charge.dispute.created') && r.dataset.status === 'processed')",
        )
        .await;
    browser
        .click("#gateway-events tr[data-id=\"evt_browser_hostile\"] button.replay")
        .await;
    browser
        .wait_for(
            "the replay's toast",
            "return document.getElementById('toast').textContent.includes('Replay queued')",
        )
        .await;
    // The order's panel says it is disputed, and until when evidence is due.
    browser
        .wait_for(
            "the order on the board",
            &format!("return !!document.querySelector('tr[data-id=\"{id}\"] button.open')"),
        )
        .await;
    browser
        .click(&format!("tr[data-id=\"{id}\"] button.open"))
        .await;
    let line = browser
        .wait_for(
            "the payment line",
            "const t = document.getElementById('panel-payment').textContent; return t.includes('disputed') ? [t] : []",
        )
        .await;
    let line = line[0].as_str().unwrap();
    assert!(
        line.contains("product_not_received") && line.contains("evidence due"),
        "{line}"
    );
    worker.stop().unwrap();
}

#[actix_rt::test]
async fn a_viewer_sees_no_action_buttons_finds_an_order_by_email_and_signs_out() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let mut body = visa();
    body["customer"]["email"] = json!("findme@example.com");
    let order = order_id(&app.purchase(&body, None).await);
    let made = app
        .ops(
            "POST",
            "/api/v1/staff",
            Some(&json!({"name": "viv", "role": "viewer"})),
        )
        .await;
    let viewer = made.body["token"].as_str().unwrap().to_owned();

    browser.goto(&app.url("/dashboard")).await;
    browser.type_into("#token", &viewer).await;
    browser.click("#login-form button[type=submit]").await;
    browser
        .wait_for(
            "signed in",
            "return document.getElementById('whoami').textContent === 'viv (viewer)'",
        )
        .await;
    // No token in the page's storage; the session is an HttpOnly cookie.
    let stored = browser
        .script("return JSON.stringify(sessionStorage) + JSON.stringify(localStorage) + document.cookie")
        .await;
    assert!(!stored.to_string().contains("oft_"), "{stored}");
    // Buttons the role may not use are not shown.
    let shown = browser
        .script("return [...document.querySelectorAll('#refresh, #audit')].map(n => n.offsetParent !== null)")
        .await;
    assert_eq!(shown, json!([false, false]));

    browser.type_into("#search-q", "FindMe@Example.com").await;
    browser.click("#search-form button[type=submit]").await;
    browser
        .wait_for(
            "the search result",
            &format!("return [...document.querySelectorAll('#search-rows td.id')].some(td => td.title === '{order}')"),
        )
        .await;

    browser.click("#logout").await;
    browser
        .wait_for(
            "the sign-in form",
            "return !document.getElementById('login').hidden",
        )
        .await;
    // The session ended on the server too, not only in the page.
    let status = browser
        .wait_for(
            "the session to be gone",
            "return fetch('/api/v1/session').then(r => r.status === 401)",
        )
        .await;
    assert_eq!(status, json!(true));
}
