//! The gateway event types orderflow acts on, and what each is about.
//! Anything else is stored and acknowledged as `ignored`.

crate::domain::status::text_enum! {
    /// A handled event type, as Stripe spells it.
    Handled {
        IntentSucceeded => "payment_intent.succeeded",
        IntentPaymentFailed => "payment_intent.payment_failed",
        IntentRequiresAction => "payment_intent.requires_action",
        IntentProcessing => "payment_intent.processing",
        IntentCanceled => "payment_intent.canceled",
        ChargeRefunded => "charge.refunded",
        RefundUpdated => "refund.updated",
        ChargeRefundUpdated => "charge.refund.updated",
        DisputeCreated => "charge.dispute.created",
        DisputeClosed => "charge.dispute.closed",
    }
}

/// The gateway object an event is about, read again before acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Intent,
    Charge,
    Refund,
    Dispute,
}

impl Handled {
    pub fn subject(self) -> Subject {
        match self {
            Handled::IntentSucceeded
            | Handled::IntentPaymentFailed
            | Handled::IntentRequiresAction
            | Handled::IntentProcessing
            | Handled::IntentCanceled => Subject::Intent,
            Handled::ChargeRefunded => Subject::Charge,
            Handled::RefundUpdated | Handled::ChargeRefundUpdated => Subject::Refund,
            Handled::DisputeCreated | Handled::DisputeClosed => Subject::Dispute,
        }
    }
}
