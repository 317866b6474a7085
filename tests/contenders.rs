//! Every benchmark contender answers as baton does on scripted sequences, so none can
//! win the benchmark by skipping a row of the decision table.

#[path = "../benches/contenders/mod.rs"]
mod contenders;

use std::time::Duration;

use baton::{ManualClock, ReplayPolicy};
use contenders::{Answer, Contender, Settings, NAMES};

/// Records answers with tokens replaced by the order they first appeared in, so two
/// contenders minting different random tokens give equal transcripts exactly when
/// they answer alike.
#[derive(Default)]
struct Transcript {
    tokens: Vec<[u8; contenders::TOKEN_LEN]>,
    lines: Vec<String>,
}

impl Transcript {
    fn token_no(&mut self, t: &[u8; contenders::TOKEN_LEN]) -> usize {
        match self.tokens.iter().position(|x| x == t) {
            Some(i) => i,
            None => {
                self.tokens.push(*t);
                self.tokens.len() - 1
            }
        }
    }

    fn note(&mut self, step: &str, answer: Answer) -> Option<String> {
        let (line, token) = match answer {
            Ok(g) => {
                let n = self.token_no(&g.token);
                (format!("{step}: {:?} t{n}", g.kind), Some(g.token))
            }
            Err(r) => (format!("{step}: {r:?}"), None),
        };
        self.lines.push(line);
        token.map(|t| String::from_utf8(t.to_vec()).unwrap())
    }
}

fn script(c: &dyn Contender, clock: &ManualClock) -> Vec<String> {
    let mut t = Transcript::default();
    let uid = "script@example.com";
    let first = c.issue(uid);
    t.token_no(&first.token);
    let client = first.client();
    let t0 = first.token().to_string();

    let t1 = t.note("rotate", c.authenticate(uid, client, &t0)).unwrap();
    t.note("batch with previous", c.authenticate(uid, client, &t0));
    t.note(
        "batch with previous again",
        c.authenticate(uid, client, &t0),
    );
    let t2 = t
        .note("rotate again", c.authenticate(uid, client, &t1))
        .unwrap();
    t.note("garbage", c.authenticate(uid, client, "garbage"));
    t.note(
        "wrong token",
        c.authenticate(uid, client, "AAAAAAAAAAAAAAAAAAAAAA"),
    );
    t.note("empty token", c.authenticate(uid, client, ""));
    t.note("empty uid", c.authenticate("", client, &t2));
    t.note("malformed client", c.authenticate(uid, "nope", &t2));
    t.note(
        "unknown client",
        c.authenticate(uid, "AAAAAAAAAAAAAAAA", &t2),
    );
    t.note("unknown uid", c.authenticate("nobody", client, &t2));
    clock.advance(Duration::from_secs(6));
    t.note("previous after W", c.authenticate(uid, client, &t1));
    let t3 = t
        .note("current after W", c.authenticate(uid, client, &t2))
        .unwrap();
    t.lines.push(format!("revoke: {}", c.revoke(uid, client)));
    t.note("after revoke", c.authenticate(uid, client, &t3));
    t.lines
        .push(format!("revoke again: {}", c.revoke(uid, client)));

    // The cap: the eleventh sign-in evicts the oldest (all expire together).
    let crowd = "crowd@example.com";
    let sessions: Vec<_> = (0..11).map(|_| c.issue(crowd)).collect();
    t.note(
        "evicted",
        c.authenticate(crowd, sessions[0].client(), sessions[0].token()),
    );
    t.note(
        "kept",
        c.authenticate(crowd, sessions[1].client(), sessions[1].token()),
    );

    clock.advance(Duration::from_secs(15 * 24 * 3600));
    t.note(
        "expired",
        c.authenticate(crowd, sessions[2].client(), sessions[2].token()),
    );
    t.note(
        "after expiry",
        c.authenticate(crowd, sessions[2].client(), sessions[2].token()),
    );
    t.lines
}

/// devise_token_auth's own timing (no rotation inside W) and a revoking replay policy.
fn script_gem_timing(c: &dyn Contender, clock: &ManualClock) -> Vec<String> {
    let mut t = Transcript::default();
    let uid = "gem@example.com";
    let first = c.issue(uid);
    t.token_no(&first.token);
    let client = first.client();
    let t0 = first.token().to_string();
    t.note("inside W", c.authenticate(uid, client, &t0));
    t.note("inside W again", c.authenticate(uid, client, &t0));
    clock.advance(Duration::from_secs(5));
    let t1 = t.note("after W", c.authenticate(uid, client, &t0)).unwrap();
    t.note("previous inside W", c.authenticate(uid, client, &t0));
    clock.advance(Duration::from_secs(5));
    t.note("replayed previous", c.authenticate(uid, client, &t0));
    t.note("revoked by replay", c.authenticate(uid, client, &t1));
    t.lines
}

fn check(settings: Settings, run: fn(&dyn Contender, &ManualClock) -> Vec<String>) {
    let transcript = |name: &str| {
        let clock = ManualClock::default();
        let c = contenders::build(name, &settings, clock.clone(), 16);
        run(&*c, &clock)
    };
    let expected = transcript("baton");
    assert!(
        expected.iter().any(|l| l.contains("Rotated")),
        "{expected:#?}"
    );
    for name in NAMES.iter().filter(|n| !matches!(**n, "baton" | "floor")) {
        assert_eq!(transcript(name), expected, "{name} differs from baton");
    }
}

#[test]
fn every_contender_answers_as_baton() {
    check(Settings::default(), script);
}

#[test]
fn every_contender_answers_as_baton_with_gem_timing_and_revoking_replays() {
    check(
        Settings {
            min_rotation_interval: Duration::from_secs(5),
            replay_policy: ReplayPolicy::RevokeSession,
            ..Settings::default()
        },
        script_gem_timing,
    );
}

#[test]
fn the_floor_rotates_a_prebuilt_session() {
    let clock = ManualClock::default();
    let mut floor = contenders::build("floor", &Settings::default(), clock, 1);
    let creds = floor.populate(&["floor@example.com".to_string()]);
    let answer = floor
        .authenticate("floor@example.com", creds[0].client(), creds[0].token())
        .unwrap();
    assert_eq!(answer.kind, contenders::Kind::Rotated);
    assert_ne!(answer.token, creds[0].token);
    assert!(!floor.is_complete());
}
