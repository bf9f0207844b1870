//! Bad input at every `dyad` command, run as an operator would: each attempt must exit
//! non-zero, print a message that names the problem, and change nothing (the data folder, the
//! key, the role, the epoch, the sessions and the configuration stay as they were).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{dyad, free_port, keygen, path_str, Appliance, Server, SITE_HOSTNAME};

/// What must not change when a command is refused.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    role: String,
    epoch: String,
    key_fingerprint: String,
    sessions: String,
    config: String,
}

fn snapshot(appliance: &Appliance) -> Snapshot {
    let status = appliance.status();
    let text = |key: &str| status[key].as_str().unwrap_or("?").to_string();
    Snapshot {
        role: text("role"),
        epoch: text("epoch"),
        key_fingerprint: text("key_fingerprint"),
        sessions: appliance.session_list(),
        config: appliance.config_list(),
    }
}

/// Every file under `root` with its bytes (the serve log files live beside, not inside).
fn folder_contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut contents = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                contents.insert(path, bytes);
            }
        }
    }
    contents
}

fn assert_names(stderr: &str, needles: &[&str], what: &str) {
    // Shown with the test's output on failure, and with `--nocapture` to review the wording.
    eprintln!("{what}:\n  {}", stderr.trim());
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{what}: the message should name {needle:?}, got:\n{stderr}"
        );
    }
}

/// An appliance with a little data of its own, so that "unchanged" means something.
fn appliance_with_data(root: &Path, name: &str, key: &Path, extra: &[&str]) -> Appliance {
    let appliance = Appliance::init(root, name, key, extra);
    appliance.config_set("site/name", name);
    appliance.import_recording(root, (1 << 20) + 3, 7);
    appliance
}

fn temp(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a temporary folder")
}

#[test]
fn missing_and_wrong_flags_are_usage_errors_naming_the_flag() {
    let root = temp("dyad-itest-flags-");
    let dir = root.path().join("never-created");
    let dir = path_str(&dir);
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec![], vec!["Usage"]),
        (vec!["frobnicate"], vec!["frobnicate"]),
        (vec!["init", "--data-dir", dir], vec!["--name", "--listen"]),
        (vec!["status"], vec!["--data-dir"]),
        (
            vec!["status", "--data-dir", dir, "--bogus"],
            vec!["--bogus"],
        ),
        (
            vec!["serve", "--data-dir", dir, "--first-sync-delay-s", "soon"],
            vec!["--first-sync-delay-s", "soon"],
        ),
        (
            vec!["establish", "--data-dir", dir, "--backup", "127.0.0.1:1"],
            vec!["--reverse"],
        ),
        (vec!["session", "import", "--data-dir", dir], vec!["--file"]),
        (vec!["key", "set", "--data-dir", dir], vec!["--psk-file"]),
        (
            vec!["config", "set", "--data-dir", dir, "only-a-key"],
            vec!["VALUE"],
        ),
        (
            vec![
                "init",
                "--data-dir",
                dir,
                "--name",
                "x",
                "--listen",
                "127.0.0.1:1",
                "--cert-pem",
                "c.pem",
            ],
            vec!["--key-pem"],
        ),
    ];
    for (args, needles) in cases {
        let output = dyad(&args);
        let what = format!("dyad {}", args.join(" "));
        assert_eq!(
            output.status.code(),
            Some(2),
            "{what} is a usage error: {output:?}"
        );
        assert_names(&output.stderr, &needles, &what);
    }
    assert!(
        !Path::new(dir).exists(),
        "no usage error created the data folder"
    );
}

