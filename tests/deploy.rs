//! The Kubernetes manifests in `deploy/kubernetes` and the `Dockerfile`.
//!
//! - every manifest validates, strictly (no unknown field), against the JSON schemas of
//!   Kubernetes [`KUBERNETES_VERSION`] with `kubernetes-validate`, offline: the schemas
//!   ship inside the package;
//! - the Dockerfile passes hadolint with no finding at all, and every `# hadolint ignore=`
//!   in it follows a comment giving the reason;
//! - the manifests fit together: replicas, probes on the admin port, non-root and
//!   read-only, selectors that match the pods, the listeners of `keygate.toml` on the
//!   container's ports, every secret from a Secret and none written in a manifest;
//! - the ConfigMap's `keygate.toml` and policies load with `keygate check`, laid out as the
//!   pod sees them: every volume the Deployment mounts (Secrets as placeholder files) and
//!   its init container run, with the mount paths moved under a temporary folder.
//!
//! `scripts/test` installs the linters (`tests/deploy/requirements.txt` into
//! `target/deploy-venv`); the manifests are read as JSON through the venv's PyYAML.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.31.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifests_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// A program of the venv `target/deploy-venv` (python, kubernetes-validate, hadolint).
fn venv_bin(name: &str) -> PathBuf {
    let p = root().join("target/deploy-venv/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which installs the deploy linters \
         (tests/deploy/requirements.txt into target/deploy-venv)",
        p.display()
    );
    p
}

/// Every YAML file under `deploy/kubernetes`, sorted.
fn yaml_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&manifests_dir(), &mut out);
    out.sort();
    assert!(!out.is_empty(), "no manifest under deploy/kubernetes");
    out
}

/// One YAML document of a manifest file.
struct Doc {
    file: PathBuf,
    value: Value,
}

/// Every document of every manifest, parsed by PyYAML (what kubernetes-validate reads).
fn docs() -> &'static [Doc] {
    static DOCS: OnceLock<Vec<Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let files = yaml_files();
        let out = Command::new(venv_bin("python"))
            .arg("-c")
            .arg(
                "import json, sys, yaml\n\
                 docs = [[f, d] for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d is not None]\n\
                 json.dump(docs, sys.stdout, default=str)",
            )
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot parse the manifests: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all: Vec<(PathBuf, Value)> = serde_json::from_slice(&out.stdout).unwrap();
        all.into_iter()
            .map(|(file, value)| Doc { file, value })
            .collect()
    })
}

fn kind_of(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or("")
}

/// The one object of this kind (and name, when given).
fn object(kind: &str, name: Option<&str>) -> &'static Value {
    let found: Vec<&Value> = docs()
        .iter()
        .map(|d| &d.value)
        .filter(|v| kind_of(v) == kind)
        .filter(|v| name.is_none_or(|n| v["metadata"]["name"] == n))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} {name:?} in deploy/kubernetes, found {}",
        found.len()
    );
    found[0]
}

fn deployment() -> &'static Value {
    object("Deployment", Some("keygate"))
}

fn pod_spec() -> &'static Value {
    &deployment()["spec"]["template"]["spec"]
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The keygate container of the Deployment.
fn keygate_container() -> &'static Value {
    array(&pod_spec()["containers"])
        .iter()
        .find(|c| c["name"] == "keygate")
        .expect("the Deployment has no container named keygate")
}

/// Every container of the pod, init containers first.
fn all_containers() -> Vec<&'static Value> {
    let spec = pod_spec();
    array(&spec["initContainers"])
        .iter()
        .chain(array(&spec["containers"]))
        .collect()
}

/// `keygate.toml` as the ConfigMap holds it.
fn configmap_toml_text() -> &'static str {
    object("ConfigMap", Some("keygate-config"))["data"]["keygate.toml"]
        .as_str()
        .expect("the ConfigMap keygate-config has no keygate.toml")
}

fn configmap_toml() -> toml::Table {
    configmap_toml_text()
        .parse()
        .expect("the ConfigMap's keygate.toml is not TOML")
}

/// The port number a probe or Service names (a number, or a container port's name).
fn container_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port is a number or a name");
    array(&container["ports"])
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

