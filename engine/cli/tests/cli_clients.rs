//! The client-update gate of a running appliance, through `dyad client`: many deployed clients
//! checking in at once after an application upgrade never get more concurrent updates than the
//! site setting allows; integration clients are told to be reinstalled; progress adds up.

mod common;

use std::sync::{Arc, Mutex};

use common::{keygen, Appliance};
use serde_json::Value;

#[test]
fn concurrent_check_ins_never_exceed_the_limit() {
    let root = tempfile::tempdir().expect("a temporary folder");
    let key = root.path().join("pair.key");
    keygen(&key);
    let appliance = Arc::new(Appliance::init(
        root.path(),
        "clients-a",
        &key,
        &["--app-version", "7.3.0"],
    ));
    appliance.config_set("clients/max_concurrent_upgrades", "3");
    let _server = appliance.serve();

    let answers = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..12)
        .map(|index| {
            let appliance = appliance.clone();
            let answers = answers.clone();
            std::thread::spawn(move || {
                let id = format!("client-{index}");
                let output = appliance
                    .run(
                        &["client", "check-in"],
                        &["--id", &id, "--version", "7.2.0"],
                    )
                    .ok("check-in");
                let value: Value =
                    serde_json::from_str(output.stdout.trim()).expect("a JSON answer");
                answers.lock().expect("the answers").push(value);
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a check-in thread");
    }
    let answers = answers.lock().expect("the answers").clone();
    let granted = answers
        .iter()
        .filter(|value| value["answer"] == "update-now")
        .count();
    let waiting = answers
        .iter()
        .filter(|value| value["answer"] == "retry-later")
        .count();
    assert_eq!(
        granted, 3,
        "exactly the limit is granted at once: {answers:?}"
    );
    assert_eq!(waiting, 9, "the rest retry later: {answers:?}");
    assert!(answers
        .iter()
        .filter(|value| value["answer"] == "update-now")
        .all(|value| value["target"] == "7.3.0"));

    let up_to_date = appliance
        .run(
            &["client", "check-in"],
            &["--id", "fresh", "--version", "7.3.0"],
        )
        .ok("check-in");
    assert!(
        up_to_date.stdout.contains("up-to-date"),
        "{}",
        up_to_date.stdout
    );
    let integration = appliance
        .run(
            &["client", "check-in"],
            &[
                "--id",
                "embedded",
                "--kind",
                "integration",
                "--version",
                "7.1.0",
            ],
        )
        .ok("check-in");
    assert!(
        integration.stdout.contains("manual-reinstall"),
        "{}",
        integration.stdout
    );

    let progress = appliance
        .run(&["client", "progress"], &[])
        .ok("client progress");
    assert!(
        progress.stdout.contains(
            "1 updated, 3 updating (at most 3 at once), 9 waiting, 1 need a manual reinstall"
        ),
        "{}",
        progress.stdout
    );

    // Raising the limit (a replicated site setting) lets waiting clients in at their next check-in.
    appliance.config_set("clients/max_concurrent_upgrades", "5");
    let retry = appliance
        .run(
            &["client", "check-in"],
            &["--id", "client-0", "--version", "7.2.0"],
        )
        .ok("check-in");
    let retry_other = appliance
        .run(
            &["client", "check-in"],
            &["--id", "client-11", "--version", "7.2.0"],
        )
        .ok("check-in");
    let both = format!("{}{}", retry.stdout, retry_other.stdout);
    assert!(both.contains("update-now"), "{both}");

    let bad = appliance.run(
        &["client", "check-in"],
        &["--id", "x", "--kind", "robot", "--version", "7.2.0"],
    );
    assert!(
        bad.failed("an unknown kind").contains("neither"),
        "the refusal names the problem"
    );
}
