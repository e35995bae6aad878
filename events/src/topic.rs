//! The topics of the log, their partition counts, and the partitioner that both
//! log backends share (so a record lands in the same partition on either, and
//! `log copy` preserves every offset).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Registrations and profile changes. One partition: user ids are offsets.
    Users,
    /// Logins, logouts and kicks, keyed by user.
    Sessions,
    /// Thread creation and membership. One partition: thread ids are offsets and
    /// must increase in creation order across the system.
    Threads,
    /// Posted, read and recalled messages, keyed by thread so that one thread is
    /// in one partition.
    Messages,
    /// Friend requests and acceptances, keyed by the ordered user pair.
    Social,
    /// Uploads, chunk acknowledgements and transfers, keyed by upload.
    Files,
}

impl Topic {
    pub const ALL: [Topic; 6] = [
        Topic::Users,
        Topic::Sessions,
        Topic::Threads,
        Topic::Messages,
        Topic::Social,
        Topic::Files,
    ];

    /// The topic's name without the deployment prefix.
    pub fn base_name(self) -> &'static str {
        match self {
            Topic::Users => "users",
            Topic::Sessions => "sessions",
            Topic::Threads => "threads",
            Topic::Messages => "messages",
            Topic::Social => "social",
            Topic::Files => "files",
        }
    }

    pub fn from_base_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.base_name() == name)
    }

    /// Partition counts are part of the data format: the partitioner and the
    /// message ids depend on them, so they are fixed here, not configured.
    pub fn partitions(self) -> i32 {
        match self {
            Topic::Users | Topic::Threads => 1,
            Topic::Sessions | Topic::Social | Topic::Files => 4,
            Topic::Messages => 8,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base_name())
    }
}

/// Kafka's default partitioner (murmur2, positive, modulo), so records keyed by
/// us land where a plain Kafka client would put them.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_reference_values() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn partitions_fit_message_ids() {
        for t in Topic::ALL {
            assert!(t.partitions() >= 1 && t.partitions() <= crate::ids::MAX_PARTITIONS);
            assert_eq!(Topic::from_base_name(t.base_name()), Some(t));
        }
    }
}
