//! Stateless counter tokens: the client carries its counter, the server
//! only checks that it made it.
//!
//! A token is `<n>.<mac>`: `n` in canonical decimal (no sign, no leading
//! zero) and `mac` the 64 lowercase hex digits of
//! HMAC-SHA256(key, `"serverlab-counter:" + n`). The server keeps no
//! per-client memory; any replica holding the same key can verify any
//! token. The MAC is checked with `hmac`'s `verify_slice`, which compares in
//! constant time, so response timing does not reveal how many bytes of a
//! forged MAC were right.
//!
//! What a token does not do (kept simple for teaching): it never expires and
//! can be replayed — a client may send an old token again and count from
//! there. A real design would add an expiry time or a nonce under the MAC.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt::Write as _;

type HmacSha256 = Hmac<Sha256>;

/// The text the MAC covers, before the decimal counter.
pub const DOMAIN: &str = "serverlab-counter:";

/// Why a token or a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `<decimal>.<64 lowercase hex>`.
    #[error("malformed token")]
    Malformed,
    /// Well-formed, but the MAC is not the server's: forged or altered.
    #[error("token MAC does not verify")]
    Forged,
    /// A key must have at least one byte.
    #[error("empty state key")]
    EmptyKey,
    /// A key shorter than [`MIN_KEY_BYTES`]: a short key lets anyone who
    /// holds one token find the key offline and forge tokens.
    #[error("state key of {0} bytes is too short: use at least 16 bytes (e.g. `head -c 32 /dev/urandom | base64`)")]
    ShortKey(usize),
}

/// The shortest MAC key accepted (128 bits).
pub const MIN_KEY_BYTES: usize = 16;

/// A keyed HMAC, ready to mint and verify tokens.
#[derive(Clone)]
pub struct TokenKey {
    // Keyed once; each use clones it, which skips re-hashing the key.
    mac: HmacSha256,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(…)")
    }
}

impl TokenKey {
    /// A key from bytes (a key file's contents or a `--state-key` text);
    /// at least [`MIN_KEY_BYTES`] of them.
    pub fn new(key: &[u8]) -> Result<TokenKey, TokenError> {
        if key.is_empty() {
            return Err(TokenError::EmptyKey);
        }
        if key.len() < MIN_KEY_BYTES {
            return Err(TokenError::ShortKey(key.len()));
        }
        let mac = HmacSha256::new_from_slice(key).map_err(|_| TokenError::EmptyKey)?;
        Ok(TokenKey { mac })
    }

    /// A random 256-bit key from the OS generator (replicas will not share it).
    pub fn random() -> Result<TokenKey, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(TokenKey::new(&key).expect("32 bytes is a valid key"))
    }

    fn mac_of(&self, n: u64) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN.as_bytes());
        mac.update(n.to_string().as_bytes());
        mac
    }

    /// The token for counter value `n`.
    pub fn mint(&self, n: u64) -> String {
        let tag = self.mac_of(n).finalize().into_bytes();
        let mut out = String::with_capacity(21 + 1 + 64);
        let _ = write!(out, "{n}.");
        for b in tag {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The counter value a token carries, if this key made it.
    pub fn verify(&self, token: &str) -> Result<u64, TokenError> {
        let (n_text, hex) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let n = parse_canonical(n_text).ok_or(TokenError::Malformed)?;
        let tag = decode_hex32(hex).ok_or(TokenError::Malformed)?;
        self.mac_of(n)
            .verify_slice(&tag)
            .map_err(|_| TokenError::Forged)?;
        Ok(n)
    }
}

/// A u64 in canonical decimal: digits only, no leading zero but for `0`.
/// Canonical form keeps one value to one token text.
fn parse_canonical(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    text.parse().ok()
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let t = text.as_bytes();
    if t.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in t.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(b"test key, 16 bytes or more").unwrap()
    }

    #[test]
    fn roundtrip() {
        let k = key();
        for n in [0, 1, 41, u64::MAX] {
            let t = k.mint(n);
            let (num, hex) = t.split_once('.').unwrap();
            assert_eq!(num, n.to_string());
            assert_eq!(hex.len(), 64);
            assert_eq!(k.verify(&t), Ok(n));
        }
    }

    #[test]
    fn matches_an_independent_hmac() {
        // The contract: MAC over "serverlab-counter:" + n, keyed with the
        // key's bytes. Recompute it with a fresh HMAC, not through mint().
        let mut m = HmacSha256::new_from_slice(b"test key, 16 bytes or more").unwrap();
        m.update(b"serverlab-counter:7");
        let hex: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(key().mint(7), format!("7.{hex}"));
    }

    #[test]
    fn forged_and_altered_tokens_are_refused() {
        let k = key();
        let good = k.mint(5);
        let (_, hex) = good.split_once('.').unwrap();
        // The counter changed, MAC kept.
        assert_eq!(k.verify(&format!("6.{hex}")), Err(TokenError::Forged));
        // One MAC digit changed.
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            k.verify(std::str::from_utf8(&flipped).unwrap()),
            Err(TokenError::Forged)
        );
        // A made-up MAC.
        assert_eq!(
            k.verify(&format!("1000.{}", "ab".repeat(32))),
            Err(TokenError::Forged)
        );
        // Another key's token.
        let other = TokenKey::new(b"other key, 16 bytes or more").unwrap();
        assert_eq!(k.verify(&other.mint(5)), Err(TokenError::Forged));
        assert_eq!(
            TokenKey::random().unwrap().verify(&good),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let k = key();
        let good = k.mint(5);
        let (_, hex) = good.split_once('.').unwrap();
        let bad = [
            String::new(),
            "5".to_string(),
            hex.to_string(),
            format!("05.{hex}"),
            format!("+5.{hex}"),
            format!("-5.{hex}"),
            format!(" 5.{hex}"),
            format!("5.{}", &hex[..63]),
            format!("5.{hex}0"),
            format!("5.{}", hex.to_uppercase()),
            format!("5..{hex}"),
            format!("18446744073709551616.{hex}"),
            format!("5.{}", "zz".repeat(32)),
        ];
        for t in bad {
            assert_eq!(k.verify(&t), Err(TokenError::Malformed), "{t:?}");
        }
    }

    #[test]
    fn keys_must_not_be_empty() {
        assert_eq!(TokenKey::new(b"").unwrap_err(), TokenError::EmptyKey);
        // One byte short of the minimum is refused, the minimum is taken.
        assert_eq!(
            TokenKey::new(&[7; 15]).unwrap_err(),
            TokenError::ShortKey(15)
        );
        assert!(TokenKey::new(&[7; 16]).is_ok());
    }
}
