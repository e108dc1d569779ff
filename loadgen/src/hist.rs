//! Histograms: one shape for every latency (1 µs to 1 h, 3 significant
//! digits, values in microseconds), the per-thread recorder, merging, and
//! the base64 V2-deflate form that JSON carries so runs can be merged later.
//!
//! Memory is bounded whatever the run length: a histogram of this shape is
//! a fixed array (about 180 KiB), and interval histograms are merged and
//! reduced to a summary as soon as every thread has finished the interval.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// Lowest recordable value: 1 µs.
pub const LOWEST_US: u64 = 1;
/// Highest trackable value: one hour, in µs. Longer values saturate.
pub const HIGHEST_US: u64 = 3_600_000_000;
/// Significant decimal digits kept.
pub const SIGFIG: u8 = 3;

/// A histogram of the shape every serverlab latency uses.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Adds `from` into `into`. Both have the shape of [`new_histogram`], so
/// adding cannot fail; saturating keeps it infallible for foreign ones.
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Serialises `h` as base64 of the V2-deflate encoding (what HdrHistogram's
/// Java, C and Rust tools decode, and what interval logs carry).
pub fn to_base64(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("serialising into a Vec cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes [`to_base64`]'s output (V2 with or without deflate).
pub fn from_base64(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram does not decode: {e:?}"))
}

/// The latencies one thread records. Every request ends in exactly one
/// sample of `corrected` and one of `uncorrected`, errors included.
pub struct Recorder {
    /// From the intended send time to the end (coordinated omission
    /// corrected; equal to `uncorrected` in a closed loop, plus the
    /// connect time with `--no-keepalive`).
    pub corrected: Histogram<u64>,
    /// From the actual send to the end.
    pub uncorrected: Histogram<u64>,
    /// Actual send − intended send.
    pub send_lag: Histogram<u64>,
    /// Time to establish each connection.
    pub connect: Histogram<u64>,
    /// `corrected` for the current interval only.
    pub interval: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            send_lag: new_histogram(),
            connect: new_histogram(),
            interval: new_histogram(),
        }
    }
}

impl Recorder {
    /// Records one finished request.
    pub fn request(&mut self, corrected_us: u64, uncorrected_us: u64) {
        self.corrected.saturating_record(corrected_us);
        self.interval.saturating_record(corrected_us);
        self.uncorrected.saturating_record(uncorrected_us);
    }

    /// Forgets everything (the end of the warmup).
    pub fn reset(&mut self) {
        self.corrected.reset();
        self.uncorrected.reset();
        self.send_lag.reset();
        self.connect.reset();
        self.interval.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_merge() {
        let mut a = new_histogram();
        for v in [1, 10, 100, 1000, 10_000, 5_000_000_000] {
            a.saturating_record(v);
        }
        let b = from_base64(&to_base64(&a)).unwrap();
        assert_eq!(a, b);
        let mut sum = new_histogram();
        merge(&mut sum, &a);
        merge(&mut sum, &b);
        assert_eq!(sum.len(), 12);
        assert_eq!(sum.max(), a.max());
        assert!(from_base64("not base64!").is_err());
    }
}
