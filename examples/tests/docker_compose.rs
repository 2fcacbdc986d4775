//! There is no Docker engine on our machines, so the cluster files in `docker/` are checked
//! by reading them: the compose services, ports and environment must wire Redis, NATS, two
//! instances of the `scale-out` example and nginx together, and every environment variable
//! the compose file sets must be one the `scale-out` binary reads.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

fn docker_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docker")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose() -> Yaml {
    YamlLoader::load_from_str(&docker_file("compose.yaml"))
        .unwrap()
        .remove(0)
}

fn service<'a>(doc: &'a Yaml, name: &str) -> &'a Yaml {
    let s = &doc["services"][name];
    assert!(!s.is_badvalue(), "service {name} is missing");
    s
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_wires_brokers_instances_and_load_balancer() {
    let doc = compose();
    let redis = service(&doc, "redis");
    assert!(
        redis["image"].as_str().unwrap().starts_with("redis:7"),
        "Redis 7 pinned"
    );
    let nats = service(&doc, "nats");
    let nats_image = nats["image"].as_str().unwrap();
    let nats_version: Vec<u32> = nats_image
        .trim_start_matches("nats:")
        .split(['.', '-'])
        .take(2)
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        nats_version[0] == 2 && nats_version[1] >= 10,
        "NATS 2.10+ pinned: {nats_image}"
    );

    for app in ["app1", "app2"] {
        let s = service(&doc, app);
        assert_eq!(s["build"]["dockerfile"].as_str(), Some("docker/Dockerfile"));
        assert_eq!(s["build"]["context"].as_str(), Some(".."));
        let env = &s["environment"];
        assert_eq!(env["PORTS"].as_str(), Some("8080"));
        assert_eq!(env["REDIS_URL"].as_str(), Some("redis://redis:6379"));
        assert_eq!(env["NATS_URL"].as_str(), Some("nats://nats:4222"));
        assert!(env["EXCHANGE"].as_str().unwrap().contains("redis"));
        let deps = strings(&s["depends_on"]);
        assert!(deps.contains(&"redis".to_owned()) && deps.contains(&"nats".to_owned()));
    }

    let lb = service(&doc, "lb");
    assert!(lb["image"].as_str().unwrap().starts_with("nginx:"));
    assert_eq!(strings(&lb["ports"]), vec!["8080:80".to_owned()]);
    assert!(
        strings(&lb["volumes"])
            .iter()
            .any(|v| v.starts_with("./nginx.conf:/etc/nginx/nginx.conf"))
    );
    let deps = strings(&lb["depends_on"]);
    assert!(deps.contains(&"app1".to_owned()) && deps.contains(&"app2".to_owned()));
}

#[test]
fn nginx_proxies_websockets_to_both_instances() {
    let conf = docker_file("nginx.conf");
    assert!(conf.contains("server app1:8080;") && conf.contains("server app2:8080;"));
    assert!(conf.contains("listen 80;"));
    assert!(conf.contains("proxy_http_version 1.1;"));
    assert!(conf.contains("proxy_set_header Upgrade $http_upgrade;"));
    assert!(conf.contains("proxy_set_header Connection $connection_upgrade;"));
}

#[test]
fn dockerfile_builds_the_scale_out_example_with_both_backends() {
    let dockerfile = docker_file("Dockerfile");
    assert!(dockerfile.contains("--bin scale-out"));
    assert!(dockerfile.contains("--features redis,nats"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/scale-out\"]"));
    assert!(dockerfile.contains("EXPOSE 8080"));
    let manifest =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .unwrap();
    for feature in ["redis = [", "nats = ["] {
        assert!(
            manifest.contains(feature),
            "examples/Cargo.toml lacks the feature `{feature}`"
        );
    }
}

#[test]
fn every_variable_the_cluster_sets_is_read_by_the_binary() {
    let help = Command::new(env!("CARGO_BIN_EXE_scale-out"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let doc = compose();
    let mut vars: Vec<String> = doc["services"]["app1"]["environment"]
        .as_hash()
        .unwrap()
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    // Set by the Dockerfile.
    vars.extend(["HOST", "NEFFOS_JS"].map(str::to_owned));
    for var in vars {
        assert!(
            help.contains(&format!("env: {var}=")),
            "scale-out does not read {var}:\n{help}"
        );
    }
}
