//! Benchmark helper (used by `bench/refresh`): creates N active orders
//! (20 distinct skus) whose payment intents and shipments really exist at
//! the simulators, so a status refresh asks about real objects.
//!
//! Usage: seed_board N  (with DATABASE_URL, PAYMENT_GATEWAY_URL, SHIPPING_API_URL)

use diesel::prelude::*;
use futures_util::stream::{self, StreamExt};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let settings = orderflow::config::Settings::from_env()?;
    let pay = settings
        .payment_gateway_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("PAYMENT_GATEWAY_URL"))?;
    let ship = settings
        .shipping_api_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("SHIPPING_API_URL"))?;
    let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::new_v4()).collect();
    let created: Vec<(uuid::Uuid, String, String)> = actix_rt::System::new().block_on(async move {
        let client = awc::Client::builder().connector(awc::Connector::new().limit(256)).finish();
        stream::iter(ids)
            .map(|id| {
                let client = client.clone();
                let (pay, ship) = (pay.clone(), ship.clone());
                async move {
                    let mut r = client
                        .post(format!("{}v1/payment_intents", pay))
                        .insert_header(("Authorization", "Bearer sk_test_bench"))
                        .send_form(&[("amount", "1299"), ("currency", "usd"), ("payment_method", "pm_card_visa"), ("confirm", "true"), ("metadata[order_id]", &id.to_string())])
                        .await
                        .ok()?;
                    let pi: Value = r.json().await.ok()?;
                    let mut r = client
                        .post(format!("{}v1/shipments", ship))
                        .send_json(&json!({"reference": id.to_string(), "address": {"line1": "x"}, "items": []}))
                        .await
                        .ok()?;
                    let shp: Value = r.json().await.ok()?;
                    Some((id, pi["id"].as_str()?.to_owned(), shp["id"].as_str()?.to_owned()))
                }
            })
            .buffer_unordered(128)
            .filter_map(|x| async move { x })
            .collect()
            .await
    });
    let mut conn = PgConnection::establish(settings.database_url.expose_secret())?;
    use orderflow::db::schema::{order_items as i, orders as o, products as p};
    let skus: Vec<String> = (1..=20).map(|k| format!("BENCH-{k:02}")).collect();
    diesel::insert_into(p::table)
        .values(
            skus.iter()
                .map(|s| {
                    (
                        p::sku.eq(s),
                        p::name.eq("Bench item"),
                        p::price_cents.eq(1299),
                        p::currency.eq("usd"),
                    )
                })
                .collect::<Vec<_>>(),
        )
        .on_conflict_do_nothing()
        .execute(&mut conn)?;
    let address = json!({"line1": "1 Main St", "line2": null, "city": "London", "postal_code": "N1", "country": "GB"});
    for (k, chunk) in created.chunks(1000).enumerate() {
        let rows: Vec<_> = chunk
            .iter()
            .map(|(id, pi, shp)| {
                (
                    o::id.eq(*id),
                    o::status.eq("fulfilling"),
                    o::customer_email.eq("bench@example.com"),
                    o::customer_name.eq("Bench"),
                    o::currency.eq("usd"),
                    o::total_cents.eq(2598),
                    o::shipping_address.eq(address.clone()),
                    o::payment_method.eq("pm_card_visa"),
                    o::payment_intent_id.eq(pi.as_str()),
                    o::payment_status.eq("succeeded"),
                    o::delivery_status.eq("requested"),
                    o::shipment_id.eq(shp.as_str()),
                )
            })
            .collect();
        diesel::insert_into(o::table)
            .values(rows)
            .execute(&mut conn)?;
        let items: Vec<_> = chunk
            .iter()
            .enumerate()
            .flat_map(|(j, (id, _, _))| {
                let a = &skus[(k * 1000 + j) % 20];
                let b = &skus[(k * 1000 + j + 7) % 20];
                [(*id, 0i16, a.clone()), (*id, 1i16, b.clone())]
            })
            .map(|(id, line, sku)| {
                (
                    i::order_id.eq(id),
                    i::line_no.eq(line),
                    i::sku.eq(sku),
                    i::name.eq("Bench item"),
                    i::quantity.eq(1),
                    i::unit_price_cents.eq(1299i64),
                    i::line_total_cents.eq(1299i64),
                )
            })
            .collect();
        diesel::insert_into(i::table)
            .values(items)
            .execute(&mut conn)?;
    }
    println!("seeded {}", created.len());
    Ok(())
}
