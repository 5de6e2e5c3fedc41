//! Link authentication (relay-contract §6): the upgrade bearer token and the
//! legacy HTTP delivery signature.
//!
//! Every comparison of a secret-derived value is constant time; every secret
//! list is a rotation list in which blank entries are unusable; an empty list
//! fails closed.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Lifetime of an upgrade token minted for a dial (§6.1).
pub const UPGRADE_TOKEN_TTL_SECS: u64 = 300;

/// Accepted clock skew of a delivery signature, inclusive (§6.3).
pub const DELIVERY_WINDOW_SECS: i64 = 300;

/// Why a token or signature was not made or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The secret to sign with is empty or whitespace.
    #[error("secret is blank")]
    BlankSecret,
    /// No non-blank secret/key in the rotation list: fail closed.
    #[error("no usable secret configured")]
    NoUsableSecret,
    /// The token is not URL-safe base64 of UTF-8 `payload:exp:sig`.
    #[error("token is malformed")]
    MalformedToken,
    /// The token's `exp` is not a non-negative integer.
    #[error("token expiry is not an integer")]
    BadExpiry,
    /// The token expired (`now > exp`).
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// Expiry from the token.
        exp: u64,
        /// Verification time.
        now: u64,
    },
    /// The signature matches none of the secrets.
    #[error("signature does not match")]
    BadSignature,
    /// The delivery timestamp is not an integer.
    #[error("timestamp is not an integer")]
    BadTimestamp,
    /// The delivery timestamp is more than 300 s away from now.
    #[error("timestamp outside the ±{DELIVERY_WINDOW_SECS} s window")]
    OutsideWindow,
    /// The delivery signature is not hex.
    #[error("signature is not hex")]
    BadSignatureEncoding,
}

/// A token that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The signed payload (the gateway id for upgrade tokens).
    pub payload: String,
    /// Expiry, unix seconds; 0 = never.
    pub exp: u64,
}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC is defined for keys of any length, so this cannot fail.
    let Ok(mac) = <HmacSha256 as Mac>::new_from_slice(key) else {
        unreachable!("HMAC-SHA256 accepts keys of any length")
    };
    mac
}

fn hmac_bytes(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut m = mac(key);
    m.update(message);
    m.finalize().into_bytes().into()
}

/// Lowercase hex HMAC-SHA256 of `message` under `secret` (both as UTF-8).
pub fn sign(message: &str, secret: &str) -> String {
    hex::encode(hmac_bytes(secret.as_bytes(), message.as_bytes()))
}

/// Mint a token valid for `ttl_secs` from `now_unix` (`ttl_secs == 0`: never
/// expires, `exp = 0`).
pub fn make_token(
    payload: &str,
    secret: &str,
    ttl_secs: u64,
    now_unix: u64,
) -> Result<String, AuthError> {
    let exp = if ttl_secs == 0 {
        0
    } else {
        now_unix.saturating_add(ttl_secs)
    };
    make_token_with_exp(payload, secret, exp)
}

/// Mint a token with an explicit `exp` (unix seconds, 0 = never).
pub fn make_token_with_exp(payload: &str, secret: &str, exp: u64) -> Result<String, AuthError> {
    if is_blank(secret) {
        return Err(AuthError::BlankSecret);
    }
    let signed = format!("{payload}:{exp}");
    let sig = sign(&signed, secret);
    Ok(URL_SAFE_NO_PAD.encode(format!("{signed}:{sig}")))
}

/// URL-safe alphabet, padding optional: the contract says "restore padding,
/// then decode", which is the same as accepting both forms.
const URL_SAFE_LENIENT_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Verify a bearer token at time `now` against a rotation list of secrets.
///
/// The payload may contain `:`; the last part is the signature and the
/// second-to-last the expiry. Blank secrets are skipped; if none is left the
/// check fails closed with [`AuthError::NoUsableSecret`].
pub fn verify_token<S: AsRef<str>>(
    token: &str,
    secrets: &[S],
    now: u64,
) -> Result<VerifiedToken, AuthError> {
    let usable: Vec<&str> = secrets
        .iter()
        .map(AsRef::as_ref)
        .filter(|s| !is_blank(s))
        .collect();
    if usable.is_empty() {
        return Err(AuthError::NoUsableSecret);
    }
    let raw = URL_SAFE_LENIENT_PAD
        .decode(token.trim().as_bytes())
        .map_err(|_| AuthError::MalformedToken)?;
    let text = String::from_utf8(raw).map_err(|_| AuthError::MalformedToken)?;
    let (signed, sig) = text.rsplit_once(':').ok_or(AuthError::MalformedToken)?;
    let (payload, exp_text) = signed.rsplit_once(':').ok_or(AuthError::MalformedToken)?;
    let exp: u64 = exp_text.parse().map_err(|_| AuthError::BadExpiry)?;

    let mut matched = subtle::Choice::from(0u8);
    for secret in usable {
        let expected = sign(signed, secret);
        matched |= expected.as_bytes().ct_eq(sig.as_bytes());
    }
    if !bool::from(matched) {
        return Err(AuthError::BadSignature);
    }
    if exp != 0 && now > exp {
        return Err(AuthError::Expired { exp, now });
    }
    Ok(VerifiedToken {
        payload: payload.to_owned(),
        exp,
    })
}

