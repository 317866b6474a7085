//! `/metrics`: the store's counters, its session count, and the server's own counters,
//! as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use baton::http::LayerStats;
use baton::Stats;

/// What the server counts besides the store and the layer (whose refusals of missing
/// and unreadable credentials, and outages, are its [`LayerStats`]). Only failures
/// touch these, so one shared counter each costs nothing on the good path.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Sign-ins refused for a wrong address or password.
    pub sign_in_failures: AtomicU64,
    /// Calls the session store could not answer (each a 503, or a scrape without
    /// `baton_sessions`).
    pub store_unavailable: AtomicU64,
    /// Sign-ins refused with 429 by the per-address allowance.
    pub sign_in_throttled_address: AtomicU64,
    /// Sign-ins refused with 429 by the per-account allowance.
    pub sign_in_throttled_account: AtomicU64,
    /// Sign-ins refused with 503 because the hashing queue was full.
    pub sign_in_busy: AtomicU64,
    /// Connections closed to make room, or refused, at the connection cap.
    pub connections_shed: AtomicU64,
}

impl ServerCounters {
    /// Counts one event; Relaxed because counters order nothing.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Renders the text exposition format. `live` is the store's session count, `None`
/// when the store could not be asked: the gauge is then left out, not reported as 0.
/// `s` counts this process's answers only, also when the store is shared; `layer` the
/// authentication layer's refusals and outages.
pub fn render(s: &Stats, live: Option<u64>, server: &ServerCounters, layer: &LayerStats) -> String {
    let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::with_capacity(2048);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "baton_store_up",
        "gauge",
        "Whether the session store answered this scrape (1) or not (0).",
        &[("", u64::from(live.is_some()))],
    );
    if let Some(live) = live {
        family(
            "baton_sessions",
            "gauge",
            "Sessions held: issued and not yet ended.",
            &[("", live)],
        );
    }
    family(
        "baton_sign_ins_total",
        "counter",
        "Sessions issued.",
        &[("", s.issued)],
    );
    family(
        "baton_rotations_total",
        "counter",
        "Requests that rotated their session's token.",
        &[("", s.rotated)],
    );
    family(
        "baton_batched_total",
        "counter",
        "Requests answered with the session's current token without rotating.",
        &[("", s.batched)],
    );
    family(
        "baton_rejections_total",
        "counter",
        "Requests refused with 401, by reason.",
        &[
            ("{reason=\"unknown_session\"}", s.unknown_session),
            ("{reason=\"expired\"}", s.expired),
            ("{reason=\"replayed\"}", s.replayed),
            ("{reason=\"invalid_token\"}", s.invalid_token),
            ("{reason=\"bad_input\"}", s.bad_input),
            ("{reason=\"missing_credentials\"}", layer.missing),
            ("{reason=\"malformed_credentials\"}", layer.unreadable),
        ],
    );
    family(
        "baton_sessions_ended_total",
        "counter",
        "Sessions ended other than by expiry on use, by how.",
        &[
            ("{how=\"revoked\"}", s.revoked),
            ("{how=\"evicted\"}", s.evicted),
            ("{how=\"swept\"}", s.swept),
        ],
    );
    family(
        "baton_sign_in_failures_total",
        "counter",
        "Sign-ins refused for a wrong address or password.",
        &[("", r(&server.sign_in_failures))],
    );
    family(
        "baton_store_unavailable_total",
        "counter",
        "Calls the session store did not answer: requests answered 503, scrapes without baton_sessions.",
        &[("", r(&server.store_unavailable) + layer.unavailable)],
    );
    family(
        "baton_sign_in_throttled_total",
        "counter",
        "Sign-ins refused with 429 before any hash, by the allowance exceeded.",
        &[
            ("{scope=\"address\"}", r(&server.sign_in_throttled_address)),
            ("{scope=\"account\"}", r(&server.sign_in_throttled_account)),
        ],
    );
    family(
        "baton_sign_in_busy_total",
        "counter",
        "Sign-ins refused with 503 because the password hashing queue was full.",
        &[("", r(&server.sign_in_busy))],
    );
    family(
        "baton_connections_shed_total",
        "counter",
        "Connections closed (longest idle) or refused at the connection cap.",
        &[("", r(&server.connections_shed))],
    );
    out
}
