// @generated automatically by Diesel CLI.

diesel::table! {
    audit_entries (id) {
        id -> Int8,
        at -> Timestamptz,
        actor_type -> Text,
        actor_name -> Text,
        action -> Text,
        target -> Nullable<Text>,
        request_id -> Nullable<Text>,
        client_ip -> Nullable<Text>,
        outcome -> Text,
    }
}

diesel::table! {
    gateway_events (id) {
        id -> Text,
        #[sql_name = "type"]
        type_ -> Text,
        object_id -> Nullable<Text>,
        order_id -> Nullable<Uuid>,
        status -> Text,
        payload -> Jsonb,
        received_at -> Timestamptz,
        processed_at -> Nullable<Timestamptz>,
        attempts -> Int4,
        error -> Nullable<Text>,
        next_attempt_at -> Timestamptz,
        lease_until -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    idempotency_keys (key) {
        key -> Text,
        request_hash -> Text,
        state -> Text,
        order_id -> Nullable<Uuid>,
        response_status -> Nullable<Int2>,
        response_body -> Nullable<Jsonb>,
        locked_at -> Timestamptz,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        response_order -> Nullable<Jsonb>,
    }
}

diesel::table! {
    order_events (id) {
        id -> Uuid,
        order_id -> Uuid,
        sequence -> Int4,
        #[sql_name = "type"]
        type_ -> Text,
        created_at -> Timestamptz,
        order_row -> Jsonb,
        actor -> Nullable<Jsonb>,
    }
}

diesel::table! {
    order_items (order_id, line_no) {
        order_id -> Uuid,
        line_no -> Int2,
        sku -> Text,
        name -> Text,
        quantity -> Int4,
        unit_price_cents -> Int8,
        line_total_cents -> Int8,
    }
}

diesel::table! {
    orders (id) {
        id -> Uuid,
        status -> Text,
        customer_email -> Text,
        customer_name -> Text,
        currency -> Text,
        total_cents -> Int8,
        shipping_address -> Jsonb,
        payment_method -> Text,
        payment_intent_id -> Nullable<Text>,
        payment_status -> Nullable<Text>,
        decline_code -> Nullable<Text>,
        delivery_status -> Text,
        shipment_id -> Nullable<Text>,
        tracking_number -> Nullable<Text>,
        delivery_attempts -> Int4,
        delivery_last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        delivery_outcome_unknown -> Bool,
        attention -> Nullable<Text>,
        attention_since -> Nullable<Timestamptz>,
        event_seq -> Int4,
        status_since -> Timestamptz,
        payment_action -> Nullable<Jsonb>,
        refund_id -> Nullable<Text>,
        refund_source -> Nullable<Text>,
        dispute_id -> Nullable<Text>,
        dispute_status -> Nullable<Text>,
        dispute_reason -> Nullable<Text>,
        dispute_due_by -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    outbox (kind, order_id) {
        kind -> Text,
        order_id -> Uuid,
        created_at -> Timestamptz,
        last_pushed_at -> Nullable<Timestamptz>,
        next_attempt_at -> Timestamptz,
        attempt_task -> Nullable<Text>,
        attempts -> Int4,
    }
}

diesel::table! {
    products (sku) {
        sku -> Text,
        name -> Text,
        price_cents -> Int8,
        currency -> Text,
        active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    staff (name) {
        name -> Text,
        role -> Text,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        created_by -> Text,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    staff_epoch (one) {
        one -> Bool,
        n -> Int8,
    }
}

diesel::table! {
    staff_sessions (id_hash) {
        id_hash -> Bytea,
        staff_name -> Nullable<Text>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        ended_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> Int8,
        delivery_id -> Int8,
        endpoint_id -> Uuid,
        attempt -> Int4,
        status -> Text,
        response_status -> Nullable<Int2>,
        error -> Nullable<Text>,
        duration_ms -> Int4,
        attempted_at -> Timestamptz,
        next_attempt_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Int8,
        endpoint_id -> Uuid,
        event_id -> Uuid,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        response_status -> Nullable<Int2>,
        error -> Nullable<Text>,
        duration_ms -> Nullable<Int4>,
        attempted_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Uuid,
        url -> Text,
        events -> Array<Nullable<Text>>,
        description -> Text,
        enabled -> Bool,
        secret -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        last_success_at -> Nullable<Timestamptz>,
        failing_since -> Nullable<Timestamptz>,
        consecutive_failures -> Int4,
        drain_task -> Nullable<Text>,
        drain_until -> Nullable<Timestamptz>,
        cursor_xact -> Int8,
        cursor_position -> Int8,
        previous_secret -> Nullable<Text>,
        previous_secret_until -> Nullable<Timestamptz>,
        circuit_until -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    webhook_log (xact, position) {
        xact -> Int8,
        position -> Int8,
        event_id -> Uuid,
        #[sql_name = "type"]
        type_ -> Text,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(idempotency_keys -> orders (order_id));
diesel::joinable!(order_events -> orders (order_id));
diesel::joinable!(order_items -> orders (order_id));
diesel::joinable!(order_items -> products (sku));
diesel::joinable!(outbox -> orders (order_id));
diesel::joinable!(staff_sessions -> staff (staff_name));
diesel::joinable!(webhook_attempts -> webhook_deliveries (delivery_id));
diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));

diesel::allow_tables_to_appear_in_same_query!(
    audit_entries,
    gateway_events,
    idempotency_keys,
    order_events,
    order_items,
    orders,
    outbox,
    products,
    staff,
    staff_epoch,
    staff_sessions,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_log,
);
