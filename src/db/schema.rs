// @generated automatically by Diesel CLI.

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

diesel::joinable!(idempotency_keys -> orders (order_id));
diesel::joinable!(order_items -> orders (order_id));
diesel::joinable!(order_items -> products (sku));
diesel::joinable!(outbox -> orders (order_id));

diesel::allow_tables_to_appear_in_same_query!(
    idempotency_keys,
    order_items,
    orders,
    outbox,
    products,
);