#[test]
fn uninitialised_folder_is_named_by_every_command_and_left_untouched() {
    let root = temp("dyad-itest-uninit-");
    let key = root.path().join("pair.key");
    keygen(&key);
    let recording = root.path().join("some.rec");
    common::write_recording(&recording, 1000, 1);
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).expect("create an empty folder");
    let missing = root.path().join("missing");
    for dir in [&empty, &missing] {
        let dir = path_str(dir);
        let commands: Vec<Vec<&str>> = vec![
            vec!["status", "--data-dir", dir],
            vec!["status", "--data-dir", dir, "--json"],
            vec!["config", "set", "--data-dir", dir, "site/name", "x"],
            vec!["config", "get", "--data-dir", dir, "site/name"],
            vec!["config", "delete", "--data-dir", dir, "site/name"],
            vec!["config", "list", "--data-dir", dir],
            vec![
                "session",
                "import",
                "--data-dir",
                dir,
                "--file",
                path_str(&recording),
            ],
            vec!["session", "list", "--data-dir", dir],
            vec!["session", "verify", "--data-dir", dir],
            vec!["conflicts", "list", "--data-dir", dir],
            vec!["conflicts", "export", "--data-dir", dir],
            vec!["promote", "--data-dir", dir],
            vec!["demote", "--data-dir", dir],
            vec![
                "establish",
                "--data-dir",
                dir,
                "--backup",
                "127.0.0.1:1",
                "--reverse",
                "127.0.0.1:2",
            ],
            vec!["sync-now", "--data-dir", dir],
            vec!["break", "--data-dir", dir],
            vec!["key", "show", "--data-dir", dir],
            vec![
                "key",
                "set",
                "--data-dir",
                dir,
                "--psk-file",
                path_str(&key),
            ],
            vec!["serve", "--data-dir", dir],
        ];
        for args in commands {
            let what = format!("dyad {}", args.join(" "));
            // The operator's to fix (run `dyad init`): exit code 64.
            let stderr = dyad(&args).failed_with(&what, 64);
            assert_names(
                &stderr,
                &["not an initialised data folder", "dyad init"],
                &what,
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(&empty).expect("the empty folder").count(),
        0,
        "nothing was written into the uninitialised folder"
    );
    assert!(!missing.exists(), "the missing folder was not created");
}

#[test]
fn init_refusals_leave_the_folder_as_it_was() {
    let root = temp("dyad-itest-init-");
    let key = root.path().join("pair.key");
    keygen(&key);
    let other_key = root.path().join("other.key");
    keygen(&other_key);
    let appliance = Appliance::init(root.path(), "itest-a", &key, &[]);
    let before = folder_contents(&appliance.dir);

    let again = dyad(&[
        "init",
        "--data-dir",
        appliance.dir_str(),
        "--name",
        "intruder",
        "--listen",
        "127.0.0.1:9",
        "--psk-file",
        path_str(&other_key),
    ])
    .failed("init into an initialised folder");
    assert_names(
        &again,
        &["already holds an appliance", "nothing was changed"],
        "init again",
    );
    assert_eq!(
        folder_contents(&appliance.dir),
        before,
        "the second init changed nothing"
    );

    // Refusals before anything is written: the new folder never becomes an appliance.
    let corrupt_key = root.path().join("corrupt.key");
    std::fs::write(&corrupt_key, "dyad-psk-1:not-a-key\n").expect("write a corrupt key");
    let fresh = root.path().join("fresh");
    let fresh_dir = path_str(&fresh);
    let missing_key = root.path().join("no-such.key");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--app-version", "seven", "--psk-file", path_str(&key)],
            vec!["--app-version", "seven"],
        ),
        (
            vec!["--base-version", "1.2.3.4", "--psk-file", path_str(&key)],
            vec!["--base-version"],
        ),
        (
            vec!["--psk-file", path_str(&missing_key)],
            vec!["--psk-file", "no-such.key"],
        ),
        (
            vec!["--psk-file", path_str(&corrupt_key)],
            vec!["inter-appliance key"],
        ),
    ];
    for (extra, needles) in cases {
        let mut args = vec![
            "init",
            "--data-dir",
            fresh_dir,
            "--name",
            "fresh",
            "--listen",
            "127.0.0.1:9",
        ];
        args.extend(extra);
        let what = format!("dyad {}", args.join(" "));
        let stderr = dyad(&args).failed(&what);
        assert_names(&stderr, &needles, &what);
        assert!(
            !fresh.join("appliance.json").exists(),
            "{what} left an initialised folder behind"
        );
    }
    for (listen, needles) in [
        ("no-port", vec!["--listen", "no-port"]),
        ("host:99999", vec!["--listen"]),
    ] {
        let args = [
            "init",
            "--data-dir",
            fresh_dir,
            "--name",
            "fresh",
            "--listen",
            listen,
            "--psk-file",
            path_str(&key),
        ];
        let what = format!("dyad {}", args.join(" "));
        let stderr = dyad(&args).failed(&what);
        assert_names(&stderr, &needles, &what);
        assert!(
            !fresh.join("appliance.json").exists(),
            "{what} left an appliance behind"
        );
    }
}

