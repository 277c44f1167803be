//! `X-Hub-Signature-256` verification: HMAC-SHA256 of the exact raw body, keyed with any of the
//! app secrets (several during a rotation), compared in constant time.
//!
//! The body is never re-serialised: Meta signs the bytes it sent (non-ASCII escaped as `\uXXXX`),
//! and any parse-and-serialise round trip changes them. As a defensive fallback (for a proxy that
//! unescaped the body on the way), a body with raw non-ASCII text is also checked in Meta's escaped
//! form; that is still an HMAC with our secret, so it accepts nothing an attacker could forge.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Header Meta signs every webhook POST with.
pub const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// Prefix of the header value.
const PREFIX: &str = "sha256=";
/// Length of a SHA-256 digest in bytes.
const DIGEST_LEN: usize = 32;

/// Why a request's signature was refused (all answered 401; the variant goes to logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    /// Not `sha256=` followed by 64 hex characters.
    #[error("the X-Hub-Signature-256 header is not sha256=<64 hex characters>")]
    Malformed,
    /// Well-formed, but no configured secret produces it.
    #[error("the X-Hub-Signature-256 header does not match the body")]
    Mismatch,
}

impl SignatureError {
    /// Stable snake_case reason for metrics and the error body.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "signature_missing",
            Self::Malformed => "signature_malformed",
            Self::Mismatch => "signature_mismatch",
        }
    }
}

/// A parsed `sha256=<hex>` header value: the digest bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; DIGEST_LEN]);

impl Signature {
    /// Parses the header value; `None` (missing header) is [`SignatureError::Missing`].
    ///
    /// Accepts upper- or lower-case hex and a case-insensitive prefix, nothing else.
    pub fn parse(header: Option<&[u8]>) -> Result<Self, SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let header = std::str::from_utf8(header)
            .map_err(|_| SignatureError::Malformed)?
            .trim();
        let hex_part = header
            .get(..PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(PREFIX))
            .and_then(|_| header.get(PREFIX.len()..))
            .ok_or(SignatureError::Malformed)?;
        let mut digest = [0_u8; DIGEST_LEN];
        hex::decode_to_slice(hex_part, &mut digest).map_err(|_| SignatureError::Malformed)?;
        Ok(Self(digest))
    }
}

/// The app secrets signatures are checked against (`WHATSAPP_APP_SECRET`, comma-separated).
#[derive(Clone)]
pub struct Verifier {
    /// One ready-keyed HMAC per secret; cloning a keyed HMAC is cheaper than re-keying per request.
    keyed: Vec<Hmac<Sha256>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.keyed.len())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Keys one HMAC per secret; `None` when `secrets` is empty (the config rejects that first).
    pub fn new(secrets: &[SecretString]) -> Option<Self> {
        let keyed: Vec<Hmac<Sha256>> = secrets
            .iter()
            .filter_map(|secret| {
                <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose_secret().as_bytes()).ok()
            })
            .collect();
        (!keyed.is_empty()).then_some(Self { keyed })
    }

    /// True when some secret's HMAC of `body` equals `signature` (constant-time per secret).
    pub fn verify(&self, body: &[u8], signature: &Signature) -> bool {
        if self.matches(body, signature) {
            return true;
        }
        if body.is_ascii() {
            return false;
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return false;
        };
        let escaped = escape_non_ascii(text);
        let ok = self.matches(escaped.as_bytes(), signature);
        if ok {
            tracing::warn!(
                "webhook signature matched only after escaping non-ASCII text; something between Meta and us unescaped the body"
            );
        }
        ok
    }

    fn matches(&self, body: &[u8], signature: &Signature) -> bool {
        // Every secret is tried (no early exit) so timing does not reveal which one matched.
        self.keyed.iter().fold(false, |found, keyed| {
            let mut mac = keyed.clone();
            mac.update(body);
            mac.verify_slice(&signature.0).is_ok() | found
        })
    }
}