fn port_of_address(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// True when every `matchLabels` pair is a label of the Deployment's pods.
fn selects_the_pods(selector: &Value) -> bool {
    let labels = &deployment()["spec"]["template"]["metadata"]["labels"];
    let pairs = selector.as_object().expect("a selector is a map of labels");
    !pairs.is_empty() && pairs.iter().all(|(k, v)| &labels[k] == v)
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    // Kustomize's own file has no Kubernetes schema (kubernetes-validate would only warn);
    // kustomization_lists_every_manifest checks it.
    let files: Vec<PathBuf> = yaml_files()
        .into_iter()
        .filter(|f| {
            !docs()
                .iter()
                .any(|d| &d.file == f && kind_of(&d.value) == "Kustomization")
        })
        .collect();
    let resources = docs().iter().filter(|d| files.contains(&d.file)).count();
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "kubernetes-validate failed:\n{report}"
    );
    // A kind or apiVersion without a schema is only a warning to kubernetes-validate (and
    // exit 0): every resource must have been validated.
    let problems: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("INFO ")).collect();
    assert!(problems.is_empty(), "kubernetes-validate:\n{report}");
    let passed = stdout
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(
        passed, resources,
        "not every resource was validated:\n{report}"
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let k = object("Kustomization", None);
    let listed: BTreeSet<&str> = array(&k["resources"])
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let files: BTreeSet<String> = yaml_files()
        .iter()
        .filter(|f| f.file_name().unwrap() != "kustomization.yaml")
        .map(|f| {
            f.strip_prefix(manifests_dir())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    let files: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    assert_eq!(listed, files, "kustomization.yaml's resources");
}

#[test]
fn dockerfile_passes_hadolint() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(venv_bin("hadolint"));
    // Nothing but the Dockerfile's own pragmas may relax it: no user or environment config.
    for (k, _) in std::env::vars() {
        if k.starts_with("HADOLINT_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .current_dir(root())
        .args(["--no-color", "--failure-threshold", "style", "Dockerfile"])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "hadolint Dockerfile:\n{report}"
    );

    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("# hadolint ignore=") {
            let reason = i
                .checked_sub(1)
                .map(|j| lines[j])
                .filter(|l| l.starts_with('#') && !l.contains("hadolint ignore"));
            assert!(
                reason.is_some(),
                "Dockerfile line {}: `{line}` needs a comment giving the reason just above it",
                i + 1
            );
        }
    }
    // Multi-stage, and the image runs as the non-root user the pods expect.
    let froms = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "the Dockerfile is no longer multi-stage");
    let user = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("the Dockerfile sets no USER");
    assert_eq!(*user, "USER 10001:10001");
}