#[test]
fn key_set_with_a_corrupted_key_file_keeps_the_key() {
    let root = temp("dyad-itest-keyset-");
    let key = root.path().join("pair.key");
    keygen(&key);
    let appliance = Appliance::init(root.path(), "itest-a", &key, &[]);
    let fingerprint = appliance.run(&["key", "show"], &[]).ok("key show").stdout;
    let key_bytes = std::fs::read(appliance.dir.join("psk.key")).expect("the key file");
    let good = std::fs::read_to_string(&key).expect("the key text");
    let good = good.trim();

    let flipped = {
        let mut chars: Vec<char> = good.chars().collect();
        let last = chars.len() - 3;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", b"this is not a key\n".to_vec()),
        ("truncated", good.as_bytes()[..good.len() - 5].to_vec()),
        ("flipped", flipped.into_bytes()),
        ("binary", vec![0xff, 0xfe, 0x00, 0x80]),
        ("huge", vec![b'a'; 300 * 1024]),
    ];
    for (name, bytes) in variants {
        let file = root.path().join(format!("{name}.key"));
        std::fs::write(&file, &bytes).expect("write a corrupted key file");
        let what = format!("key set with a {name} key file");
        let stderr = appliance
            .run(&["key", "set"], &["--psk-file", path_str(&file)])
            .failed(&what);
        assert_names(&stderr, &["key"], &what);
        assert_eq!(
            std::fs::read(appliance.dir.join("psk.key")).expect("the key file"),
            key_bytes,
            "{what} changed the key file"
        );
    }
    let missing = root.path().join("absent.key");
    let stderr = appliance
        .run(&["key", "set"], &["--psk-file", path_str(&missing)])
        .failed("key set with a missing file");
    assert_names(&stderr, &["absent.key"], "key set with a missing file");
    assert_eq!(
        appliance.run(&["key", "show"], &[]).ok("key show").stdout,
        fingerprint
    );
}

#[test]
fn a_second_serve_on_one_folder_is_refused_and_the_first_keeps_running() {
    let root = temp("dyad-itest-serve-");
    let key = root.path().join("pair.key");
    keygen(&key);
    let appliance = appliance_with_data(root.path(), "itest-a", &key, &[]);
    let mut first = appliance.serve();
    let before = snapshot(&appliance);

    let mut second = appliance.spawn_serve();
    let status = second.guard.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the second serve exits with an error");
    assert_names(
        &second.log_text(),
        &[
            "another `dyad serve` is already running",
            appliance.dir_str(),
        ],
        "second serve",
    );
    assert!(
        first.guard.exited().is_none(),
        "the first server is still running"
    );
    assert_eq!(
        snapshot(&appliance),
        before,
        "the refused serve changed nothing"
    );
    appliance.config_set("site/after", "still answering");

    // A server whose failover port is taken says so.
    let other = Appliance::init(root.path(), "itest-b", &key, &[]);
    let blocker = std::net::TcpListener::bind(other.address()).expect("hold the port");
    let mut refused = other.spawn_serve();
    let status = refused.guard.wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "serve on a taken port exits with an error"
    );
    assert_names(
        &refused.log_text(),
        &["cannot listen on", &other.address()],
        "serve on a taken port",
    );
    drop(blocker);
    drop(first);
}

#[test]
fn serve_waits_for_a_command_briefly_holding_the_folder() {
    // An offline command (here: this test, holding the lock the way `dyad status` does while
    // no server runs) must not make a starting server give up.
    let root = temp("dyad-itest-lock-");
    let key = root.path().join("pair.key");
    keygen(&key);
    let appliance = Appliance::init(root.path(), "itest-a", &key, &[]);
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(appliance.dir.join("serve.lock"))
        .expect("open the lock file");
    lock.try_lock().expect("nobody else holds the lock");
    let mut server = appliance.spawn_serve();
    // Well inside the server's wait for the lock (3 s): the point is that it is still waiting.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server.guard.exited().is_none(),
        "serve gave up while a command held the folder:\n{}",
        server.log_text()
    );
    drop(lock);
    server.wait_ready();
    assert_eq!(appliance.role(), "standalone");
}

/// Serves `appliance` and returns it with its server.
fn served(appliance: Appliance) -> (Appliance, Server) {
    let server = appliance.serve();
    (appliance, server)
}