/// `sha256=<hex>` for `body` under `secret`: what Meta sends; used by tests and benchmarks.
pub fn sign(secret: &str, body: &[u8]) -> String {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
        }
        // HMAC accepts keys of any length.
        Err(_) => String::new(),
    }
}

/// Meta's escaped form: every non-ASCII character as `\uXXXX` in lower-case hex, astral ones as
/// UTF-16 surrogate pairs. Only valid inside JSON strings, which is the only place JSON allows
/// non-ASCII text.
pub fn escape_non_ascii(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0_u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(secrets: &[&str]) -> Verifier {
        let secrets: Vec<SecretString> = secrets.iter().map(|s| SecretString::from(*s)).collect();
        Verifier::new(&secrets).expect("at least one secret")
    }

    fn parsed(header: &str) -> Signature {
        Signature::parse(Some(header.as_bytes())).expect("well-formed")
    }

    #[test]
    fn metas_documented_sample_format_parses() {
        let sig = parsed("sha256=b63bb356dff0f1c24379efea2d6ef0b2e2040853339d1bcf13f9018790b1f7d2");
        assert_eq!(sig.0[0], 0xb6);
        assert_eq!(
            parsed("SHA256=B63BB356DFF0F1C24379EFEA2D6EF0B2E2040853339D1BCF13F9018790B1F7D2"),
            sig
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_told_apart() {
        assert_eq!(Signature::parse(None), Err(SignatureError::Missing));
        for bad in [
            "",
            "sha256=",
            "sha1=abcd",
            "sha256=zz",
            "b63bb356dff0f1c24379efea2d6ef0b2e2040853339d1bcf13f9018790b1f7d2",
            "sha256=b63bb356dff0f1c24379efea2d6ef0b2e2040853339d1bcf13f9018790b1f7",
            "sha256=é",
        ] {
            assert_eq!(
                Signature::parse(Some(bad.as_bytes())),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            Signature::parse(Some(&[0xff, 0xfe])),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn a_body_signed_with_any_configured_secret_verifies_and_others_do_not() {
        let v = verifier(&["old-secret", "new-secret"]);
        let body = br#"{"object":"whatsapp_business_account"}"#;

        assert!(v.verify(body, &parsed(&sign("old-secret", body))));
        assert!(v.verify(body, &parsed(&sign("new-secret", body))));
        assert!(!v.verify(body, &parsed(&sign("other-secret", body))));
        assert!(!v.verify(b"tampered", &parsed(&sign("new-secret", body))));
    }

    #[test]
    fn non_ascii_bodies_verify_over_their_exact_bytes_escaped_or_raw() {
        let v = verifier(&["s3cret"]);
        let raw_utf8 = r#"{"text":"السلام عليكم Zoë 🕋"}"#;
        let escaped = escape_non_ascii(raw_utf8);

        assert!(
            escaped.contains(r"\u0627") && escaped.contains(r"\ud83d\udd4b"),
            "{escaped}"
        );
        assert!(v.verify(
            raw_utf8.as_bytes(),
            &parsed(&sign("s3cret", raw_utf8.as_bytes()))
        ));
        assert!(v.verify(
            escaped.as_bytes(),
            &parsed(&sign("s3cret", escaped.as_bytes()))
        ));
    }

    #[test]
    fn a_body_unescaped_in_transit_still_verifies_against_metas_escaped_signature() {
        let v = verifier(&["s3cret"]);
        let raw_utf8 = r#"{"name":"Muḥammad مُحَمَّد"}"#;
        let meta_signed = sign("s3cret", escape_non_ascii(raw_utf8).as_bytes());

        assert!(v.verify(raw_utf8.as_bytes(), &parsed(&meta_signed)));
    }

    #[test]
    fn no_secrets_make_no_verifier() {
        assert!(Verifier::new(&[]).is_none());
    }
}
