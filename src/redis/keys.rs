//! Key names. All keys of one user carry the same hash tag, so on Redis Cluster they
//! live in one slot and a script may touch all of them (the client cap, `revoke_user`):
//!
//! ```text
//! {prefix}:{<uid>}:i             sorted set: client id -> sign-in order
//! {prefix}:{<uid>}:s:<client>    hash: generation, times, keyed hashes of tokens
//! {prefix}:{<uid>}:t:<client>    the current token, only while a batch may need it
//! ```
//!
//! `<uid>` is the uid's bytes in hex: a uid may contain `{`, `}` or `:`, which would
//! otherwise move the hash tag or make two users' keys collide.

use std::fmt::Write;

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
    /// `{prefix}:{<uid>}:`, which the scripts extend with `s:<client>` and `t:<client>`.
    pub(crate) base: String,
}

impl UserKeys {
    /// `uid` must already be checked (1 to 255 bytes).
    pub(crate) fn new(prefix: &str, uid: &str) -> Self {
        let mut base = String::with_capacity(prefix.len() + 2 * uid.len() + 4);
        base.push_str(prefix);
        base.push_str(":{");
        for b in uid.bytes() {
            // Writing to a String cannot fail.
            let _ = write!(base, "{b:02x}");
        }
        base.push_str("}:");
        UserKeys { base }
    }

    pub(crate) fn index(&self) -> String {
        format!("{}i", self.base)
    }

    pub(crate) fn session(&self, client: &str) -> String {
        format!("{}s:{client}", self.base)
    }

    pub(crate) fn plaintext(&self, client: &str) -> String {
        format!("{}t:{client}", self.base)
    }
}

/// The pattern matching every user's index under `prefix`.
pub(crate) fn index_pattern(prefix: &str) -> String {
    format!("{prefix}:{{*}}:i")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_keys_share_one_tag_that_no_uid_can_break() {
        for uid in ["a@example.com", "x}:s:{y", "{}", "ü", &"z".repeat(255)] {
            let k = UserKeys::new("baton", uid);
            let tag = |key: &str| {
                let open = key.find('{').unwrap();
                let close = open + key[open..].find('}').unwrap();
                key[open + 1..close].to_owned()
            };
            let t = tag(&k.index());
            assert!(!t.is_empty());
            assert_eq!(tag(&k.session("AAAAAAAAAAAAAAAA")), t, "{uid}");
            assert_eq!(tag(&k.plaintext("AAAAAAAAAAAAAAAA")), t, "{uid}");
        }
        assert_ne!(UserKeys::new("p", "a").base, UserKeys::new("p", "b").base);
    }

    #[test]
    fn prefixes_are_plain() {
        assert!(valid_prefix("baton"));
        assert!(valid_prefix("app-1:baton_v2"));
        for bad in ["", "a{b", "a}", "a*", "a?", "a[b]", "a b", &"p".repeat(65)] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }
}
