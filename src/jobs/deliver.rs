//! Deliver: create the shipment of a paid order at the shipping partner.
//!
//! Pushed by the purchase path right after the order is marked paid (the
//! `deliver` owed-work row is committed with that update). Safe twice: the
//! shipping partner keys shipments by `reference` = order id, and the order
//! transitions are conditional updates.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::JobKind;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    pub order_id: Uuid,
}

impl JobKind for Deliver {
    const QUEUE: &'static str = "deliver";
    fn task_id(&self) -> String {
        format!("deliver-{}", self.order_id)
    }
}
