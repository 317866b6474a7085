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
