//! Session ids: 128 bits from the operating system's random generator,
//! written as 32 lowercase hex characters in the `sid` cookie.
//!
//! 128 random bits cannot be guessed: a client that tries ids at a million
//! per second would need about 10^19 years to hit one of a million live
//! sessions. The table compares ids without early exit (see
//! [`SessionId::same`]), so timing tells nothing about how close a guess was.

use std::fmt;

/// A session id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SessionId(pub(crate) [u64; 2]);

impl SessionId {
    /// A fresh id from the OS generator (`getrandom(2)`). Fails only if the
    /// kernel's generator is unavailable.
    pub fn generate() -> Result<SessionId, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(SessionId::from_bytes(bytes))
    }

    fn from_bytes(b: [u8; 16]) -> SessionId {
        let (hi, lo) = b.split_at(8);
        SessionId([
            u64::from_be_bytes(hi.try_into().unwrap_or_default()),
            u64::from_be_bytes(lo.try_into().unwrap_or_default()),
        ])
    }

    /// Parses the cookie form: exactly 32 lowercase hex characters.
    pub fn parse(text: &str) -> Option<SessionId> {
        let t = text.as_bytes();
        if t.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in t.chunks_exact(2).enumerate() {
            bytes[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
        }
        Some(SessionId::from_bytes(bytes))
    }

    /// Equality that reads both words whatever the first holds: the time
    /// taken does not depend on how many leading bits of a guess are right.
    pub fn same(self, other: [u64; 2]) -> bool {
        ((self.0[0] ^ other[0]) | (self.0[1] ^ other[1])) == 0
    }

    /// Where the id starts probing in a table of `slots` slots. Ids made by
    /// the server are uniformly random, so their bits are already a good
    /// hash; an id a client makes up only chooses where a lookup that will
    /// fail looks, which costs at most one probe window.
    pub fn home(self, slots: usize) -> usize {
        ((u128::from(self.0[0] ^ self.0[1]) * slots as u128) >> 64) as usize
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.0[0], self.0[1])
    }
}

impl fmt::Debug for SessionId {
    // Ids are credentials: debug output shows only a prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({:08x}…)", self.0[0] >> 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip_and_strict_parsing() {
        let id = SessionId::generate().unwrap();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(SessionId::parse(&text), Some(id));
        assert_ne!(SessionId::generate().unwrap(), id);
        for bad in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdeg0123456789abcdef",
            "+123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
        let id = SessionId::parse("00000000000000010000000000000002").unwrap();
        assert_eq!(id.0, [1, 2]);
        assert!(id.same([1, 2]) && !id.same([1, 3]) && !id.same([0, 2]));
    }

    #[test]
    fn home_is_within_the_table() {
        for slots in [1, 2, 7, 200_000] {
            for _ in 0..100 {
                assert!(SessionId::generate().unwrap().home(slots) < slots);
            }
        }
    }
}