fn delivery_message(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut msg = format!("{timestamp}.").into_bytes();
    msg.extend_from_slice(body);
    msg
}

/// Lowercase hex signature of a legacy HTTP delivery:
/// HMAC-SHA256(key, `<timestamp>.<raw body>`).
pub fn sign_delivery(timestamp: i64, body: &[u8], key: &str) -> Result<String, AuthError> {
    if is_blank(key) {
        return Err(AuthError::BlankSecret);
    }
    Ok(hex::encode(hmac_bytes(
        key.as_bytes(),
        &delivery_message(timestamp, body),
    )))
}

/// Verify a legacy HTTP delivery (`x-relay-timestamp`, `x-relay-signature`)
/// at time `now` against a rotation list of delivery keys.
pub fn verify_delivery<S: AsRef<str>>(
    timestamp: &str,
    body: &[u8],
    signature: &str,
    keys: &[S],
    now: i64,
) -> Result<(), AuthError> {
    let usable: Vec<&str> = keys
        .iter()
        .map(AsRef::as_ref)
        .filter(|k| !is_blank(k))
        .collect();
    if usable.is_empty() {
        return Err(AuthError::NoUsableSecret);
    }
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| AuthError::BadTimestamp)?;
    if now.abs_diff(ts) > DELIVERY_WINDOW_SECS.unsigned_abs() {
        return Err(AuthError::OutsideWindow);
    }
    let provided = hex::decode(signature.trim()).map_err(|_| AuthError::BadSignatureEncoding)?;
    if provided.is_empty() {
        return Err(AuthError::BadSignatureEncoding);
    }
    let message = delivery_message(ts, body);
    let mut matched = subtle::Choice::from(0u8);
    for key in usable {
        matched |= hmac_bytes(key.as_bytes(), &message)
            .as_slice()
            .ct_eq(&provided);
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_secret_cannot_sign() {
        assert_eq!(make_token("gw", "  ", 300, 1), Err(AuthError::BlankSecret));
        assert_eq!(sign_delivery(1, b"x", ""), Err(AuthError::BlankSecret));
    }

    #[test]
    fn ttl_zero_never_expires_and_ttl_sets_exp() -> Result<(), AuthError> {
        let t = make_token("gw", "s", 0, 1_000)?;
        assert_eq!(verify_token(&t, &["s"], u64::MAX)?.exp, 0);
        let t = make_token("gw", "s", 300, 1_000)?;
        assert_eq!(
            verify_token(&t, &["s"], 1_300)?,
            VerifiedToken {
                payload: "gw".into(),
                exp: 1_300
            }
        );
        assert_eq!(
            verify_token(&t, &["s"], 1_301),
            Err(AuthError::Expired {
                exp: 1_300,
                now: 1_301
            })
        );
        Ok(())
    }

    #[test]
    fn padded_token_is_accepted_too() -> Result<(), AuthError> {
        let t = make_token_with_exp("gw-1", "s", 0)?;
        let padded = format!("{t}{}", "=".repeat((4 - t.len() % 4) % 4));
        assert_eq!(verify_token(&padded, &["s"], 0)?.payload, "gw-1");
        Ok(())
    }

    #[test]
    fn empty_secret_list_fails_closed() {
        let none: [&str; 0] = [];
        assert_eq!(
            verify_token("abc", &none, 0),
            Err(AuthError::NoUsableSecret)
        );
        assert_eq!(
            verify_delivery("1", b"", "00", &none, 1),
            Err(AuthError::NoUsableSecret)
        );
    }

    #[test]
    fn uppercase_token_signature_is_rejected() -> Result<(), AuthError> {
        // The signature is compared as the lowercase hex string it was made as.
        let signed = "gw:0";
        let sig = sign(signed, "s").to_uppercase();
        let token = URL_SAFE_NO_PAD.encode(format!("{signed}:{sig}"));
        assert_eq!(
            verify_token(&token, &["s"], 0),
            Err(AuthError::BadSignature)
        );
        Ok(())
    }
}
