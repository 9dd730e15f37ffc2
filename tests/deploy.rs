//! What ships for deployment: the Dockerfile (read, since no Docker engine runs here), the config
//! it copies into the image, the compose and Kubernetes examples in `deploy/`, and the
//! `sluice probe` subcommand that the image's HEALTHCHECK and the Kubernetes probes run.
//!
//! The Dockerfile is checked by reading it: its build command must be
//! `cargo build --release --locked`, and the config it copies to `/etc/sluice/sluice.toml` must
//! pass `sluice check` (run with this build's binary, not a fresh release build: same sources,
//! same lock file).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use serde::Deserialize;
use sluice::config::Config;
use support::process::BIN;
use support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped:
/// `("RUN", "touch src/main.rs && cargo build ...")`.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (op, args) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((op.to_ascii_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "the Dockerfile ends in a continuation");
    instructions
}

/// The instructions of the last stage (the image that ships).
fn final_stage(instructions: &[(String, String)]) -> &[(String, String)] {
    let last_from = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .unwrap();
    &instructions[last_from..]
}

/// A JSON-array (exec form) argument: `["a", "b"]`.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form: {args}: {e}"))
}

fn sluice(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn check_file(path: &Path) {
    let out = sluice(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sluice check {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dockerfile_builds_locked_and_ships_a_config_that_passes_check() {
    let instructions = dockerfile();
    let runs: Vec<&str> = instructions
        .iter()
        .filter(|(op, _)| op == "RUN")
        .map(|(_, args)| args.as_str())
        .collect();
    // Both the dependency layer and the real build use the lock file, in release mode; the
    // dependency layer comes before the sources are copied.
    let builds: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (op, args))| op == "RUN" && args.contains("cargo build"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        builds.len(),
        2,
        "a dependency build and the real one: {runs:?}"
    );
    for &i in &builds {
        assert!(
            instructions[i]
                .1
                .contains("cargo build --release --locked --bin sluice"),
            "{}",
            instructions[i].1
        );
    }
    let copy_src = instructions
        .iter()
        .position(|(op, args)| op == "COPY" && args.starts_with("src "))
        .expect("COPY src");
    assert!(builds[0] < copy_src && copy_src < builds[1]);

    let stage = final_stage(&instructions);
    let from = &stage[0].1;
    assert!(
        from.starts_with("gcr.io/distroless/cc-debian12:nonroot")
            || from.starts_with("debian:bookworm-slim"),
        "{from}"
    );
    let get = |op: &str| -> Vec<&str> {
        stage
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let user = get("USER");
    assert_eq!(user.len(), 1, "{user:?}");
    assert!(!user[0].starts_with("root") && !user[0].starts_with("0"));
    assert_eq!(get("STOPSIGNAL"), ["SIGTERM"]);
    assert_eq!(
        exec_form(get("ENTRYPOINT")[0]),
        ["/usr/local/bin/sluice"],
        "entrypoint"
    );
    assert_eq!(
        exec_form(get("CMD")[0]),
        ["run", "--config", "/etc/sluice/sluice.toml"]
    );

    // The config copied into the image passes `sluice check`.
    let copied = get("COPY")
        .into_iter()
        .find_map(|args| args.strip_suffix(" /etc/sluice/sluice.toml"))
        .expect("a COPY to /etc/sluice/sluice.toml");
    let shipped = repo().join(copied);
    check_file(&shipped);
    let config = Config::load(&shipped).unwrap();

    // The ports it exposes are the listener's and the admin API's.
    let exposed: Vec<u16> = get("EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|p| p.parse().unwrap())
        .collect();
    let admin = config
        .admin
        .as_ref()
        .expect("the image's config has an admin API");
    for port in config
        .listeners
        .iter()
        .map(|l| l.bind.port())
        .chain([admin.bind.port()])
    {
        assert!(exposed.contains(&port), "{port} not in EXPOSE {exposed:?}");
    }

    // The HEALTHCHECK runs `sluice probe` in exec form (no shell in the image) against the
    // shipped config's admin API.
    let healthcheck = get("HEALTHCHECK");
    assert_eq!(healthcheck.len(), 1);
    let cmd = &healthcheck[0][healthcheck[0].find("CMD [").expect("CMD in exec form") + 4..];
    let cmd = exec_form(cmd);
    assert_eq!(cmd[..2], ["/usr/local/bin/sluice", "probe"]);
    assert_eq!(
        cmd.last().unwrap(),
        &format!("http://{}/healthz", admin.bind)
    );

    // The state directory is writable by the image's user: created by the Dockerfile.
    let state = config.server.state_dir.to_str().unwrap().to_string();
    assert!(
        get("COPY")
            .iter()
            .any(|a| a.contains("--chown=65532") && a.ends_with(&state)),
        "no writable {state}"
    );

    let ignore = read(".dockerignore");
    for needed in ["target/", ".git/"] {
        assert!(ignore.lines().any(|l| l.trim() == needed), "{needed}");
    }
}

/// Every YAML document under `deploy/`, by file.
fn deploy_yaml() -> BTreeMap<PathBuf, Vec<serde_json::Value>> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                found.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("deploy"), &mut files);
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs = serde_norway::Deserializer::from_str(&text)
                .map(|doc| {
                    serde_json::Value::deserialize(doc)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                })
                .collect();
            (path, docs)
        })
        .collect()
}

/// Backend host names (Kubernetes Services, compose services) resolve only where the example
/// runs, so they are mapped to loopback addresses before the config is validated.
fn parse_offline(text: &str, source: &str) -> Config {
    parse_offline_hosts(text, source).0
}

/// `parse_offline`, and the host names it mapped.
fn parse_offline_hosts(text: &str, source: &str) -> (Config, Vec<String>) {
    let mut hosts = Vec::new();
    let value: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{source}: {e}"));
    let mut text = text.to_string();
    let pools = value.get("pool").and_then(|p| p.as_table());
    for pool in pools.into_iter().flat_map(|p| p.values()) {
        let backends = pool.get("backends").and_then(|b| b.as_array());
        for backend in backends.into_iter().flatten() {
            let address = backend["address"].as_str().unwrap();
            let (host, _) = address.rsplit_once(':').unwrap();
            if host.parse::<std::net::IpAddr>().is_err() && !hosts.iter().any(|h| h == host) {
                // One loopback address per name, so that distinct backends stay distinct.
                hosts.push(host.to_string());
                let ip = format!("\"127.0.1.{}:", hosts.len());
                text = text.replace(&format!("\"{host}:"), &ip);
            }
        }
    }
    let config = Config::parse(&text, Path::new(source)).unwrap_or_else(|e| panic!("{e}"));
    (config, hosts)
}

fn seconds(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not seconds: {value}"))
}

#[test]
fn every_yaml_file_parses_and_the_kubernetes_configs_are_valid_and_consistent() {
    let files = deploy_yaml();
    let names: Vec<String> = files
        .keys()
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    for expected in [
        "deploy/compose/compose.yaml",
        "deploy/kubernetes/edge.yaml",
        "deploy/kubernetes/sidecar.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }

    let mut deployments = 0;
    for (path, docs) in files
        .iter()
        .filter(|(p, _)| p.starts_with(repo().join("deploy/kubernetes")))
    {
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        let configs: BTreeMap<&str, Config> = docs
            .iter()
            .filter(|d| d["kind"] == "ConfigMap")
            .map(|d| {
                let name = d["metadata"]["name"].as_str().unwrap();
                let text = d["data"]["sluice.toml"].as_str().expect("data.sluice.toml");
                (
                    name,
                    parse_offline(text, &format!("{}:{name}", path.display())),
                )
            })
            .collect();
        assert!(!configs.is_empty(), "{}: no ConfigMap", path.display());
        assert!(kinds.contains(&"Service"), "{}: {kinds:?}", path.display());

        for deployment in docs.iter().filter(|d| d["kind"] == "Deployment") {
            deployments += 1;
            let pod = &deployment["spec"]["template"]["spec"];
            let sluice = pod["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "sluice")
                .expect("a sluice container");
            // The ConfigMap is mounted as a directory (subPath would freeze the file).
            let mount = sluice["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["mountPath"] == "/etc/sluice")
                .expect("a mount at /etc/sluice");
            assert!(mount.get("subPath").is_none(), "subPath freezes the config");
            let volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            let config = &configs[volume["configMap"]["name"].as_str().unwrap()];
            assert_eq!(
                sluice["args"],
                serde_json::json!(["run", "--config", "/etc/sluice/sluice.toml"])
            );
            // Probes run `sluice probe` on the config's admin API.
            let admin = config.admin.as_ref().expect("an admin API to probe");
            for probe in ["readinessProbe", "livenessProbe"] {
                let command = sluice[probe]["exec"]["command"].as_array().unwrap();
                assert_eq!(command[..2], ["/usr/local/bin/sluice", "probe"], "{probe}");
                assert_eq!(
                    command.last().unwrap(),
                    &format!("http://{}/healthz", admin.bind),
                    "{probe}"
                );
            }
            assert!(sluice["resources"]["requests"].is_object());
            // The grace period covers the preStop sleep and sluice's own shutdown_timeout.
            let grace = seconds(&pod["terminationGracePeriodSeconds"]);
            let pre_stop = seconds(&sluice["lifecycle"]["preStop"]["sleep"]["seconds"]);
            assert!(
                Duration::from_secs(grace)
                    > Duration::from_secs(pre_stop) + config.server.shutdown_timeout,
                "{}: grace {grace}s <= preStop {pre_stop}s + shutdown_timeout {:?}",
                path.display(),
                config.server.shutdown_timeout
            );
            // state_dir is a writable volume (the root file system is read-only).
            let state = config.server.state_dir.to_str().unwrap();
            assert!(
                sluice["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["mountPath"] == state),
                "no volume for state_dir {state}"
            );
        }
    }
    assert_eq!(deployments, 2, "edge and sidecar");

    // The edge example: several replicas, a disruption budget, zero-unavailable rollouts.
    let edge = &files[&repo().join("deploy/kubernetes/edge.yaml")];
    let deployment = edge.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    assert!(edge.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
}

#[test]
fn the_compose_example_mounts_a_valid_config_directory() {
    let files = deploy_yaml();
    let compose = &files[&repo().join("deploy/compose/compose.yaml")][0];
    let services = compose["services"].as_object().unwrap();
    let backends: Vec<&String> = services.keys().filter(|k| *k != "sluice").collect();
    assert_eq!(backends.len(), 3, "{backends:?}");
    let sluice = &services["sluice"];
    assert_eq!(sluice["build"]["context"], "../..");
    let volume = sluice["volumes"][0].as_str().unwrap();
    let (host, rest) = volume.split_once(':').unwrap();
    assert!(
        rest.starts_with("/etc/sluice:") || rest == "/etc/sluice",
        "mount the directory: {volume}"
    );
    let dir = repo().join("deploy/compose").join(host);
    assert!(dir.is_dir(), "{}", dir.display());
    let path = dir.join("sluice.toml");
    let (config, hosts) = parse_offline_hosts(&read(&path), &path.display().to_string());
    // Every backend is one of the compose services.
    assert_eq!(hosts.len(), 3, "{hosts:?}");
    for host in &hosts {
        assert!(services.contains_key(host), "{host} is not a service");
        assert!(
            sluice["depends_on"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d == host.as_str()),
            "sluice resolves {host} at start: depends_on"
        );
    }
    // Off loopback the admin API needs a token; parse_offline accepted it, so it has one.
    assert!(config.admin.unwrap().token.is_some());
}

fn probe(url: &str, timeout: &str) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let out = sluice(&["probe", "--timeout", timeout, url]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

#[test]
fn probe_exits_0_on_a_running_sluices_healthz() {
    let a = TestBackend::start("a");
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        simple_config(&[&a])
    );
    let sluice = TestSluice::start(&toml);
    let admin = sluice.admin.unwrap();
    let (code, stderr, _) = probe(&format!("http://{admin}/healthz"), "2s");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "");
    // A path the admin API does not serve is a failure, with the status on stderr.
    let (code, stderr, _) = probe(&format!("http://{admin}/nothing-here"), "2s");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
}

#[test]
fn probe_exits_1_on_a_503_a_closed_port_a_silent_server_and_https() {
    let failing = TestBackend::with_handler(
        "down",
        Default::default(),
        std::sync::Arc::new(|_req| {
            Box::pin(async {
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .body(full("down"))
                    .unwrap()
            })
        }),
    );
    let (code, stderr, _) = probe(&format!("http://{}/healthz", failing.addr), "2s");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("503"), "{stderr}");

    // A port nobody listens on: refused at once.
    let closed: SocketAddr = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let (code, stderr, _) = probe(&format!("http://{closed}/healthz"), "2s");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&closed.to_string()), "{stderr}");

    // A server that accepts (the kernel's backlog) but never answers: the timeout applies.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, stderr, took) = probe(
        &format!("http://{}/healthz", silent.local_addr().unwrap()),
        "300ms",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no answer within"), "{stderr}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Only plain http:// is supported, and it says so.
    let (code, stderr, _) = probe(&format!("https://{}/healthz", failing.addr), "2s");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("only http://"), "{stderr}");
}
