//! The work a request asks for: a fixed, deterministic CPU kernel, and the
//! bodies of a chosen size.
//!
//! One *unit* of CPU work is [`ROUNDS_PER_UNIT`] rounds of the splitmix64
//! mixing function, each depending on the last, so the compiler cannot
//! vectorise or skip them and every architecture pays exactly the same.
//! `servers/benches/codec.rs` measures what one unit costs on a machine (see
//! the README for the figure measured on the reference machine).

use bytes::Bytes;
use std::hint::black_box;
use std::sync::LazyLock;

/// Rounds of splitmix64 in one unit of `cpu=` work.
pub const ROUNDS_PER_UNIT: u64 = 10_000;

/// Runs `units` units of the CPU kernel and returns its (meaningless) result.
pub fn compute(units: u32) -> u64 {
    let mut x: u64 = black_box(0x9E37_79B9_7F4A_7C15);
    for _ in 0..u64::from(units) * ROUNDS_PER_UNIT {
        x = splitmix64(x);
    }
    black_box(x)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The largest body `/work?bytes=` may ask for.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

static FILL: LazyLock<Vec<u8>> = LazyLock::new(|| vec![b'x'; MAX_BODY_BYTES]);

/// A body of `len` bytes (`len <= MAX_BODY_BYTES`), shared, not copied.
pub fn body(len: usize) -> Bytes {
    let fill: &'static [u8] = &FILL;
    Bytes::from_static(&fill[..len.min(MAX_BODY_BYTES)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_deterministic_and_depends_on_units() {
        assert_eq!(compute(2), compute(2));
        assert_ne!(compute(1), compute(2));
    }

    #[test]
    fn bodies_have_the_asked_length() {
        assert_eq!(body(0).len(), 0);
        assert_eq!(body(13).len(), 13);
        assert_eq!(body(MAX_BODY_BYTES).len(), MAX_BODY_BYTES);
    }
}