#[test]
fn establish_refusals_name_the_problem_and_change_nothing() {
    let root = temp("dyad-itest-establish-");
    let key = root.path().join("pair.key");
    keygen(&key);
    let other_key = root.path().join("other.key");
    keygen(&other_key);
    let (a, _server_a) = served(appliance_with_data(root.path(), "itest-a", &key, &[]));
    let (wrong_key, _server_wrong_key) = served(appliance_with_data(
        root.path(),
        "itest-wrong-key",
        &other_key,
        &[],
    ));
    let (newer, _server_newer) = served(appliance_with_data(
        root.path(),
        "itest-newer",
        &key,
        &["--app-version", "9.9.9"],
    ));
    let (b, _server_b) = served(appliance_with_data(root.path(), "itest-b", &key, &[]));
    let everyone = [&a, &wrong_key, &newer, &b];
    let before: Vec<Snapshot> = everyone
        .iter()
        .map(|appliance| snapshot(appliance))
        .collect();

    // Nothing to sync with or break while standalone.
    let stderr = a
        .run(&["sync-now"], &[])
        .failed_with("sync-now while standalone", 64);
    assert_names(&stderr, &["standalone"], "sync-now while standalone");
    let stderr = a.run(&["break"], &[]).failed("break while standalone");
    assert_names(
        &stderr,
        &["not in a relationship"],
        "break while standalone",
    );

    let unused = format!("127.0.0.1:{}", free_port());
    let newer_runs = "\"itest-newer\" runs 9.9.9".to_string();
    let a_runs = format!("\"itest-a\" runs {}", env!("CARGO_PKG_VERSION"));
    let site = format!("{SITE_HOSTNAME}:{}", b.port);
    // Each with the exit code of who is at fault: 76 the peer (or the way to it), 64 the
    // operator.
    let cases: Vec<(String, String, Vec<&str>, i32)> = vec![
        (unused.clone(), a.address(), vec![unused.as_str()], 76),
        (
            wrong_key.address(),
            a.address(),
            vec!["keys differ", "dyad key"],
            76,
        ),
        (
            newer.address(),
            a.address(),
            vec![&newer_runs, &a_runs, "same installed package"],
            76,
        ),
        (
            site.clone(),
            a.address(),
            vec!["backup address", "shared hostname"],
            64,
        ),
        (
            b.address(),
            format!("{SITE_HOSTNAME}:{}", a.port),
            vec!["reverse address", "shared hostname"],
            64,
        ),
        (
            "nonsense".into(),
            a.address(),
            vec!["nonsense", "host:port"],
            64,
        ),
        (
            b.address(),
            unused.clone(),
            vec!["reverse", unused.as_str()],
            76,
        ),
        (b.address(), b.address(), vec!["reverse"], 76),
    ];
    for (backup, reverse, needles, code) in cases {
        let what = format!("establish --backup {backup} --reverse {reverse}");
        let stderr = a
            .run(
                &["establish"],
                &["--backup", &backup, "--reverse", &reverse],
            )
            .failed_with(&what, code);
        assert_names(&stderr, &needles, &what);
        let after: Vec<Snapshot> = everyone
            .iter()
            .map(|appliance| snapshot(appliance))
            .collect();
        assert_eq!(after, before, "{what} changed nothing on either appliance");
    }

    // Once paired, the relationship refuses a second establish from either side.
    a.run(
        &["establish"],
        &["--backup", &b.address(), "--reverse", &a.address()],
    )
    .ok("establish");
    let paired = (snapshot(&a), snapshot(&b));
    let stderr = a
        .run(
            &["establish"],
            &["--backup", &newer.address(), "--reverse", &a.address()],
        )
        .failed("establish on a primary");
    assert_names(
        &stderr,
        &["already primary", "itest-b", "dyad break"],
        "establish on a primary",
    );
    let stderr = b
        .run(
            &["establish"],
            &["--backup", &a.address(), "--reverse", &b.address()],
        )
        .failed("establish on a backup");
    assert_names(
        &stderr,
        &["already backup", "itest-a", "dyad break"],
        "establish on a backup",
    );
    let stderr = newer
        .run(
            &["establish"],
            &["--backup", &b.address(), "--reverse", &newer.address()],
        )
        .failed("establish with somebody's backup");
    assert_names(&stderr, &[&newer_runs], "establish with somebody's backup");
    let stderr = wrong_key
        .run(
            &["establish"],
            &["--backup", &b.address(), "--reverse", &wrong_key.address()],
        )
        .failed("establish with another key");
    assert_names(&stderr, &["keys differ"], "establish with another key");
    assert_eq!(
        (snapshot(&a), snapshot(&b)),
        paired,
        "the refusals left the pair alone"
    );
    a.run(&["break"], &[]).ok("break");
}
