//! The packed state word's layout: everything a rotation changes, in one `u64`, so
//! one compare-and-swap decides it.
//!
//! ```text
//!  63   62   61 ........ 36   35 ............ 0
//! dead used   generation (26)  rotated_at - created_at, ms (36)
//! ```
//!
//! Tokens are derived from the generation (see `keystream`), so the word is all a
//! rotation must publish: every thread that sees generation `g` can compute `T(g)`.
//! The word only moves forward: `generation` and the rotation offset never decrease,
//! `dead` is final, and `used` is cleared only by the rotation that bumps `generation`.

use std::fmt;

use crate::decision::SessionState;

const OFFSET_BITS: u32 = 36;
const GENERATION_BITS: u32 = 26;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
const USED: u64 = 1 << 62;
const DEAD: u64 = 1 << 63;

/// The largest rotation offset a word holds (about 795 days).
pub(crate) const MAX_OFFSET_MS: u64 = OFFSET_MASK;
/// The largest generation a word holds; the rotation past it ends the session.
pub(crate) const MAX_GENERATION: u64 = (1 << GENERATION_BITS) - 1;

/// One session's state word, as loaded. Its accessors decode the fields; `Debug`
/// prints them decoded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(u64);

impl fmt::Debug for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Word")
            .field("generation", &self.generation())
            .field("offset_ms", &self.offset_ms())
            .field("used", &self.is_used())
            .field("dead", &self.is_dead())
            .finish()
    }
}

impl Word {
    /// A fresh session: generation 0, rotated at creation.
    pub(crate) const FRESH: Word = Word(0);

    #[inline]
    pub(crate) fn from_bits(bits: u64) -> Self {
        Word(bits)
    }

    #[inline]
    pub(crate) fn bits(self) -> u64 {
        self.0
    }

    #[inline]
    pub(crate) fn generation(self) -> u64 {
        (self.0 >> OFFSET_BITS) & MAX_GENERATION
    }

    #[inline]
    pub(crate) fn offset_ms(self) -> u64 {
        self.0 & OFFSET_MASK
    }

    #[inline]
    pub(crate) fn is_dead(self) -> bool {
        self.0 & DEAD != 0
    }

    #[inline]
    pub(crate) fn is_used(self) -> bool {
        self.0 & USED != 0
    }

    #[inline]
    pub(crate) fn dead(self) -> Word {
        Word(self.0 | DEAD)
    }

    #[inline]
    pub(crate) fn used(self) -> Word {
        Word(self.0 | USED)
    }

    /// The word for `s`, or `None` if its generation or offset does not fit; the
    /// caller then ends the session rather than wrap (a wrapped generation would
    /// mint a token twice).
    #[inline]
    pub(crate) fn pack(s: &SessionState) -> Option<Word> {
        let offset = s.rotated_at_ms.checked_sub(s.created_at_ms)?;
        if s.generation > MAX_GENERATION || offset > MAX_OFFSET_MS {
            return None;
        }
        let used = if s.successor_used { USED } else { 0 };
        Some(Word((s.generation << OFFSET_BITS) | offset | used))
    }

    /// The table's view of this word, for a session created at `created_at_ms`.
    #[inline]
    pub(crate) fn unpack(self, created_at_ms: u64) -> SessionState {
        SessionState {
            generation: self.generation(),
            created_at_ms,
            rotated_at_ms: created_at_ms + self.offset_ms(),
            successor_used: self.is_used(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(g: u64, created: u64, rotated: u64, used: bool) -> SessionState {
        SessionState {
            generation: g,
            created_at_ms: created,
            rotated_at_ms: rotated,
            successor_used: used,
        }
    }

    #[test]
    fn round_trips_at_the_edges() {
        for st in [
            s(0, 0, 0, false),
            s(MAX_GENERATION, 7, 7 + MAX_OFFSET_MS, true),
            s(1, u64::MAX - MAX_OFFSET_MS, u64::MAX, false),
            s(12345, 1_704_067_200_000, 1_704_067_299_999, true),
        ] {
            let w = Word::pack(&st).unwrap();
            assert_eq!(w.unpack(st.created_at_ms), st);
            assert!(!w.is_dead());
            assert!(w.dead().is_dead());
            assert_eq!(w.dead().unpack(st.created_at_ms), st, "dead keeps the rest");
        }
        assert_eq!(Word::FRESH.unpack(5), s(0, 5, 5, false));
    }

    #[test]
    fn refuses_to_wrap() {
        assert_eq!(Word::pack(&s(MAX_GENERATION + 1, 0, 0, false)), None);
        assert_eq!(Word::pack(&s(0, 0, MAX_OFFSET_MS + 1, false)), None);
        assert_eq!(Word::pack(&s(0, 10, 9, false)), None);
    }

    #[test]
    fn flags_do_not_touch_fields() {
        let w = Word::pack(&s(MAX_GENERATION, 0, MAX_OFFSET_MS, false)).unwrap();
        assert!(w.used().is_used() && !w.used().is_dead());
        assert_eq!(w.used().dead().generation(), MAX_GENERATION);
        assert_eq!(w.used().dead().offset_ms(), MAX_OFFSET_MS);
        assert_eq!(Word::from_bits(w.bits()), w);
    }

    #[test]
    fn debug_decodes_the_fields() {
        let w = Word::pack(&s(5, 0, 1234, true)).unwrap().dead();
        assert_eq!(
            format!("{w:?}"),
            "Word { generation: 5, offset_ms: 1234, used: true, dead: true }"
        );
    }
}
