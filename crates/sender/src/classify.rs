//! The one error table: what a Graph answer means for the job. Decided on Meta's `code` (never on
//! titles); the HTTP status only matters when there is no Graph error body.

use wa_common::contracts::outcome::FailureReason;

/// What to do after a failed Graph call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Try again later with backoff; `pair_limited` is 131056 (delay only that recipient).
    Transient {
        /// 131056: the (business, user) pair rate was hit.
        pair_limited: bool,
    },
    /// Final: `outbound.failed` with this reason, job dead-lettered.
    Permanent(FailureReason),
    /// The tenant's token or permissions are wrong: pause the tenant, keep its jobs queued.
    Auth,
}

/// Classifies a Graph error `code` (when the body had one) or else the bare HTTP status.
pub fn classify(http_status: u16, code: Option<i64>) -> Class {
    use Class::{Auth, Permanent, Transient};
    use FailureReason as R;
    let Some(code) = code else {
        // No Graph error body: capacity limiting (429), outages (5xx) are transient.
        return match http_status {
            429 | 500..=599 => Transient {
                pair_limited: false,
            },
            401 => Auth,
            _ => Permanent(R::Rejected),
        };
    };
    match code {
        131_056 => Transient { pair_limited: true },
        1 | 2 | 4 | 80_007 | 130_429 | 131_000 | 131_016 | 131_057 | 133_004 => Transient {
            pair_limited: false,
        },
        0 | 10 | 190 | 200..=299 => Auth,
        131_026 => Permanent(R::Undeliverable),
        131_047 => Permanent(R::WindowClosed),
        132_000 | 132_001 | 132_005 | 132_007 | 132_012 | 132_018 => Permanent(R::TemplateInvalid),
        132_015 | 132_016 => Permanent(R::TemplatePaused),
        131_053 => Permanent(R::MediaError),
        131_049 | 131_050 | 130_472 => Permanent(R::MarketingFiltered),
        131_048 | 131_031 | 368 => Permanent(R::PolicyRestricted),
        100..=199 | 131_008 | 131_009 | 131_021 | 131_051 | 131_052 | 135_000 => {
            Permanent(R::Rejected)
        }
        // Unknown codes: a 5xx is an outage, anything else is not worth hammering Meta with.
        _ if http_status >= 500 => Transient {
            pair_limited: false,
        },
        _ => Permanent(R::Rejected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_codes_land_in_their_class() {
        for code in [130_429, 131_000, 80_007, 4] {
            assert_eq!(
                classify(400, Some(code)),
                Class::Transient {
                    pair_limited: false
                },
                "{code}"
            );
        }
        assert_eq!(
            classify(400, Some(131_056)),
            Class::Transient { pair_limited: true }
        );
        for code in [190, 0, 10, 200, 250, 299] {
            assert_eq!(classify(401, Some(code)), Class::Auth, "{code}");
        }
        let permanent = [
            (131_026, FailureReason::Undeliverable),
            (131_047, FailureReason::WindowClosed),
            (131_051, FailureReason::Rejected),
            (131_052, FailureReason::Rejected),
            (132_000, FailureReason::TemplateInvalid),
            (132_001, FailureReason::TemplateInvalid),
            (132_005, FailureReason::TemplateInvalid),
            (132_007, FailureReason::TemplateInvalid),
            (132_012, FailureReason::TemplateInvalid),
            (132_015, FailureReason::TemplatePaused),
            (132_016, FailureReason::TemplatePaused),
            (100, FailureReason::Rejected),
            (131_008, FailureReason::Rejected),
            (131_009, FailureReason::Rejected),
            (131_021, FailureReason::Rejected),
        ];
        for (code, reason) in permanent {
            assert_eq!(
                classify(400, Some(code)),
                Class::Permanent(reason),
                "{code}"
            );
        }
    }

    #[test]
    fn bare_http_statuses_without_a_graph_error_are_classified_by_status() {
        assert_eq!(
            classify(503, None),
            Class::Transient {
                pair_limited: false
            }
        );
        assert_eq!(
            classify(429, None),
            Class::Transient {
                pair_limited: false
            }
        );
        assert_eq!(
            classify(404, None),
            Class::Permanent(FailureReason::Rejected)
        );
        assert_eq!(
            classify(500, Some(999_999)),
            Class::Transient {
                pair_limited: false
            }
        );
        assert_eq!(
            classify(400, Some(999_999)),
            Class::Permanent(FailureReason::Rejected)
        );
    }
}
