//! The store against the sequential model: random operations, every answer compared.

mod common;

use baton::model::Model;
use common::{op, run, settings, Memory};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn store_answers_as_the_model(s in settings(), ops in prop::collection::vec(op(), 1..120)) {
        let subject = Memory::new(&s);
        let mut model = Model::new(subject.policy(), s.max_clients_per_user);
        if let Err(e) = run(&subject, &mut model, &ops) {
            return Err(TestCaseError::fail(format!("{e}\nsettings: {s:?}")));
        }
    }
}

/// The durable store, restarted cleanly at random points: a restart must change no
/// answer, so the same model checks it across restarts.
#[cfg(feature = "persist")]
mod durable {
    use std::cell::RefCell;
    use std::time::Duration;

    use baton::model::{Answer, Issued, Model};
    use baton::{
        Clock, InputError, ManualClock, PersistOptions, PersistentStore, Secret, SessionInfo,
    };
    use proptest::prelude::*;

    use super::common::{op_or_restart, run, settings, Settings, Subject};

    struct Durable {
        store: RefCell<Option<PersistentStore<ManualClock>>>,
        clock: ManualClock,
        dir: tempfile::TempDir,
        settings: Settings,
    }

    impl Durable {
        fn new(s: &Settings) -> Self {
            let d = Durable {
                store: RefCell::new(None),
                clock: ManualClock::default(),
                dir: tempfile::tempdir().unwrap(),
                settings: *s,
            };
            d.open();
            d
        }

        fn open(&self) {
            let options = PersistOptions::new(self.dir.path(), Secret::new(vec![5u8; 32]).unwrap())
                .checkpoint_interval(Duration::from_secs(3600));
            let builder = self.settings.builder().clock(self.clock.clone());
            *self.store.borrow_mut() = Some(PersistentStore::open(builder, options).unwrap());
        }

        fn with<T>(&self, f: impl FnOnce(&PersistentStore<ManualClock>) -> T) -> T {
            f(self.store.borrow().as_ref().unwrap())
        }
    }

    fn refused<T>(r: Result<T, baton::BackendError<InputError>>) -> Result<T, InputError> {
        r.map_err(|e| match e {
            baton::BackendError::Refused(e) => e,
            e => panic!("the disk failed: {e}"),
        })
    }

    impl Subject for Durable {
        fn now(&self) -> u64 {
            self.clock.now_ms()
        }
        fn advance(&self, ms: u64) {
            self.clock.advance(Duration::from_millis(ms));
        }
        fn issue(&self, uid: &str) -> Result<Issued, InputError> {
            self.with(|s| refused(s.issue(uid)).map(|c| Issued::of(&c)))
        }
        fn authenticate(&self, uid: &str, client: &str, token: &str) -> Answer {
            self.with(|s| Answer::of(&s.authenticate(uid, client, token)))
        }
        fn revoke(&self, uid: &str, client: &str) -> Result<bool, InputError> {
            self.with(|s| refused(s.revoke(uid, client)))
        }
        fn revoke_user(&self, uid: &str) -> Result<usize, InputError> {
            self.with(|s| refused(s.revoke_user(uid)))
        }
        fn sessions(&self, uid: &str) -> Result<Vec<SessionInfo>, InputError> {
            self.with(|s| s.sessions(uid))
        }
        fn live_after_sweep(&self) -> usize {
            self.with(|s| {
                s.store().sweep();
                s.store().len()
            })
        }
        fn restart(&self) {
            let old = self.store.borrow_mut().take().unwrap();
            old.close().unwrap();
            self.open();
        }
    }

    proptest! {
        // Each case opens a file and fsyncs per sign-in: fewer cases than in memory.
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn durable_store_answers_as_the_model_across_restarts(
            s in settings(),
            ops in prop::collection::vec(op_or_restart(), 1..80),
        ) {
            let subject = Durable::new(&s);
            let policy = subject.with(|st| *st.store().policy());
            let mut model = Model::new(policy, s.max_clients_per_user);
            if let Err(e) = run(&subject, &mut model, &ops) {
                return Err(TestCaseError::fail(format!("{e}\nsettings: {s:?}")));
            }
        }
    }
}
