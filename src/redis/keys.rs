//! Key names. A user's keys and the live-session set of the user's bucket carry the
//! same hash tag, so on Redis Cluster they live in one slot and a script may touch all
//! of them (the client cap, `revoke_user`, the live count) in one atomic step:
//!
//! ```text
//! {prefix}:{<bucket>}:<tag>:i             sorted set: client id -> sign-in order
//! {prefix}:{<bucket>}:<tag>:s:<client>    hash: generation, sign-in and rotation times, "used"
//! {prefix}:{<bucket>}:live                sorted set: "<tag>:<client>" -> expiry, ms
//! ```
//!
//! `<tag>` is a keyed hash of the uid in hex (`mac::TokenMac::user_tag`): Redis never
//! holds the uid, and hex cannot move the hash tag or make two users' keys collide.
//! `<bucket>` is the tag's first ten bits as three hex digits: [`BUCKETS`] slots in use,
//! enough to spread over any cluster's primaries, few enough that counting every live
//! session is [`BUCKETS`] small calls rather than a walk over every user.

/// How many buckets users are spread over.
pub(crate) const BUCKETS: u16 = 1024;

/// Characters a prefix may hold: none of them is special to a key pattern or a tag.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The keys of one user.
pub(crate) struct UserKeys {
    /// `{prefix}:{<bucket>}:<tag>:`, which the scripts extend with `s:<client>`.
    pub(crate) base: String,
    /// The bucket's live-session set.
    pub(crate) live: String,
    /// The user's tag: a live-set member is `<tag>:<client>`.
    pub(crate) tag: String,
    bucket: u16,
}

impl UserKeys {
    /// The keys of the user whose tag is `tag` (hex, at least three digits).
    pub(crate) fn new(prefix: &str, tag: String) -> Self {
        debug_assert!(tag.len() >= 3 && tag.bytes().all(|b| b.is_ascii_hexdigit()));
        let bucket = u16::from_str_radix(tag.get(..3).unwrap_or("0"), 16).unwrap_or(0) % BUCKETS;
        UserKeys {
            base: format!("{prefix}:{{{bucket:03x}}}:{tag}:"),
            live: live_key(prefix, bucket),
            tag,
            bucket,
        }
    }

    /// The Redis Cluster slot of every key above (only `WAIT` on a cluster needs it).
    pub(crate) fn slot(&self) -> u16 {
        slot_of_bucket(self.bucket)
    }

    pub(crate) fn index(&self) -> String {
        format!("{}i", self.base)
    }

    pub(crate) fn session(&self, client: &str) -> String {
        format!("{}s:{client}", self.base)
    }
}

/// The live-session set of `bucket`.
pub(crate) fn live_key(prefix: &str, bucket: u16) -> String {
    format!("{prefix}:{{{bucket:03x}}}:live")
}

/// Redis Cluster's slot for the hash tag of `bucket`: CRC16 (XMODEM) of the tag, mod 16384.
fn slot_of_bucket(bucket: u16) -> u16 {
    let tag = format!("{bucket:03x}");
    crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_keys_share_one_tag() {
        for tag in ["000", "0123456789abcdef0123456789abcdef", "fff1"] {
            let k = UserKeys::new("baton", tag.to_owned());
            let tag_of = |key: &str| {
                let open = key.find('{').unwrap();
                let close = open + key[open..].find('}').unwrap();
                key[open + 1..close].to_owned()
            };
            let bucket = tag_of(&k.live);
            assert_eq!(tag_of(&k.index()), bucket);
            assert_eq!(tag_of(&k.session("AAAAAAAAAAAAAAAA")), bucket);
            assert!(k.base.contains(tag));
            assert!(u16::from_str_radix(&bucket, 16).unwrap() < BUCKETS);
        }
        assert_ne!(
            UserKeys::new("p", "aaaa".into()).base,
            UserKeys::new("p", "aaab".into()).base
        );
    }

    #[test]
    fn prefixes_are_plain() {
        assert!(valid_prefix("baton"));
        assert!(valid_prefix("app-1:baton_v2"));
        for bad in ["", "a{b", "a}", "a*", "a?", "a[b]", "a b", &"p".repeat(65)] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }

    /// The slots Redis Cluster itself reports: `redis-cli CLUSTER KEYSLOT "{000}"`
    /// and so on, on Redis 7.0.15.
    #[test]
    fn slots_are_redis_clusters() {
        assert_eq!(slot_of_bucket(0x000), 13923);
        assert_eq!(slot_of_bucket(0x3ff), 12569);
        assert_eq!(slot_of_bucket(0x1a2), 7327);
    }
}
