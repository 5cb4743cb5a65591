//! Test support for modules: a local connection and a controller environment.

use std::path::PathBuf;

use crate::connection::{ConnSpec, HostConn};
use crate::modules::{FileKind, TaskCtx, TaskEnv};

/// A controller environment for tests: templates render as-is unless `{{ x }}`.
pub struct Env {
    pub dir: PathBuf,
}
impl TaskEnv for Env {
    fn render(&self, text: &str, _origin: &str) -> Result<String, String> {
        Ok(text.replace("{{ x }}", "42"))
    }
    fn render_with(
        &self,
        text: &str,
        origin: &str,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, String> {
        let mut out = self.render(text, origin)?;
        for (k, v) in extra {
            if let Some(v) = v.as_str() {
                out = out.replace(&format!("{{{{ {k} }}}}"), v);
            }
        }
        Ok(out)
    }
    fn find_file(&self, _kind: FileKind, name: &str) -> Option<PathBuf> {
        let p = self.dir.join(name);
        p.exists().then_some(p)
    }
}

pub async fn local() -> HostConn {
    HostConn::open(ConnSpec {
        local: true,
        ..Default::default()
    })
    .await
    .unwrap()
}

pub fn ctx<'a>(conn: &'a HostConn, env: &'a Env, check: bool) -> TaskCtx<'a> {
    TaskCtx {
        host: "local",
        check,
        diff: true,
        conn,
        become_: None,
        environment: Default::default(),
        env,
    }
}

/// Every argument `P` accepts, null, except one name of each required group ("x"): the
/// arguments that must deserialize if the derived names and the serde type agree.
pub fn every_arg<P: crate::modules::ModuleArgs>() -> crate::modules::Args {
    let mut m: crate::modules::Args = P::accepted()
        .iter()
        .map(|k| (k.to_string(), serde_json::Value::Null))
        .collect();
    for group in P::required() {
        // Aliases of a field would make serde see it twice.
        for alias in &group[1..] {
            m.remove(*alias);
        }
        m.insert(group[0].to_string(), "x".into());
    }
    m
}
