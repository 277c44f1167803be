//! W3C trace context (`traceparent`, `tracestate`) carried in AMQP message headers, so one trace
//! follows a webhook from ingress through every consumer, including retries that come back
//! through the dead-letter ladder (headers survive dead-lettering).
//!
//! The propagator is [`TraceContextPropagator`] itself rather than the global one: W3C is the wire
//! format we promise, and a service that forgot to install a global propagator would otherwise
//! silently drop the context.

use std::collections::BTreeMap;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
}

struct HeaderExtractor<'a>(&'a BTreeMap<ShortString, AMQPValue>);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(ShortString::as_str).collect()
    }
}

/// The OpenTelemetry context to propagate from here: the current `tracing` span's context when
/// a tracing-opentelemetry layer is installed, else the OpenTelemetry thread-local current context.
pub fn current_context() -> Context {
    let from_span = tracing::Span::current().context();
    if from_span.span().span_context().is_valid() {
        from_span
    } else {
        Context::current()
    }
}

/// Writes `traceparent`/`tracestate` for `cx` into `headers`; writes nothing when `cx` has no
/// valid span (no tracing configured), so untraced messages carry no bogus ids.
pub fn inject_context(cx: &Context, headers: &mut FieldTable) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// Writes the current trace context (see [`current_context`]) into `headers` before publishing.
pub fn inject_current_context(headers: &mut FieldTable) {
    inject_context(&current_context(), headers);
}

/// Reads the remote parent context from message headers; an empty context when absent or invalid.
pub fn extract_from_headers(headers: &FieldTable) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers.inner()))
}

/// Reads the remote parent context of a received message, to parent the consumer span on it.
pub fn extract_context(properties: &BasicProperties) -> Context {
    match properties.headers() {
        Some(headers) => extract_from_headers(headers),
        None => Context::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn fixed_context() -> Context {
        let span_context = SpanContext::new(
            TraceId::from_bytes([
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36,
            ]),
            SpanId::from_bytes([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(span_context)
    }

    #[test]
    fn trace_context_round_trips_through_amqp_headers() {
        let mut headers = FieldTable::default();
        inject_context(&fixed_context(), &mut headers);
        let properties = BasicProperties::default().with_headers(headers);

        let extracted = extract_context(&properties);

        let span = extracted.span();
        let extracted_span = span.span_context();
        assert_eq!(
            extracted_span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(extracted_span.span_id().to_string(), "00f067aa0ba902b7");
        assert!(extracted_span.is_sampled());
        assert!(extracted_span.is_remote());
    }

    #[test]
    fn injected_header_is_a_w3c_traceparent() {
        let mut headers = FieldTable::default();
        inject_context(&fixed_context(), &mut headers);

        let value = headers.inner().get("traceparent");
        assert_eq!(
            value,
            Some(&AMQPValue::LongString(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()
            ))
        );
    }

    #[test]
    fn nothing_is_injected_without_a_valid_span() {
        let mut headers = FieldTable::default();
        inject_context(&Context::new(), &mut headers);
        assert!(headers.inner().is_empty());
    }

    #[test]
    fn a_message_without_headers_has_no_remote_parent() {
        let cx = extract_context(&BasicProperties::default());
        assert!(!cx.span().span_context().is_valid());
    }

    #[test]
    fn current_context_falls_back_to_the_attached_opentelemetry_context() {
        let _guard = fixed_context().attach();
        let mut headers = FieldTable::default();
        inject_current_context(&mut headers);
        assert!(headers.contains_key("traceparent"));
    }
}
