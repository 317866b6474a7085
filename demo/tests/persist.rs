//! `--data-dir` and `--secret-file`: the durable store behind the demo, opened from
//! the flags, survives a restart; a missing or wrong secret is a flag error.

use std::path::PathBuf;

use baton_demo::users::HashCost;
use baton_demo::Cli;
use clap::Parser;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("baton-demo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cli(data: &std::path::Path, secret: &std::path::Path) -> Cli {
    Cli::try_parse_from([
        "baton-demo",
        "--data-dir",
        data.to_str().unwrap(),
        "--secret-file",
        secret.to_str().unwrap(),
    ])
    .unwrap()
}

#[test]
fn sessions_survive_a_restart_and_a_wrong_secret_is_refused() {
    let d = scratch("restart");
    let (data, secret, other) = (d.join("data"), d.join("secret"), d.join("other"));
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::write(&other, "fedcba9876543210fedcba9876543210\n").unwrap();

    let state = cli(&data, &secret)
        .persistent_state(&data, HashCost::FAST)
        .unwrap();
    let c = state.store.issue("a@example.com").unwrap();
    let (client, token) = (
        c.client().as_str().to_owned(),
        c.token().as_str().to_owned(),
    );
    let next = state
        .store
        .authenticate("a@example.com", &client, &token)
        .unwrap();
    let token = next.credentials().token().as_str().to_owned();
    drop(state);

    let e = cli(&data, &other)
        .persistent_state(&data, HashCost::FAST)
        .unwrap_err();
    assert!(e.to_string().contains("--secret-file"), "{e}");
    assert!(e.to_string().contains("does not match"), "{e}");

    let state = cli(&data, &secret)
        .persistent_state(&data, HashCost::FAST)
        .unwrap();
    assert!(state
        .store
        .authenticate("a@example.com", &client, &token)
        .unwrap()
        .is_rotated());
    drop(state);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_data_dir_without_a_secret_is_a_flag_error() {
    let d = scratch("nosecret");
    let cli = Cli::try_parse_from(["baton-demo", "--data-dir", d.to_str().unwrap()]).unwrap();
    // The variable may be set in the environment running the tests: only judge the
    // message when it is not.
    if std::env::var_os("BATON_SECRET").is_none() {
        let e = cli.persistent_state(&d, HashCost::FAST).unwrap_err();
        assert!(e.to_string().contains("--secret-file"), "{e}");
        assert!(e.to_string().contains("BATON_SECRET"), "{e}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}
