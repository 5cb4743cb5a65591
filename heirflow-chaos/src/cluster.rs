//! What the runner knows of the cluster under test, read from its inventory directory the way
//! an operator wrote it: the hosts of each component group with their addresses
//! (`hosts.ini`), the floating IP (`group_vars/all.yml`) and the secrets the deploy generated
//! (`.secrets/`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use heir_supervisor::pg_tls::PgTls;

use crate::schedule::Target;

/// The component groups faults may hit.
pub const CLASSES: [&str; 5] = ["db", "queue", "scheduler", "worker", "web"];

#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub class: String,
    /// `ansible_host`, else the name.
    pub address: String,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    pub hosts: Vec<Host>,
    pub floating_ip: Option<String>,
}

/// The systemd units a `kill9` may pick on a host of each class.
pub fn units_of(class: &str) -> Vec<String> {
    let u: &[&str] = match class {
        "db" => &["postgresql@17-main", "heir-db"],
        "queue" => &["rabbitmq-server"],
        "scheduler" => &[
            "airflow-scheduler",
            "airflow-dag-processor",
            "airflow-triggerer",
            "airflow-api-server",
        ],
        "worker" => &["airflow-worker"],
        "web" => &["airflow-api-server", "airflow-flower"],
        _ => &[],
    };
    u.iter().map(|s| s.to_string()).collect()
}

/// The hosts of the component groups of an INI inventory, in file order.
pub fn parse_hosts(text: &str, origin: &Path) -> Result<Vec<Host>> {
    let mut out = Vec::new();
    let mut group = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(g) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            group = g.to_string();
            continue;
        }
        if !CLASSES.contains(&group.as_str()) {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let address = words
            .find_map(|w| w.strip_prefix("ansible_host="))
            .unwrap_or(name)
            .to_string();
        out.push(Host {
            name: name.to_string(),
            class: group.clone(),
            address,
        });
    }
    if out.is_empty() {
        bail!(
            "{}: no host in the groups {}",
            origin.display(),
            CLASSES.join(", ")
        );
    }
    Ok(out)
}

/// `key: value` at the top level of a simple YAML file (the inventory's cluster variables).
fn yaml_scalar(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let v = rest.split('#').next()?.trim().trim_matches(['"', '\'']);
        (!v.is_empty()).then(|| v.to_string())
    })
}

impl Cluster {
    /// `inventory` is the directory (`inventory/local`) or its `hosts.ini`.
    pub fn load(inventory: &Path) -> Result<Cluster> {
        let (dir, ini) = if inventory.is_dir() {
            (inventory.to_path_buf(), inventory.join("hosts.ini"))
        } else {
            let dir = inventory.parent().unwrap_or(Path::new(".")).to_path_buf();
            (dir, inventory.to_path_buf())
        };
        let text = std::fs::read_to_string(&ini)
            .with_context(|| format!("reading the inventory {}", ini.display()))?;
        let hosts = parse_hosts(&text, &ini)?;
        let floating_ip = std::fs::read_to_string(dir.join("group_vars/all.yml"))
            .ok()
            .and_then(|t| yaml_scalar(&t, "heirflow_floating_ip"));
        Ok(Cluster {
            dir,
            hosts,
            floating_ip,
        })
    }

    pub fn targets(&self) -> Vec<Target> {
        self.hosts
            .iter()
            .map(|h| Target {
                host: h.name.clone(),
                class: h.class.clone(),
                units: units_of(&h.class),
            })
            .collect()
    }

    pub fn group(&self, class: &str) -> impl Iterator<Item = &Host> {
        let class = class.to_string();
        self.hosts.iter().filter(move |h| h.class == class)
    }

    pub fn class_of(&self, host: &str) -> Option<&str> {
        self.hosts
            .iter()
            .find(|h| h.name == host)
            .map(|h| h.class.as_str())
    }

    /// The cluster CA the deploy generated, when it did: `.secrets/tls/ca.crt`.
    pub fn ca_file(&self) -> Option<PathBuf> {
        Some(self.dir.join(".secrets/tls/ca.crt")).filter(|p| p.exists())
    }

    /// How the runner connects to PostgreSQL: TLS verify-full against the cluster CA when the
    /// deploy made one (the server then refuses plain connections), plain otherwise.
    pub fn pg_tls(&self) -> Result<PgTls> {
        let ca = self.ca_file();
        PgTls::from_ca_file(ca.as_deref()).context("PostgreSQL TLS from the inventory's CA")
    }

    /// A secret the deploy generated (`.secrets/NAME`), without its trailing newline.
    pub fn secret(&self, name: &str) -> Result<String> {
        let p = self.dir.join(".secrets").join(name);
        let s = std::fs::read_to_string(&p)
            .with_context(|| format!("reading the secret {} (deployed yet?)", p.display()))?;
        Ok(s.trim_end().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_the_component_groups_with_their_addresses() {
        let ini = "[db]\nhf-db1 ansible_host=172.30.0.11 x=1\n[airflow:children]\nworker\n\
                   [worker]\n# c\nhf-worker1\n[other]\nzz ansible_host=1.2.3.4\n";
        let hosts = parse_hosts(ini, Path::new("h.ini")).unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].address, "172.30.0.11");
        assert_eq!(hosts[1].class, "worker");
        assert_eq!(hosts[1].address, "hf-worker1");
        let err = parse_hosts("[other]\nx\n", Path::new("h.ini")).unwrap_err();
        assert!(err.to_string().starts_with("h.ini: no host"), "{err}");
    }

    #[test]
    fn postgres_tls_follows_the_deployed_ca() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster {
            dir: dir.path().to_path_buf(),
            hosts: Vec::new(),
            floating_ip: None,
        };
        // no CA deployed: plain, as before
        assert!(!c.pg_tls().unwrap().is_tls());
        // a CA file is used (here one that holds no certificate: refused, and named)
        let tls = dir.path().join(".secrets/tls");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(tls.join("ca.crt"), "not a certificate\n").unwrap();
        let err = format!("{:#}", c.pg_tls().unwrap_err());
        assert!(
            err.contains(".secrets/tls/ca.crt holds no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn top_level_scalars() {
        let t = "a: 1\nheirflow_floating_ip: \"172.30.0.100\"   # the VIP\nheirflow_floating_ip_prefix: 24\n";
        assert_eq!(
            yaml_scalar(t, "heirflow_floating_ip").as_deref(),
            Some("172.30.0.100")
        );
        assert_eq!(yaml_scalar(t, "missing"), None);
    }
}
