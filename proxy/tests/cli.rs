//! The `accel` binary: `accel check` exit codes and messages, and `accel run` answering
//! SIGHUP (reload) and SIGTERM (graceful stop) like any daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ACCEL: &str = env!("CARGO_BIN_EXE_accel");

/// A temporary directory with an `accel.toml` and a `rules/` directory, removed on drop.
struct Setup(PathBuf);

impl Setup {
    fn new(name: &str, sidecar: &str, rules: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("accel-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        std::fs::write(dir.join("accel.toml"), sidecar).unwrap();
        for (file, text) in rules {
            std::fs::write(dir.join("rules").join(file), text).unwrap();
        }
        Self(dir)
    }

    fn config(&self) -> PathBuf {
        self.0.join("accel.toml")
    }

    fn rules(&self, file: &str) -> PathBuf {
        self.0.join("rules").join(file)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SIDECAR: &str = r#"
[upstreams.api]
endpoints = ["127.0.0.1:8001"]

[rules]
files = ["rules/*.toml"]
"#;

fn check(config: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(ACCEL);
    command.arg("check").arg("--config").arg(config).env_remove("ACCEL_CONFIG");
    for (key, value) in env {
        command.env(key, value);
    }
    let Output { status, stdout, stderr } = command.output().expect("run accel check");
    (
        status.code().expect("an exit code"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn a_valid_configuration_checks_ok() {
    let setup = Setup::new(
        "valid",
        SIDECAR,
        &[
            ("a.toml", "[[route]]\nname = \"one\"\nupstream = \"api\"\n"),
            ("b.toml", "[[route]]\nname = \"two\"\nmatch = { path = \"/x/{id}\" }\nupstream = \"api\"\n"),
        ],
    );

    let (code, stdout, stderr) = check(&setup.config(), &[]);

    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok (2 routes in 2 files)"), "{stdout}");
}

#[test]
fn every_rules_problem_is_reported_with_file_route_and_key() {
    let setup = Setup::new(
        "rules",
        SIDECAR,
        &[
            (
                "bad.toml",
                r#"
                [[route]]
                name = "leads"
                match = { path = "/api/{id}/{id}", methods = ["FETCH ME"] }
                upstream = "nowhere"
                timeouts = { response = "soon" }

                [[route]]
                name = "typo"
                upstream = "api"
                colour = "blue"

                [[route]]
                name = "retries"
                upstream = "api"
                retry = { attempts = 0, statuses = [404] }

                [[route]]
                name = "fine"
                upstream = "api"
                "#,
            ),
            ("dup.toml", "[[route]]\nname = \"fine\"\nupstream = \"api\"\n"),
        ],
    );

    let (code, stdout, stderr) = check(&setup.config(), &[]);

    assert_eq!(code, 64, "{stdout}{stderr}");
    let bad = setup.rules("bad.toml").display().to_string();
    let dup = setup.rules("dup.toml").display().to_string();
    for expected in [
        format!(r#"{bad}: route "leads": key `match.path`"#),
        format!(r#"{bad}: route "leads": key `match.methods`: "FETCH ME" is not an HTTP method"#),
        format!(r#"{bad}: route "leads": key `upstream`: unknown upstream "nowhere" (defined: api)"#),
        format!(r#"{bad}: route "leads": key `timeouts.response`"#),
        format!(r#"{bad}: route "typo": key `colour`: unknown field `colour`"#),
        format!(r#"{bad}: route "retries": key `retry.attempts`"#),
        format!(r#"{bad}: route "retries": key `retry.statuses`: 404 is not a retryable status"#),
        format!(r#"{dup}: route "fine": key `name`: duplicate route name (first defined in {bad})"#),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("\n\n"), "one line per problem:\n{stderr}");
    assert!(stderr.trim_end().ends_with("accel.toml: 8 problem(s)"), "{stderr}");
}

#[test]
fn sidecar_problems_name_the_key_and_env_overrides_are_checked_too() {
    let setup = Setup::new(
        "sidecar",
        r#"
        [listen]
        http = "everywhere"

        [limits]
        body_read_timeout = "0s"

        [upstreams.api]
        endpoints = ["no-port-here"]
        health = { path = "health", interval = "often" }
        max_connections_per_endpoint = 0

        [rules]
        files = ["rules/*.toml"]
        "#,
        &[],
    );
    let config = setup.config().display().to_string();

    let (code, _, stderr) = check(&setup.config(), &[]);

    assert_eq!(code, 64, "{stderr}");
    for expected in [
        format!("{config}: key `listen.http`"),
        format!("{config}: key `upstreams.api.endpoints[0]`"),
        format!("{config}: key `upstreams.api.health.path`"),
        format!("{config}: key `upstreams.api.health.interval`"),
        format!("{config}: key `upstreams.api.max_connections_per_endpoint`: must be at least 1"),
        format!("{config}: key `limits.body_read_timeout`: must be greater than zero"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }

    // Other ACCEL_ variables (the config path, test switches) are not configuration keys.
    let valid = Setup::new("env", SIDECAR, &[("a.toml", "[[route]]\nname = \"a\"\nupstream = \"api\"\n")]);
    let (code, _, stderr) =
        check(&valid.config(), &[("ACCEL_CONFIG", "elsewhere.toml"), ("ACCEL_REQUIRE_SERVICES", "1")]);
    assert_eq!(code, 0, "{stderr}");
    // An environment override is validated like the file.
    let (code, _, stderr) = check(&valid.config(), &[("ACCEL_ADMIN__ADDR", "nowhere")]);
    assert_eq!(code, 64);
    assert!(stderr.contains("key `admin.addr`"), "{stderr}");
}

#[test]
fn unknown_sidecar_keys_and_missing_files_are_errors() {
    let setup = Setup::new("unknown", "[listen]\nhtp = \"0.0.0.0:1\"\n", &[]);
    let (code, _, stderr) = check(&setup.config(), &[]);
    assert_eq!(code, 64);
    assert!(stderr.contains("htp"), "{stderr}");

    let (code, _, stderr) = check(Path::new("/nonexistent/accel.toml"), &[]);
    assert_eq!(code, 64);
    assert!(stderr.contains("/nonexistent/accel.toml: file not found"), "{stderr}");

    let missing = Setup::new("missing", "[rules]\nfiles = [\"rules/absent.toml\"]\n", &[]);
    let (code, _, stderr) = check(&missing.config(), &[]);
    assert_eq!(code, 64);
    assert!(stderr.contains("absent.toml: file not found"), "{stderr}");
}

#[test]
fn every_bad_sidecar_key_is_reported_at_once_not_only_the_first() {
    let setup = Setup::new(
        "every-key",
        r#"
        [listen]
        http = "127.0.0.1:0"
        htp = "0.0.0.0:1"

        [admin]
        addr = 7

        [upstreams.api]
        endpoints = 5
        colour = "red"

        [rules]
        files = ["rules/*.toml"]
        "#,
        &[],
    );
    let config = setup.config().display().to_string();

    let (code, _, stderr) = check(&setup.config(), &[]);

    assert_eq!(code, 64, "{stderr}");
    for expected in [
        format!("{config}: key `listen.htp`: unknown field"),
        format!("{config}: key `admin.addr`: invalid type"),
        format!("{config}: key `upstreams.api.colour`: unknown field"),
        format!("{config}: key `upstreams.api.endpoints`: invalid type"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
    // `endpoints` is required: taken out for its type, it is not reported again as missing.
    assert!(!stderr.contains("missing field"), "a mistyped key is reported once:\n{stderr}");
    assert!(stderr.trim_end().ends_with("accel.toml: 4 problem(s)"), "{stderr}");
}

#[test]
fn the_shipped_configuration_checks_ok() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/accel.toml");

    let (code, stdout, stderr) = check(&shipped, &[]);

    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok ("), "{stdout}");
}

#[test]
fn check_running_names_what_waits_for_a_restart() {
    let rules = [("a.toml", "[[route]]\nname = \"one\"\nupstream = \"api\"\n")];
    let running = Setup::new("running", SIDECAR, &rules);
    // Beside the running file, as an edit about to be deployed: the rules globs mean the same.
    let next = running.0.join("accel.toml.new");
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:9090\"\n[log]\naccess = false\n[cache]\nmemory = \"1MiB\"\n{SIDECAR}"
    );
    std::fs::write(&next, text).unwrap();
    let run = |config: &Path, running: &Path| {
        let mut command = Command::new(ACCEL);
        command.arg("check").arg("--config").arg(config).arg("--running").arg(running);
        let Output { status, stdout, .. } =
            command.env_remove("ACCEL_CONFIG").output().expect("run accel check");
        (status.code(), String::from_utf8_lossy(&stdout).into_owned())
    };

    let (code, stdout) = run(&next, &running.config());
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("restart needed for: listen.http, cache (a reload applies the rest)"),
        "{stdout}"
    );

    let (code, stdout) = run(&running.config(), &running.config());
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("reload applies every change from"), "{stdout}");
}

#[test]
fn a_bad_tls_certificate_or_key_is_an_error_naming_the_file() {
    let sidecar = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n{SIDECAR}"
    );
    let setup = Setup::new("tls", &sidecar, &[("a.toml", "[[route]]\nname = \"one\"\nupstream = \"api\"\n")]);
    let good = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (setup.0.join("cert.pem"), setup.0.join("key.pem"));
    let cases = [
        ("garbage cert", "not a certificate".to_owned(), good.signing_key.serialize_pem(), vec![&cert]),
        ("garbage key", good.cert.pem(), "not a key".to_owned(), vec![&key]),
        ("another's key", good.cert.pem(), other.signing_key.serialize_pem(), vec![&cert, &key]),
    ];

    for (case, cert_pem, key_pem, named) in cases {
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let (code, _, stderr) = check(&setup.config(), &[]);

        assert_ne!(code, 0, "{case}: {stderr}");
        assert!(stderr.contains("listen.tls."), "{case}: {stderr}");
        for file in named {
            assert!(stderr.contains(&file.display().to_string()), "{case}: {stderr}");
        }
    }
    // The same files, valid, check ok: the failures above are the files'.
    std::fs::write(&key, good.signing_key.serialize_pem()).unwrap();
    let (code, _, stderr) = check(&setup.config(), &[]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn several_tls_certificates_each_name_their_host_names() {
    let sidecar = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n\
         tls = [{{ cert = \"a.pem\", key = \"a.key\", names = [\"a.test\"] }}, \
         {{ cert = \"b.pem\", key = \"b.key\" }}]\n{SIDECAR}"
    );
    let setup = Setup::new("sni", &sidecar, &[("a.toml", "[[route]]\nname = \"one\"\nupstream = \"api\"\n")]);
    for name in ["a", "b"] {
        let pair = rcgen::generate_simple_self_signed(vec![format!("{name}.test")]).unwrap();
        std::fs::write(setup.0.join(format!("{name}.pem")), pair.cert.pem()).unwrap();
        std::fs::write(setup.0.join(format!("{name}.key")), pair.signing_key.serialize_pem()).unwrap();
    }

    let (code, _, stderr) = check(&setup.config(), &[]);

    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("listen.tls[1].names"), "{stderr}");
}