#[test]
fn deployment_is_replicated_probed_and_locked_down() {
    let d = deployment();
    let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
    assert!(replicas >= 2, "replicas: {replicas}");

    let c = keygate_container();
    let cfg = configmap_toml();
    let admin_port = port_of_address(cfg["admin"]["listen"].as_str().unwrap());
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(
            container_port(c, &get["port"]),
            admin_port,
            "{probe} is not on the admin listener"
        );
    }

    let pod = pod_spec();
    let pod_sc = &pod["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"], true, "pod securityContext");
    for c in all_containers() {
        let name = &c["name"];
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}: runAsNonRoot");
        assert_eq!(sc["runAsUser"], 10001, "{name}: runAsUser");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert!(
            array(&sc["capabilities"]["drop"]).contains(&Value::from("ALL")),
            "{name}: capabilities.drop"
        );
        let seccomp = if sc["seccompProfile"].is_null() {
            &pod_sc["seccompProfile"]
        } else {
            &sc["seccompProfile"]
        };
        assert_eq!(seccomp["type"], "RuntimeDefault", "{name}: seccompProfile");
        for kind in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][r].is_string(),
                    "{name}: resources.{kind}.{r}"
                );
            }
        }
    }

    // Spread across nodes: a topology spread constraint or a pod anti-affinity on the
    // host name, selecting these pods.
    let spread = array(&pod["topologySpreadConstraints"]).iter().any(|t| {
        t["topologyKey"] == "kubernetes.io/hostname"
            && selects_the_pods(&t["labelSelector"]["matchLabels"])
    });
    let anti = &pod["affinity"]["podAntiAffinity"];
    let anti = array(&anti["requiredDuringSchedulingIgnoredDuringExecution"])
        .iter()
        .chain(
            array(&anti["preferredDuringSchedulingIgnoredDuringExecution"])
                .iter()
                .map(|p| &p["podAffinityTerm"]),
        )
        .any(|t| {
            t["topologyKey"] == "kubernetes.io/hostname"
                && selects_the_pods(&t["labelSelector"]["matchLabels"])
        });
    assert!(spread || anti, "the replicas are not spread across nodes");

    let ann = &d["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], admin_port.to_string());
    assert_eq!(ann["prometheus.io/path"], "/metrics");

    // Kubernetes kills the pod after terminationGracePeriodSeconds, counted from the
    // preStop hook: keygate's own shutdown grace must fit after the hook.
    let grace = humantime::parse_duration(cfg["server"]["shutdown_grace"].as_str().unwrap())
        .unwrap()
        .as_secs();
    let pre_stop = array(&c["lifecycle"]["preStop"]["exec"]["command"])
        .iter()
        .filter_map(|a| a.as_str()?.parse::<u64>().ok())
        .sum::<u64>()
        + c["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0);
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(
        termination > grace + pre_stop,
        "terminationGracePeriodSeconds {termination} <= shutdown_grace {grace}s + preStop {pre_stop}s"
    );
}

#[test]
fn selectors_match_the_pods_and_ports_the_listeners() {
    let d = deployment();
    assert!(selects_the_pods(&d["spec"]["selector"]["matchLabels"]));
    let pdb = object("PodDisruptionBudget", None);
    assert!(
        selects_the_pods(&pdb["spec"]["selector"]["matchLabels"]),
        "the PodDisruptionBudget's selector does not match the Deployment's pods"
    );
    let replicas = d["spec"]["replicas"].as_u64().unwrap();
    let keeps = match (
        pdb["spec"]["minAvailable"].as_u64(),
        pdb["spec"]["maxUnavailable"].as_u64(),
    ) {
        (Some(min), None) => min,
        (None, Some(max)) => replicas.saturating_sub(max),
        other => panic!("the PodDisruptionBudget sets {other:?}"),
    };
    assert!(
        keeps >= 1 && keeps < replicas,
        "the PodDisruptionBudget keeps {keeps} of {replicas} replicas: it must keep some and \
         let one go"
    );

    // The listeners of keygate.toml are the container's ports, and the Services expose
    // them: agents and proxy on `keygate`, admin on `keygate-admin` only.
    let c = keygate_container();
    let cfg = configmap_toml();
    let port = |v: &toml::Value| port_of_address(v.as_str().unwrap());
    let agents = port(&cfg["server"]["listen"]);
    let admin = port(&cfg["admin"]["listen"]);
    let proxy = port(&cfg["proxy"]["listen"]);
    let container_ports: BTreeSet<u64> = array(&c["ports"])
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(container_ports, BTreeSet::from([agents, admin, proxy]));
    for (name, want) in [
        ("keygate", BTreeSet::from([agents, proxy])),
        ("keygate-admin", BTreeSet::from([admin])),
    ] {
        let s = object("Service", Some(name));
        assert!(
            selects_the_pods(&s["spec"]["selector"]),
            "the Service {name}'s selector does not match the Deployment's pods"
        );
        assert_eq!(s["spec"]["type"], "ClusterIP", "Service {name}");
        let targets: BTreeSet<u64> = array(&s["spec"]["ports"])
            .iter()
            .map(|p| container_port(c, &p["targetPort"]))
            .collect();
        assert_eq!(targets, want, "the ports of Service {name}");
    }
}

#[test]
fn replica_id_comes_from_the_pod_name() {
    let env = array(&keygate_container()["env"]);
    let id = env
        .iter()
        .find(|e| e["name"] == "KEYGATE_REPLICA_ID")
        .expect("KEYGATE_REPLICA_ID is not set");
    assert_eq!(id["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
}

/// A name or key that says it holds a secret (not one that names where a secret is:
/// `secretName`, `secretKeyRef`, `token_env`, `key_file`…).
fn secret_word(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let says = ["password", "passwd", "token", "secret"]
        .iter()
        .any(|w| lower.contains(w));
    let names_where = ["name", "ref", "_env", "_envs", "_file", "_files"]
        .iter()
        .any(|s| lower.ends_with(s));
    // Not secrets: how long a token may live, how many are cached, where they are asked.
    let about = ["_lifetime", "_capacity", "_endpoint"]
        .iter()
        .any(|s| lower.ends_with(s));
    says && !names_where && !about
}

#[test]
fn no_secret_value_in_any_manifest() {
    let mut problems = Vec::new();
    for d in docs() {
        let file = d.file.display();
        if kind_of(&d.value) == "Secret" {
            problems.push(format!("{file}: defines a Secret (reference one by name)"));
        }
        // A key that says "password", "token"… never holds a literal string.
        fn walk(v: &Value, at: &str, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        if secret_word(k) && v.is_string() {
                            out.push(format!("{at}.{k} is a literal string"));
                        }
                        walk(v, &format!("{at}.{k}"), out);
                    }
                }
                Value::Array(a) => {
                    for (i, v) in a.iter().enumerate() {
                        walk(v, &format!("{at}[{i}]"), out);
                    }
                }
                _ => {}
            }
        }
        let mut found = Vec::new();
        walk(&d.value, "", &mut found);
        problems.extend(found.into_iter().map(|p| format!("{file}: {p}")));
    }
    // Environment variables that name a secret come from a Secret, never a literal.
    for c in all_containers() {
        for e in array(&c["env"]) {
            let name = e["name"].as_str().unwrap();
            let secretish = name.split('_').any(|w| {
                [
                    "PASSWORD",
                    "PASSWD",
                    "TOKEN",
                    "SECRET",
                    "KEY",
                    "URL",
                    "CREDENTIALS",
                ]
                .contains(&w)
            });
            if secretish && e["valueFrom"]["secretKeyRef"].is_null() {
                problems.push(format!(
                    "container {}: {name} is not from a secretKeyRef",
                    c["name"]
                ));
            }
        }
    }
    // In keygate.toml a secret is named by where it is (`*_env`, `*_file`), never given.
    fn walk_toml(t: &toml::Table, at: &str, out: &mut Vec<String>) {
        for (k, v) in t {
            let here = format!("{at}{k}");
            if secret_word(k) && v.is_str() {
                out.push(format!("keygate.toml: {here} holds a secret"));
            }
            match v {
                toml::Value::Table(t) => walk_toml(t, &format!("{here}."), out),
                toml::Value::Array(a) => {
                    for v in a {
                        if let toml::Value::Table(t) = v {
                            walk_toml(t, &format!("{here}[]."), out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    walk_toml(&configmap_toml(), "", &mut problems);
    // Nor a URL with a password, nor a private key, anywhere in the text.
    for f in yaml_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let at = format!("{}:{}", f.display(), i + 1);
            if line.contains("PRIVATE KEY-----") {
                problems.push(format!("{at}: a private key"));
            }
            for (n, _) in line.match_indices("://") {
                let rest = &line[n + 3..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || "\"'`".contains(c))
                    .unwrap_or(rest.len());
                let url = &rest[..end];
                if let Some((userinfo, _)) = url.split_once('@') {
                    if userinfo.contains(':') {
                        problems.push(format!("{at}: a URL with a password"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn secrets_are_referenced_wired_and_documented() {
    let c = keygate_container();
    let env: BTreeMap<&str, &Value> = array(&c["env"])
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    // Every `*_env` of keygate.toml is set in the container, from a Secret.
    let cfg = configmap_toml();
    let mut env_keys = Vec::new();
    for (section, v) in &cfg {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                if let (true, Some(var)) = (k.ends_with("_env"), v.as_str()) {
                    env_keys.push((format!("{section}.{k}"), var.to_string()));
                }
            }
        }
    }
    assert!(!env_keys.is_empty());
    for (key, var) in &env_keys {
        let e = env
            .get(var.as_str())
            .unwrap_or_else(|| panic!("{key} = {var:?}, which the container does not set"));
        assert!(
            !e["valueFrom"]["secretKeyRef"]["name"].is_null(),
            "{var} ({key}) is not from a Secret"
        );
    }
    // Every Secret the pod reads is documented for the operator who creates it.
    let mut secrets = BTreeSet::new();
    for e in all_containers().iter().flat_map(|c| array(&c["env"])) {
        if let Some(s) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
            secrets.insert(s);
        }
    }
    for v in array(&pod_spec()["volumes"]) {
        if let Some(s) = v["secret"]["secretName"].as_str() {
            secrets.insert(s);
        }
    }
    for s in [
        "keygate-store",
        "keygate-admin",
        "keygate-signing",
        "keygate-capture",
    ] {
        assert!(secrets.contains(s), "the pod reads no Secret {s}");
    }
    let readme = std::fs::read_to_string(manifests_dir().join("README.md")).unwrap();
    for s in &secrets {
        assert!(
            readme.contains(&format!("`{s}`")),
            "deploy/kubernetes/README.md does not describe the Secret {s}"
        );
    }
}

#[test]
fn configmap_policies_are_the_repositorys() {
    let data = &object("ConfigMap", Some("keygate-config"))["data"];
    for e in std::fs::read_dir(root().join("policies")).unwrap() {
        let p = e.unwrap().path();
        if !p
            .extension()
            .is_some_and(|e| e == "cedar" || e == "cedarschema")
        {
            continue;
        }
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            data[name].as_str(),
            Some(std::fs::read_to_string(&p).unwrap().as_str()),
            "the ConfigMap's {name} is not policies/{name}: copy it into \
             deploy/kubernetes/configmap.yaml"
        );
    }
}

/// `text` with every path under one of `mounts` (longest first) moved under `root`.
fn remap(text: &str, mounts: &[String], root: &Path) -> String {
    let root = root.display().to_string();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let before_ok = text[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || "/._-".contains(c)));
        let hit = before_ok
            .then(|| {
                mounts.iter().find(|m| {
                    text[i..].starts_with(m.as_str())
                        && text[i + m.len()..]
                            .chars()
                            .next()
                            .is_none_or(|c| !(c.is_alphanumeric() || "._-".contains(c)))
                })
            })
            .flatten();
        match hit {
            Some(m) => {
                out.push_str(&root);
                out.push_str(m);
                i += m.len();
            }
            None => {
                let c = text[i..].chars().next().unwrap();
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

#[test]
fn configmap_config_loads_with_keygate_check() {
    let tmp = tempfile::tempdir().unwrap();
    let pod_root = tmp.path().join("pod");
    let volumes_dir = tmp.path().join("volumes");
    let spec = pod_spec();

    // Each volume is a folder; each mount a symbolic link to it under pod_root.
    let volumes: BTreeMap<&str, &Value> = array(&spec["volumes"])
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mut mounts: Vec<String> = Vec::new();
    let mut writable = Vec::new();
    for (name, v) in &volumes {
        let dir = volumes_dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let items: Vec<(&str, &str)> = array(&v["configMap"]["items"])
            .iter()
            .chain(array(&v["secret"]["items"]))
            .map(|i| (i["key"].as_str().unwrap(), i["path"].as_str().unwrap()))
            .collect();
        let write = |path: &str, contents: &str| {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, contents).unwrap();
        };
        if let Some(cm) = v["configMap"]["name"].as_str() {
            let data = &object("ConfigMap", Some(cm))["data"];
            if items.is_empty() {
                for (k, text) in data.as_object().unwrap() {
                    write(k, text.as_str().unwrap());
                }
            }
            for (key, path) in &items {
                let text = data[*key]
                    .as_str()
                    .unwrap_or_else(|| panic!("the ConfigMap {cm} has no key {key}"));
                write(path, text);
            }
        } else if let Some(secret) = v["secret"]["secretName"].as_str() {
            // Files of a Secret this test cannot know the keys of otherwise.
            assert!(
                !items.is_empty(),
                "volume {name}: list the items of the Secret {secret}"
            );
            for (key, path) in &items {
                write(
                    path,
                    &format!("placeholder for Secret {secret}, key {key}\n"),
                );
            }
        } else {
            assert!(v["emptyDir"].is_object(), "volume {name}: an unknown kind");
        }
    }
    for c in all_containers() {
        for m in array(&c["volumeMounts"]) {
            let path = m["mountPath"].as_str().unwrap();
            let name = m["name"].as_str().unwrap();
            let link = pod_root.join(path.trim_start_matches('/'));
            if !mounts.iter().any(|p| p == path) {
                std::fs::create_dir_all(link.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(volumes_dir.join(name), &link).unwrap();
                mounts.push(path.to_string());
            }
            if c["name"] == "keygate" && m["readOnly"] != true {
                writable.push(path.to_string());
            }
        }
    }
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));

    // The init containers, run as scripts with the mount paths moved.
    for c in array(&spec["initContainers"]) {
        let argv: Vec<&str> = array(&c["command"])
            .iter()
            .chain(array(&c["args"]))
            .map(|a| a.as_str().unwrap())
            .collect();
        let ["/bin/sh", "-c", script] = argv.as_slice() else {
            panic!(
                "init container {}: only `/bin/sh -c SCRIPT` is modelled",
                c["name"]
            );
        };
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(remap(script, &mounts, &pod_root))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init container {}: {}",
            c["name"],
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The config the container is started with, its absolute paths moved too.
    let c = keygate_container();
    let args: Vec<&str> = array(&c["command"])
        .iter()
        .chain(array(&c["args"]))
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_in_pod = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("the keygate container names no --config");
    assert_eq!(args.first(), Some(&"run"), "the container runs {args:?}");
    let config = PathBuf::from(remap(config_in_pod, &mounts, &pod_root));
    let text = std::fs::read_to_string(&config)
        .unwrap_or_else(|e| panic!("{}: {e} (not in a mounted volume?)", config.display()));
    std::fs::write(&config, remap(&text, &mounts, &pod_root)).unwrap();

    // On a read-only root file system keygate writes to its data directory and the
    // audit log only: both on writable volumes.
    let cfg = configmap_toml();
    let base = Path::new(config_in_pod).parent().unwrap().to_path_buf();
    let resolve = |p: &str| {
        let mut out = PathBuf::from("/");
        for part in base.join(p).components() {
            match part {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::Normal(n) => out.push(n),
                _ => {}
            }
        }
        out
    };
    let data_dir = resolve(cfg["server"]["data_dir"].as_str().unwrap_or("../data"));
    let audit = resolve(
        cfg["audit"]["path"]
            .as_str()
            .unwrap_or("../data/audit.jsonl"),
    );
    for (what, p) in [("data_dir", &data_dir), ("audit.path", &audit)] {
        assert!(
            writable.iter().any(|m| p.starts_with(m)),
            "{what} {} is on no writable volume of the keygate container",
            p.display()
        );
    }

    // The proxy CA key as keygate will find it: readable by its owner only.
    if let Some(key) = cfg["proxy"].get("ca_key_file").and_then(|k| k.as_str()) {
        use std::os::unix::fs::PermissionsExt;
        let p = PathBuf::from(remap(key, &mounts, &pod_root));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{key} has mode {:o}", mode & 0o777);
    }

    // The container's environment: Secrets as placeholders, the pod's name.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.env_clear();
    for e in array(&c["env"]) {
        let name = e["name"].as_str().unwrap();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            "keygate-5d8f7c9b6-x2k4q".into()
        } else if e["valueFrom"]["secretKeyRef"]
            == serde_json::json!({"name": "keygate-store", "key": "url"})
        {
            "postgres://keygate@postgres.invalid:5432/keygate?sslmode=verify-full".into()
        } else {
            let r = &e["valueFrom"]["secretKeyRef"];
            format!("placeholder-{}-{}-0123456789abcdef", r["name"], r["key"])
        };
        cmd.env(name, value);
    }
    let out = cmd
        .arg("check")
        .arg("--config")
        .arg(&config)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keygate check --config {} failed:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(": ok ("), "keygate check said: {stdout}");
}
