//! The binary's configuration errors: one line naming the variable, exit 2.

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_malformed_setting_exits_2_with_one_line_naming_it() {
    for (var, value) in [
        ("PARTNER_TIMEOUT_MS", "soon"),
        ("BIND_ADDR", "nowhere"),
        ("DATABASE_URL", "mysql://x/y"),
        ("REFRESH_NICE", "25"),
        ("REFRESH_NICE", "-5"),
    ] {
        let (code, stderr) = run(&["migrate"], &[(var, value)]);
        assert_eq!(code, 2, "{var}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(var), "{stderr}");
    }
}

#[test]
fn serve_refuses_to_start_without_an_ops_token() {
    let (code, stderr) = run(&["serve"], &[("PAYMENT_GATEWAY_URL", "http://127.0.0.1:9")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("OPS_TOKEN"), "{stderr}");
}

/// A port with nothing listening.
fn closed_port() -> u16 {
    crate::helpers::free_port()
}

#[test]
fn serve_with_the_database_down_keeps_running_and_retries_with_backoff() {
    use std::io::Read;
    let port = closed_port();
    let bind = format!("127.0.0.1:{}", closed_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .arg("serve")
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/x"),
        )
        .env("REDIS_URL", format!("redis://127.0.0.1:{}", closed_port()))
        .env("OPS_TOKEN", "a-long-enough-token")
        .env("PAYMENT_GATEWAY_URL", "http://127.0.0.1:9")
        .env("BIND_ADDR", &bind)
        .env("DB_CHECKOUT_TIMEOUT_MS", "200")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let still_running = child.try_wait().unwrap().is_none();
    let health = std::net::TcpStream::connect(&bind).is_ok();
    child.kill().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        still_running,
        "serve must not exit when the database is down: {out}"
    );
    assert!(health, "serve must listen while the database is down");
    assert!(
        out.matches("postgresql unreachable at start; retrying")
            .count()
            >= 2,
        "{out}"
    );
    assert!(
        out.contains("redis unreachable at start; retrying"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn sigterm_lets_an_in_flight_purchase_finish_then_exits_0() {
    // serve is started as a real process against the real services, with a
    // gateway that takes 1.5 s; SIGTERM arrives while the charge waits.
    let db = format!("orderflow_test_sigterm_{}", uuid::Uuid::new_v4().simple());
    let db_url = format!("{}/{db}", crate::helpers::pg_base());
    orderflow::db::create_database_if_missing(&db_url).unwrap();
    {
        use diesel::prelude::*;
        let mut conn = diesel::PgConnection::establish(&db_url).unwrap();
        orderflow::db::run_migrations(&mut conn).unwrap();
        diesel::sql_query("INSERT INTO products (sku, name, price_cents, currency) VALUES ('SKU-1', 'T', 100, 'usd')")
            .execute(&mut conn)
            .unwrap();
    }
    let sys = actix_rt::System::new();
    let (status, exit) = sys.block_on(async {
        let mut args = orderflow::sim::SimArgs::ephemeral(1);
        args.latency_ms = 1500;
        let mut sims = orderflow::sim::start(&args).unwrap();
        for s in std::mem::take(&mut sims.servers) {
            actix_rt::spawn(s);
        }
        let bind = format!("127.0.0.1:{}", closed_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", &db_url)
            .env("REDIS_URL", crate::helpers::redis_url())
            .env(
                "REDIS_PREFIX",
                format!("test-sigterm-{}", std::process::id()),
            )
            .env("OPS_TOKEN", "a-long-enough-token")
            .env("PAYMENT_GATEWAY_URL", sims.payment_url())
            .env("BIND_ADDR", &bind)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let client = awc::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .finish();
        for _ in 0..100 {
            if client
                .get(format!("http://{bind}/healthz"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let body = crate::helpers::purchase_body(&[("SKU-1", 1)], "pm_card_visa");
        let request = client
            .post(format!("http://{bind}/api/v1/purchase"))
            .send_json(&body);
        let pid = child.id();
        let killer = async move {
            actix_rt::time::sleep(std::time::Duration::from_millis(500)).await;
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
        };
        let (res, ()) = futures_util::join!(request, killer);
        let status = res.map(|r| r.status().as_u16()).unwrap_or(0);
        let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        (status, exit)
    });
    if let Ok(mut conn) = <diesel::PgConnection as diesel::Connection>::establish(&format!(
        "{}/postgres",
        crate::helpers::pg_base()
    )) {
        use diesel::RunQueryDsl;
        let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
            .execute(&mut conn);
    }
    assert_eq!(status, 201, "the in-flight purchase completes");
    assert_eq!(exit.code(), Some(0), "serve exits 0 after SIGTERM");
}

/// The name and nice value of every thread of process `pid`.
fn threads(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces); the nice
        // value is field 19 of stat(5), the 17th after the name.
        if let Some(nice) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(16))
            .and_then(|n| n.parse().ok())
        {
            out.push((name.trim().to_owned(), nice));
        }
    }
    out
}

fn own_nice() -> i64 {
    threads(std::process::id())[0].1
}

#[test]
fn a_worker_runs_the_status_refresh_on_threads_of_lower_priority() {
    let own = own_nice();
    for (setting, refresh) in [
        // An absolute nice value, never below the one inherited.
        (None, own.max(10)),
        (Some("3"), own.max(3)),
        (Some("0"), own),
    ] {
        // Dependencies down: the worker keeps running and retrying.
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
        cmd.arg("worker")
            .env_clear()
            .env(
                "DATABASE_URL",
                format!("postgres://postgres@127.0.0.1:{}/x", closed_port()),
            )
            .env("REDIS_URL", format!("redis://127.0.0.1:{}", closed_port()))
            .env("PAYMENT_GATEWAY_URL", "http://127.0.0.1:9")
            .env("SHIPPING_API_URL", "http://127.0.0.1:9")
            .env("WAREHOUSE_API_URL", "http://127.0.0.1:9")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(v) = setting {
            cmd.env("REFRESH_NICE", v);
        }
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the worker keeps running while its dependencies are down"
        );
        let threads = threads(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let (background, rest): (Vec<_>, Vec<_>) = threads
            .iter()
            .partition(|(name, _)| name.starts_with("refresh"));
        // Its runtime's threads and its partner executor.
        assert!(background.len() >= 2, "{threads:?}");
        assert!(
            background.iter().all(|(_, n)| *n == refresh),
            "REFRESH_NICE={setting:?}: {threads:?}, expected {refresh}"
        );
        // Deliveries and the rest keep the inherited priority.
        assert!(
            rest.iter().any(|(name, _)| name == "partners"),
            "{threads:?}"
        );
        assert!(rest.iter().all(|(_, n)| *n == own), "{threads:?}");
    }
}

#[test]
fn worker_refuses_to_start_without_every_partner_url() {
    let all = [
        ("PAYMENT_GATEWAY_URL", "http://127.0.0.1:9"),
        ("SHIPPING_API_URL", "http://127.0.0.1:9"),
        ("WAREHOUSE_API_URL", "http://127.0.0.1:9"),
    ];
    for missing in 0..all.len() {
        let env: Vec<(&str, &str)> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != missing)
            .map(|(_, kv)| *kv)
            .collect();
        let (code, stderr) = run(&["worker"], &env);
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(all[missing].0), "{stderr}");
    }
}
