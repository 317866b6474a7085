//! Key names. All keys of one user carry the same hash tag, so on Redis Cluster they
//! live in one slot and a script may touch all of them (the client cap, `revoke_user`):
//!
//! ```text
//! {prefix}:{<tag>}:i             sorted set: client id -> sign-in order
//! {prefix}:{<tag>}:s:<client>    hash: generation, sign-in and rotation times, "used"
//! ```
//!
//! `<tag>` is a keyed hash of the uid in hex (`mac::TokenMac::user_tag`): Redis never
//! holds the uid, and hex cannot move the hash tag or make two users' keys collide.

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
    /// The keys of the user whose tag is `tag` (hex).
    pub(crate) fn new(prefix: &str, tag: &str) -> Self {
        debug_assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
        UserKeys {
            base: format!("{prefix}:{{{tag}}}:"),
        }
    }

    pub(crate) fn index(&self) -> String {
        format!("{}i", self.base)
    }

    pub(crate) fn session(&self, client: &str) -> String {
        format!("{}s:{client}", self.base)
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
    fn a_user_keys_share_one_tag() {
        for tag in ["00", "0123456789abcdef0123456789abcdef"] {
            let k = UserKeys::new("baton", tag);
            let tag_of = |key: &str| {
                let open = key.find('{').unwrap();
                let close = open + key[open..].find('}').unwrap();
                key[open + 1..close].to_owned()
            };
            assert_eq!(tag_of(&k.index()), tag);
            assert_eq!(tag_of(&k.session("AAAAAAAAAAAAAAAA")), tag);
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
