//! Order event types (docs/API.md, "Order events"). The events trigger of
//! migration 7 (replaced in migration 8) writes them; endpoints subscribe to them.

crate::domain::status::text_enum! {
    /// What changed. `order.<status>` each time the status changes.
    EventType {
        OrderCreated => "order.created",
        OrderPaid => "order.paid",
        OrderPaymentFailed => "order.payment_failed",
        OrderFulfilling => "order.fulfilling",
        OrderShipped => "order.shipped",
        OrderDelivered => "order.delivered",
        OrderCancelled => "order.cancelled",
        DeliveryAttemptFailed => "delivery.attempt_failed",
        DeliveryFailed => "delivery.failed",
        DeliveryRetryRequested => "delivery.retry_requested",
        PaymentRequiresAction => "payment.requires_action",
        PaymentRefunded => "payment.refunded",
        PaymentRefundFailed => "payment.refund_failed",
        PaymentDisputed => "payment.disputed",
        PaymentDisputeClosed => "payment.dispute_closed",
    }
}

/// Subscribes to every type.
pub const ALL_EVENTS: &str = "*";
