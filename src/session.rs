//! One session as the index holds it: immutable identity plus one state word.

use compact_str::CompactString;

use crate::codec::CLIENT_BYTES;
use crate::state::Word;
use crate::sync::{AtomicU64, Ordering};

/// A session. Everything but `state` is written once, before the index publishes the
/// session with a release store, and never again.
pub(crate) struct Session {
    state: AtomicU64,
    /// Issue time, ms since the Unix epoch.
    pub(crate) created_ms: u64,
    /// The keystream this session's tokens come from; unique in the store, and in
    /// issue order within a shard.
    pub(crate) stream: u64,
    pub(crate) client: [u8; CLIENT_BYTES],
    /// Inline up to 24 bytes, so a typical e-mail uid costs no second allocation.
    pub(crate) uid: CompactString,
    #[cfg(loom)]
    witness: crate::sync::Witness,
}

impl Session {
    pub(crate) fn new(uid: &str, client: [u8; CLIENT_BYTES], stream: u64, created_ms: u64) -> Self {
        Session {
            state: AtomicU64::new(Word::FRESH.bits()),
            created_ms,
            stream,
            client,
            uid: CompactString::new(uid),
            #[cfg(loom)]
            witness: crate::sync::Witness::new(),
        }
    }

    #[inline]
    pub(crate) fn load(&self) -> Word {
        #[cfg(loom)]
        self.witness.read();
        // Acquire pairs with the AcqRel of `cas`: whoever sees a word also sees
        // everything its writer did before writing it.
        Word::from_bits(self.state.load(Ordering::Acquire))
    }

    /// Moves the state from `current` to `new`; on failure returns what is there now.
    /// This is the linearization point of every state change of a session.
    #[inline]
    pub(crate) fn cas(&self, current: Word, new: Word) -> Result<(), Word> {
        #[cfg(loom)]
        if crate::sync::faults::active(crate::sync::faults::Fault::SplitCas) {
            let there = self.state.load(Ordering::Acquire);
            if there != current.bits() {
                return Err(Word::from_bits(there));
            }
            self.state.store(new.bits(), Ordering::Release);
            return Ok(());
        }
        // AcqRel: the word is the only mutable field, so ordering matters only between
        // successive changes of it, which this gives (and coherence alone would too).
        self.state
            .compare_exchange(
                current.bits(),
                new.bits(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(Word::from_bits)
    }

    /// Marks the session dead unless it already is. Returns the word it killed, or
    /// `None` if someone else had.
    pub(crate) fn kill(&self) -> Option<Word> {
        let mut w = self.load();
        loop {
            if w.is_dead() {
                return None;
            }
            match self.cas(w, w.dead()) {
                Ok(()) => return Some(w),
                Err(now) => w = now,
            }
        }
    }

    #[inline]
    pub(crate) fn is(&self, uid: &str, client: &[u8; CLIENT_BYTES]) -> bool {
        #[cfg(loom)]
        self.witness.read();
        self.client == *client && self.uid == uid
    }

    /// Called when the index unlinks this session; under the `EarlyFree` fault it
    /// counts as freed right here.
    #[cfg(loom)]
    pub(crate) fn unlinked(&self) {
        if crate::sync::faults::active(crate::sync::faults::Fault::EarlyFree) {
            self.witness.free();
        }
    }
}

#[cfg(loom)]
impl Drop for Session {
    fn drop(&mut self) {
        if !crate::sync::faults::active(crate::sync::faults::Fault::EarlyFree) {
            self.witness.free();
        }
    }
}
