//! Finding spans among the exported ones, with failures that list what was there instead.

use std::time::Duration;

use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

/// Every span exported so far.
pub struct Spans(Vec<SpanData>);

impl Spans {
    /// Waits (up to `within`) until `ready` holds for the exported spans, then returns them.
    /// Spans are exported when they end, which for a consume span is after its ack.
    pub async fn collect(
        exporter: &InMemorySpanExporter,
        within: Duration,
        ready: impl Fn(&Spans) -> bool,
    ) -> Spans {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let spans = Spans(exporter.get_finished_spans().expect("exported spans"));
            if ready(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Spans called `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a SpanData> + 'a {
        self.0.iter().filter(move |s| s.name == name)
    }

    /// The one span called `name` for which `matches` holds.
    pub fn single(&self, name: &str, matches: impl Fn(&SpanData) -> bool) -> &SpanData {
        let found: Vec<&SpanData> = self
            .0
            .iter()
            .filter(|s| s.name == name && matches(s))
            .collect();
        match found.as_slice() {
            [one] => one,
            _ => panic!(
                "expected exactly one matching {name:?} span, found {}; spans: {}",
                found.len(),
                self.describe()
            ),
        }
    }

    /// The one `amqp.consume` span of `queue` for which `matches` holds.
    pub fn consume_of(&self, queue: &str, matches: impl Fn(&SpanData) -> bool) -> &SpanData {
        self.single("amqp.consume", |s| {
            attribute(s, "messaging.destination.name") == Some(queue) && matches(s)
        })
    }

    /// The one `amqp.consume` span of `queue` for messages routed with `key` that `matches`.
    pub fn consume_with_key(
        &self,
        queue: &str,
        key: &str,
        matches: impl Fn(&SpanData) -> bool,
    ) -> &SpanData {
        self.consume_of(queue, |s| {
            attribute(s, "messaging.rabbitmq.destination.routing_key") == Some(key) && matches(s)
        })
    }

    /// Queue and routing key of a consume span.
    pub fn destination_and_key<'a>(&self, span: &'a SpanData) -> (&'a str, &'a str) {
        (
            attribute(span, "messaging.destination.name").unwrap_or_default(),
            attribute(span, "messaging.rabbitmq.destination.routing_key").unwrap_or_default(),
        )
    }

    /// The span a W3C `traceparent` names as the parent, when it was exported.
    pub fn by_traceparent(&self, traceparent: &str) -> Option<&SpanData> {
        let mut parts = traceparent.split('-');
        let (Some("00"), Some(trace_id), Some(span_id)) =
            (parts.next(), parts.next(), parts.next())
        else {
            panic!("not a W3C traceparent: {traceparent}");
        };
        self.0.iter().find(|s| {
            s.span_context.trace_id().to_string() == trace_id
                && s.span_context.span_id().to_string() == span_id
        })
    }

    /// Whether `span` is the next hop after `hop`: its child, or the child of a publish span
    /// (`amqp.publish*`, the producer side of a message) that is `hop`'s child.
    pub fn follows(&self, span: &SpanData, hop: &SpanData) -> bool {
        match self.parent_of(span) {
            Some(parent) if parent.span_context == hop.span_context => true,
            Some(parent) if parent.name.starts_with("amqp.publish") => self
                .parent_of(parent)
                .is_some_and(|grandparent| grandparent.span_context == hop.span_context),
            _ => false,
        }
    }

    /// The exported parent of `span`.
    pub fn parent_of(&self, span: &SpanData) -> Option<&SpanData> {
        self.0.iter().find(|s| {
            s.span_context.span_id() == span.parent_span_id
                && s.span_context.trace_id() == span.span_context.trace_id()
        })
    }

    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|s| {
                format!(
                    "\n  {} [{}] span {} parent {} {:?}",
                    s.name,
                    s.span_context.trace_id(),
                    s.span_context.span_id(),
                    s.parent_span_id,
                    [
                        attribute(s, "messaging.destination.name"),
                        attribute(s, "messaging.rabbitmq.destination.routing_key"),
                    ]
                )
            })
            .collect()
    }
}

/// A string attribute of `span`.
fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .and_then(|kv| match &kv.value {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
}
