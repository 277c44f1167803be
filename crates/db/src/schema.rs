// @generated automatically by Diesel CLI.

diesel::table! {
    auto_replies (tenant_id, keyword) {
        tenant_id -> Text,
        keyword -> Text,
        reply -> Text,
        enabled -> Bool,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    contacts (id) {
        id -> Int8,
        tenant_id -> Text,
        jamaah_id -> Nullable<Text>,
        wa_id -> Nullable<Text>,
        user_id -> Nullable<Text>,
        phone_e164 -> Nullable<Text>,
        name -> Nullable<Text>,
        profile_name -> Nullable<Text>,
        status -> Nullable<Text>,
        package_id -> Nullable<Text>,
        package_name -> Nullable<Text>,
        agent_id -> Nullable<Text>,
        agent_name -> Nullable<Text>,
        agent_phone -> Nullable<Text>,
        is_known -> Bool,
        last_inbound_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    conversations (id) {
        id -> Int8,
        tenant_id -> Text,
        contact_id -> Int8,
        last_message_at -> Nullable<Timestamptz>,
        last_inbound_at -> Nullable<Timestamptz>,
        last_outbound_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    customer_windows (tenant_id, wa_id) {
        tenant_id -> Text,
        wa_id -> Text,
        last_inbound_at -> Timestamptz,
    }
}

diesel::table! {
    jamaah (tenant_id, jamaah_id) {
        tenant_id -> Text,
        jamaah_id -> Text,
        name -> Text,
        phone_e164 -> Nullable<Text>,
        status -> Text,
        package_id -> Nullable<Text>,
        agent_id -> Nullable<Text>,
        agent_name -> Nullable<Text>,
        agent_phone -> Nullable<Text>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    media (id) {
        id -> Int8,
        tenant_id -> Text,
        message_id -> Int8,
        media_id -> Text,
        mime_type -> Nullable<Text>,
        sha256 -> Nullable<Text>,
        filename -> Nullable<Text>,
        state -> Text,
        attempts -> Int4,
        next_attempt_at -> Nullable<Timestamptz>,
        storage_key -> Nullable<Text>,
        key_id -> Nullable<Text>,
        size_bytes -> Nullable<Int8>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    message_statuses (id) {
        id -> Int8,
        tenant_id -> Text,
        wa_message_id -> Text,
        status -> Text,
        occurred_at -> Timestamptz,
        meta_code -> Nullable<Int8>,
        error_detail -> Nullable<Text>,
        pricing_category -> Nullable<Text>,
        pricing_type -> Nullable<Text>,
        pricing_model -> Nullable<Text>,
        billable -> Nullable<Bool>,
        applied -> Bool,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    messages (id) {
        id -> Int8,
        tenant_id -> Text,
        conversation_id -> Int8,
        contact_id -> Int8,
        direction -> Text,
        wa_message_id -> Nullable<Text>,
        job_id -> Nullable<Text>,
        reference_kind -> Nullable<Text>,
        reference_id -> Nullable<Text>,
        message_type -> Text,
        body_ciphertext -> Nullable<Bytea>,
        body_nonce -> Nullable<Bytea>,
        body_key_id -> Nullable<Text>,
        raw_ciphertext -> Nullable<Bytea>,
        raw_nonce -> Nullable<Bytea>,
        current_status -> Nullable<Text>,
        status_at -> Nullable<Timestamptz>,
        error_code -> Nullable<Int8>,
        error_detail -> Nullable<Text>,
        pricing_category -> Nullable<Text>,
        pricing_type -> Nullable<Text>,
        billable -> Nullable<Bool>,
        sent_at -> Timestamptz,
        created_at -> Timestamptz,
        failure_reason -> Nullable<Text>,
        trace_parent -> Nullable<Text>,
    }
}

diesel::table! {
    packages (tenant_id, package_id) {
        tenant_id -> Text,
        package_id -> Text,
        name -> Nullable<Text>,
        departure_date -> Nullable<Date>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    payment_schedules (tenant_id, schedule_id) {
        tenant_id -> Text,
        schedule_id -> Text,
        jamaah_id -> Text,
        package_id -> Nullable<Text>,
        due_date -> Date,
        amount -> Int8,
        status -> Text,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    payments (tenant_id, payment_id) {
        tenant_id -> Text,
        payment_id -> Text,
        jamaah_id -> Text,
        package_id -> Nullable<Text>,
        amount -> Int8,
        remaining_balance -> Int8,
        status_label -> Nullable<Text>,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    processed_events (consumer, event_key) {
        consumer -> Text,
        event_key -> Text,
        processed_at -> Timestamptz,
    }
}

diesel::table! {
    rate_limits (key) {
        key -> Text,
        tat -> Timestamptz,
        recent -> Array<Nullable<Int8>>,
    }
}

diesel::table! {
    reminders (id) {
        id -> Int8,
        tenant_id -> Text,
        kind -> Text,
        dedupe_key -> Text,
        job_id -> Text,
        jamaah_id -> Nullable<Text>,
        schedule_id -> Nullable<Text>,
        payment_id -> Nullable<Text>,
        package_id -> Nullable<Text>,
        offset_days -> Nullable<Int4>,
        due_at -> Timestamptz,
        not_after -> Nullable<Timestamptz>,
        status -> Text,
        template_name -> Nullable<Text>,
        parameters -> Nullable<Jsonb>,
        wa_message_id -> Nullable<Text>,
        failure_reason -> Nullable<Text>,
        attempts -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        enqueued_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    send_attempts (id) {
        id -> Int8,
        tenant_id -> Text,
        job_id -> Text,
        attempt -> Int4,
        started_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        http_status -> Nullable<Int4>,
        meta_code -> Nullable<Int8>,
        outcome -> Nullable<Text>,
        detail -> Nullable<Text>,
        fbtrace_id -> Nullable<Text>,
    }
}

diesel::table! {
    send_jobs (tenant_id, job_id) {
        tenant_id -> Text,
        job_id -> Text,
        state -> Text,
        to_e164 -> Nullable<Text>,
        priority -> Text,
        message_type -> Text,
        reference_kind -> Nullable<Text>,
        reference_id -> Nullable<Text>,
        wa_message_id -> Nullable<Text>,
        attempts -> Int4,
        last_meta_code -> Nullable<Int8>,
        failure_reason -> Nullable<Text>,
        failure_detail -> Nullable<Text>,
        expires_at -> Nullable<Timestamptz>,
        first_seen_at -> Timestamptz,
        sending_started_at -> Nullable<Timestamptz>,
        accepted_at -> Nullable<Timestamptz>,
        failed_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    sync_outbox (id) {
        id -> Int8,
        tenant_id -> Text,
        contact_id -> Nullable<Int8>,
        routing_key -> Text,
        payload_ciphertext -> Bytea,
        payload_nonce -> Bytea,
        key_id -> Text,
        created_at -> Timestamptz,
        message_id -> Nullable<Int8>,
    }
}

diesel::table! {
    templates (tenant_id, name, language) {
        tenant_id -> Text,
        name -> Text,
        language -> Text,
        category -> Text,
        body_text -> Text,
        example_values -> Nullable<Jsonb>,
        parameter_count -> Int4,
        status -> Text,
        rejection_reason -> Nullable<Text>,
        meta_template_id -> Nullable<Int8>,
        submitted_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    tenants (tenant_id) {
        tenant_id -> Text,
        phone_number_id -> Text,
        waba_id -> Text,
        display_name -> Nullable<Text>,
        time_zone -> Text,
        paused_at -> Nullable<Timestamptz>,
        pause_reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(conversations -> contacts (contact_id));
diesel::joinable!(media -> messages (message_id));
diesel::joinable!(messages -> contacts (contact_id));
diesel::joinable!(messages -> conversations (conversation_id));
diesel::joinable!(sync_outbox -> contacts (contact_id));

diesel::allow_tables_to_appear_in_same_query!(
    auto_replies,
    contacts,
    conversations,
    customer_windows,
    jamaah,
    media,
    message_statuses,
    messages,
    packages,
    payment_schedules,
    payments,
    processed_events,
    rate_limits,
    reminders,
    send_attempts,
    send_jobs,
    sync_outbox,
    templates,
    tenants,
);
