//! A session's state cell: the atomic word and the one compare-and-swap loop that
//! every change of it goes through.

use super::word::Word;
use crate::sync::faults::{self, Fault};
use crate::sync::{AtomicU64, Ordering, Witness};

/// The atomic state word of one session, with loom's witness of its lifetime.
pub(super) struct State {
    word: AtomicU64,
    witness: Witness,
}

impl State {
    pub(super) fn new(word: Word) -> Self {
        State {
            word: AtomicU64::new(word.bits()),
            witness: Witness::new(),
        }
    }

    pub(super) fn witness(&self) -> &Witness {
        &self.witness
    }

    #[inline]
    pub(super) fn load(&self) -> Word {
        self.witness.read();
        // Acquire pairs with the AcqRel of `cas`: whoever sees a word also sees
        // everything its writer did before writing it.
        Word::from_bits(self.word.load(Ordering::Acquire))
    }

    /// The compare-and-swap loop, written once. `step` sees the current word and
    /// returns its result and the word to move to (`None`: leave it as it is). A move
    /// that loses a race re-runs `step` on the word that won, so every result is
    /// decided on the word it was applied to. The successful CAS, or the load `step`
    /// last saw when it moves nothing, is the transition's linearization point.
    #[inline(always)]
    pub(super) fn transition<T>(&self, mut step: impl FnMut(Word) -> (T, Option<Word>)) -> T {
        let mut current = self.load();
        loop {
            let (result, next) = step(current);
            let Some(next) = next else {
                return result;
            };
            match self.cas(current, next) {
                Ok(()) => return result,
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves the word from `current` to `new`; on failure returns what is there now.
    #[inline(always)]
    fn cas(&self, current: Word, new: Word) -> Result<(), Word> {
        if faults::active(Fault::SplitCas) {
            let there = self.word.load(Ordering::Acquire);
            if there != current.bits() {
                return Err(Word::from_bits(there));
            }
            self.word.store(new.bits(), Ordering::Release);
            return Ok(());
        }
        // AcqRel: the word is the only mutable field, so ordering matters only between
        // successive changes of it, which this gives (and coherence alone would too).
        self.word
            .compare_exchange(
                current.bits(),
                new.bits(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(Word::from_bits)
    }
}
