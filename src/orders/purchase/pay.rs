//! The purchase's charge, in two steps with the intent's id recorded
//! between them:
//!
//! ```text
//! gateway: POST /v1/payment_intents (confirm=false)   no money moves
//! unit:    record the intent's id on the order        only while payment_pending
//! gateway: POST /v1/payment_intents/{id}/confirm      the charge
//! ```
//!
//! So no intent is ever confirmed whose id the order does not hold:
//! reconciliation and refunds find every charge by that id (or the
//! gateway's search), and never need to replay a charge to learn of one.

use crate::db::{self, models::OrderRow, orders};
use crate::http::AppState;
use crate::partners::payment::{charge_of, ChargeOutcome, PaymentGateway};

/// Charges `order`; `None` when the order left `payment_pending` under us
/// (cancelled or settled by someone else), and then nothing is confirmed.
pub(super) async fn charge(
    state: &AppState,
    gateway: &PaymentGateway,
    order: &OrderRow,
) -> Option<ChargeOutcome> {
    let intent_id = match &order.payment_intent_id {
        Some(pi) => match gateway.retrieve(pi).await {
            // A takeover: the earlier request recorded the id and may or
            // may not have confirmed it.
            Ok(ChargeOutcome::Unconfirmed { intent_id }) => intent_id,
            Ok(other) => return Some(other),
            Err(e) => return Some(unknown(pi, e.to_string())),
        },
        None => match gateway.create_intent(&charge_of(order)).await {
            ChargeOutcome::Unconfirmed { intent_id } => {
                match record_intent(state, order, &intent_id).await {
                    Ok(true) => intent_id,
                    Ok(false) => return None,
                    Err(e) => {
                        tracing::warn!(error = %e, "intent id not recorded; not confirmed");
                        return Some(ChargeOutcome::Unconfirmed { intent_id });
                    }
                }
            }
            other => return Some(other),
        },
    };
    Some(confirm(gateway, order, &intent_id).await)
}

/// Confirms the recorded intent. A refusal that names no intent (the
/// intent was cancelled under us, say) is read back from the intent.
async fn confirm(gateway: &PaymentGateway, order: &OrderRow, intent_id: &str) -> ChargeOutcome {
    match gateway.confirm(order.id, intent_id).await {
        ChargeOutcome::Declined {
            intent_id: None, ..
        } => gateway
            .retrieve(intent_id)
            .await
            .unwrap_or_else(|e| unknown(intent_id, e.to_string())),
        other => other,
    }
}

fn unknown(intent_id: &str, reason: String) -> ChargeOutcome {
    ChargeOutcome::Unknown {
        intent_id: Some(intent_id.to_owned()),
        status: None,
        reason,
    }
}

/// Records the new intent's id on the order, if it is still
/// `payment_pending`: whether it was recorded.
async fn record_intent(
    state: &AppState,
    order: &OrderRow,
    intent_id: &str,
) -> Result<bool, db::DbError> {
    let (id, intent) = (order.id, intent_id.to_owned());
    db::unit(&state.pool, move |c| orders::record_intent(c, id, &intent)).await
}
