//! The tests behind ARCHITECTURE's recipes: each fails when a step of
//! adding an event type or a partner is forgotten. (An endpoint's step —
//! its OpenAPI entry — and a job's — `worker::KINDS` — are checked by unit
//! tests in `serve` and `worker::kinds`.)

use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel::sql_types::Text;
use orderflow::domain::event::EventType;
use orderflow::partners::Partner;

use crate::helpers::*;

#[derive(QueryableByName)]
struct Def {
    #[diesel(sql_type = Text)]
    def: String,
}

/// The quoted `kind.name` literals of a SQL text.
fn event_literals(sql: &str) -> BTreeSet<String> {
    sql.split('\'')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            let mut parts = s.split('.');
            matches!((parts.next(), parts.next(), parts.next()),
                (Some(a), Some(b), None) if ["order", "delivery", "payment"].contains(&a)
                    && !b.is_empty() && b.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        })
        .map(str::to_owned)
        .collect()
}

#[actix_rt::test]
async fn the_rust_event_types_are_the_ones_the_database_writes() {
    let app = spawn_app().await;
    let def = app
        .db(|c| {
            diesel::sql_query("SELECT pg_get_functiondef('order_event_types'::regproc) AS def")
                .get_result::<Def>(c)
                .unwrap()
                .def
        })
        .await;
    // `order.<status>` is written from the new status: one type per status
    // the column allows, but the first (`payment_pending` is `order.created`).
    assert!(def.contains("'order.' || new_row.status"), "{def}");
    let statuses = app
        .db(|c| {
            diesel::sql_query(
                "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint \
                 WHERE conname = 'orders_status_check'",
            )
            .get_result::<Def>(c)
            .unwrap()
            .def
        })
        .await;
    let mut written = event_literals(&def);
    for status in statuses.split('\'').skip(1).step_by(2) {
        if status != "payment_pending" {
            written.insert(format!("order.{status}"));
        }
    }
    let rust: BTreeSet<String> = EventType::ALL
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    assert_eq!(
        rust, written,
        "EventType and the trigger's order_event_types() must name the same types"
    );
}

#[actix_rt::test]
async fn every_partner_has_a_simulator_and_a_health_entry() {
    let app = spawn_app().await;
    let summary = app.ops("GET", "/api/v1/dashboard/summary", None).await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    for &partner in Partner::ALL {
        let url = format!("{}/_sim/config", app.sims.url(partner));
        let res = app.client.get(url).send().await.expect("the simulator");
        assert!(res.status().is_success(), "{partner}: {}", res.status());
        assert!(
            summary.body["partners"][partner.as_str()].is_object(),
            "{partner} has no health entry: {}",
            summary.body
        );
    }
}
