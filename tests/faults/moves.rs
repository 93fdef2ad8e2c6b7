//! The database moved to another cluster: dumped with `pg_dump` from the
//! test's PostgreSQL and restored into a fresh cluster made with `initdb`
//! here, whose transaction ids are far younger than the log's. Every event
//! the source still owed and every one written after the move reaches the
//! receiver, none twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use diesel::prelude::*;
use uuid::Uuid;

use crate::helpers::*;
use crate::receiver::{register, Mode, Receiver};

/// A PostgreSQL cluster of its own, on a free port, gone when dropped.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

/// PostgreSQL's server binaries (`initdb`, `pg_ctl`), where Debian puts them.
fn server_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

/// Runs `cmd` as the `postgres` user when we are root (the server refuses
/// to run as root), else as ourselves.
fn as_postgres(cmd: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let status = if root {
        Command::new("su").args(["postgres", "-c", cmd]).status()
    } else {
        Command::new("sh").args(["-c", cmd]).status()
    };
    status.is_ok_and(|s| s.success())
}

impl Cluster {
    fn start(bin: PathBuf) -> Cluster {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir =
            std::env::temp_dir().join(format!("orderflow-cluster-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let _ = Command::new("chown")
            .args(["postgres", &dir.to_string_lossy()])
            .status();
        let (b, d) = (bin.display(), dir.display());
        assert!(
            as_postgres(&format!(
                "{b}/initdb -D {d}/data -U postgres --auth=trust >{d}/initdb.log 2>&1"
            )),
            "initdb failed (see {d}/initdb.log)"
        );
        assert!(
            as_postgres(&format!(
                "{b}/pg_ctl -D {d}/data -o '-p {port} -k {d} -c listen_addresses=127.0.0.1' -l {d}/log -w start >/dev/null"
            )),
            "pg_ctl start failed (see {d}/log)"
        );
        Cluster { bin, dir, port }
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let (b, d) = (self.bin.display(), self.dir.display());
        as_postgres(&format!(
            "{b}/pg_ctl -D {d}/data -m immediate stop >/dev/null 2>&1"
        ));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(QueryableByName)]
struct Next {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn event_ids(url: &str) -> Vec<String> {
    let mut c = PgConnection::establish(url).expect("connect");
    use orderflow::db::schema::order_events::dsl as e;
    e::order_events
        .select(e::id)
        .load::<Uuid>(&mut c)
        .expect("events")
        .into_iter()
        .map(orderflow::http::views::event_id)
        .collect()
}

#[actix_rt::test]
async fn a_database_dumped_and_restored_into_a_younger_cluster_sends_every_event_once() {
    let _serial = crate::serial();
    let Some(bin) = server_bin() else {
        eprintln!("skipped: no PostgreSQL server binaries under /usr/lib/postgresql");
        return;
    };
    let source = spawn_app().await;
    let receiver = Receiver::start(Mode::Ok);
    register(&source, &receiver.url, &["*"]).await;
    let worker = source.start_worker(fast_worker());
    let sent = order_id(&source.purchase(&visa(), None).await);
    source
        .wait_order(sent, 15, |o| o["status"] == "fulfilling")
        .await;
    let source_url = format!("{}/{}", pg_base(), source.db_name);
    let before = event_ids(&source_url);
    receiver
        .wait_for(15, "the first order's events", |got| {
            before
                .iter()
                .all(|e| got.iter().any(|g| g.accepted && &g.event_id == e))
        })
        .await;
    worker.stop().unwrap();
    // Owed at the move: bought with no worker running.
    source.purchase(&visa(), None).await;

    let cluster = Cluster::start(bin);
    let target = cluster.url("moved");
    assert!(Command::new("psql")
        .args([
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            "postgres"
        ])
        .args(["-c", "CREATE DATABASE moved"])
        .status()
        .is_ok_and(|s| s.success()));
    let restored = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "pg_dump '{source_url}' | psql -q '{target}' >/dev/null 2>&1"
        ))
        .status()
        .is_ok_and(|s| s.success());
    assert!(restored, "pg_dump | psql");

    // What makes it a move this guard is for: the new cluster's ids sort
    // below the ones the log and the cursors came with.
    let next_id = |url: &str| {
        let mut c = PgConnection::establish(url).expect("connect");
        diesel::sql_query("SELECT pg_current_xact_id()::text::bigint AS n")
            .get_result::<Next>(&mut c)
            .expect("next id")
            .n
    };
    let (old, young) = (next_id(&source_url), next_id(&target));
    assert!(old > young + 1000, "ids: source {old}, new cluster {young}");

    let moved = spawn_app_with(Opts {
        database_url: Some(target.clone()),
        ..Opts::default()
    })
    .await;
    let worker = moved.start_worker(fast_worker());
    let after = order_id(&moved.purchase(&visa(), None).await);
    moved
        .wait_order(after, 20, |o| o["status"] == "fulfilling")
        .await;
    let all = event_ids(&target);
    receiver
        .wait_for(30, "every event of the moved database", |got| {
            all.iter()
                .all(|e| got.iter().any(|g| g.accepted && &g.event_id == e))
        })
        .await;
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    worker.stop().unwrap();
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for g in receiver.got().into_iter().filter(|g| g.accepted) {
        *times.entry(g.event_id).or_default() += 1;
    }
    assert!(times.values().all(|&n| n == 1), "sent twice: {times:?}");
    assert_eq!(times.len(), all.len(), "every event, and only those");
}
