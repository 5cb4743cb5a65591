//! Templating with minijinja, the Ansible way: variables are templated lazily when used (a var
//! may refer to other vars), a value that is a single `{{ expr }}` keeps its native type, the
//! Ansible filters/tests/lookups that roles use are provided, and using an undefined variable is
//! an error that names it — while `a.b | default(x)` on an undefined `a` still works
//! ([`chains`]).

mod chains;
pub(crate) mod comment;
pub(crate) mod version;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value as MjValue};
use serde_json::{Map, Value};

/// Ansible's `omit`: a module argument equal to it is dropped.
pub const OMIT: &str = "__omit_place_holder__hfplay__";

/// Shared template environment (filters, tests, lookups).
pub struct Templar {
    env: Environment<'static>,
}

impl Default for Templar {
    fn default() -> Self {
        Self::new()
    }
}

/// The variables visible to one host at one task: raw values, templated on first use.
pub struct Scope {
    raw: Map<String, Value>,
    /// Values that are already final (objects such as `hostvars`), consulted first.
    fixed: HashMap<String, MjValue>,
    cache: Mutex<HashMap<String, MjValue>>,
    busy: Mutex<HashSet<String>>,
    templar: Arc<Templar>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("vars", &self.raw.len())
            .finish()
    }
}

impl Scope {
    pub fn new(templar: Arc<Templar>, raw: Map<String, Value>) -> Arc<Scope> {
        Arc::new(Scope {
            raw,
            fixed: HashMap::new(),
            cache: Mutex::default(),
            busy: Mutex::default(),
            templar,
        })
    }
    pub fn with_fixed(
        templar: Arc<Templar>,
        raw: Map<String, Value>,
        fixed: HashMap<String, MjValue>,
    ) -> Arc<Scope> {
        Arc::new(Scope {
            raw,
            fixed,
            cache: Mutex::default(),
            busy: Mutex::default(),
            templar,
        })
    }
    /// This scope with `extra` on top (e.g. the `template` module's own variables, which win
    /// over the host's as in Ansible); values are templated afresh in the new scope.
    pub fn with_extra(&self, extra: Map<String, Value>) -> Arc<Scope> {
        let mut raw = self.raw.clone();
        let mut fixed = self.fixed.clone();
        for (k, v) in extra {
            fixed.remove(&k);
            raw.insert(k, v);
        }
        Scope::with_fixed(self.templar.clone(), raw, fixed)
    }
    pub fn contains(&self, key: &str) -> bool {
        self.raw.contains_key(key) || self.fixed.contains_key(key)
    }
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }
    /// A variable, fully templated, as data.
    pub fn get_json(self: &Arc<Self>, key: &str) -> Result<Option<Value>, String> {
        match self.resolve(key) {
            None => Ok(None),
            Some(v) => to_json(&v).map(Some),
        }
    }

    fn resolve(self: &Arc<Self>, key: &str) -> Option<MjValue> {
        if let Some(v) = self.fixed.get(key) {
            return Some(v.clone());
        }
        if let Some(v) = lock(&self.cache).get(key) {
            return Some(v.clone());
        }
        let raw = self.raw.get(key)?;
        if !lock(&self.busy).insert(key.to_string()) {
            return Some(MjValue::from(Error::new(
                ErrorKind::InvalidOperation,
                format!("recursive loop detected in template: variable '{key}' refers to itself"),
            )));
        }
        let ctx = MjValue::from_dyn_object(self.clone());
        let result = self.templar.template_value_mj(raw, &ctx);
        lock(&self.busy).remove(key);
        let v = match result {
            Ok(v) => v,
            Err(e) => MjValue::from(Error::new(
                ErrorKind::InvalidOperation,
                format!("in variable '{key}': {e}"),
            )),
        };
        lock(&self.cache).insert(key.to_string(), v.clone());
        Some(v)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Object for Scope {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        self.resolve(key.as_str()?)
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<MjValue> = self.raw.keys().map(|k| MjValue::from(k.as_str())).collect();
        keys.extend(self.fixed.keys().map(|k| MjValue::from(k.as_str())));
        Enumerator::Values(keys)
    }
}

/// Builds one host's variables for `hostvars` (`None`: not a host of the inventory).
pub type ScopeBuilder = Box<dyn Fn(&str) -> Option<Arc<Scope>> + Send + Sync>;

/// `hostvars`: every host's variables, built on demand by the runner.
pub struct HostVars {
    pub hosts: Vec<String>,
    pub build: ScopeBuilder,
    cache: Mutex<HashMap<String, MjValue>>,
}

impl HostVars {
    pub fn new(hosts: Vec<String>, build: ScopeBuilder) -> Self {
        HostVars {
            hosts,
            build,
            cache: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for HostVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hostvars({})", self.hosts.len())
    }
}

impl Object for HostVars {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        let k = key.as_str()?;
        if let Some(v) = lock(&self.cache).get(k) {
            return Some(v.clone());
        }
        let scope = (self.build)(k)?;
        let v = MjValue::from_dyn_object(scope);
        lock(&self.cache).insert(k.to_string(), v.clone());
        Some(v)
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.hosts
                .iter()
                .map(|h| MjValue::from(h.as_str()))
                .collect(),
        )
    }
}

/// Converts an engine value to data; undefined becomes an error.
pub fn to_json(v: &MjValue) -> Result<Value, String> {
    if v.is_undefined() {
        return Err("undefined value".into());
    }
    serde_json::to_value(v).map_err(|e| crate::error::error_chain(&e))
}

/// Whether a string holds template syntax at all (most values do not: skip the engine).
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// Checks the template syntax of a value as hfplay will use it, without rendering: a text
/// with `{{ }}`/`{% %}` must parse as a template; a condition (`when:` and the like) must parse
/// as an expression, the way [`Templar::eval_bool`] reads it. Used when files load, so a
/// syntax error fails before any host is contacted.
pub fn check_syntax(s: &str, condition: bool) -> Result<(), String> {
    let env = Environment::new();
    if condition {
        let e = s.trim();
        let e = single_expression(e).unwrap_or(e);
        if e.is_empty() {
            return Ok(());
        }
        env.compile_expression(e)
            .map(|_| ())
            .map_err(|e| describe(&e, None))
    } else if is_template(s) {
        env.template_from_str(s)
            .map(|_| ())
            .map_err(|e| describe(&e, None))
    } else {
        Ok(())
    }
}

/// `"{{ expr }}"` alone → `Some("expr")`: such values keep their native type.
fn single_expression(s: &str) -> Option<&str> {
    // Only spaces may surround it: "{{ v }}\n" must render to text with its newline.
    let t = s.trim_matches(' ');
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

impl Templar {
    pub fn new() -> Templar {
        let mut env = Environment::new();
        // Strict like Ansible: printing, iterating, testing or filtering an undefined value fails;
        // guarded chains (`a.b | default(x)`) are rewritten before compiling (see `chains`).
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_trim_blocks(true);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Printing an undefined value is an error (Ansible's default), found by the formatter.
        env.set_formatter(|out, state, value| {
            if value.is_undefined() {
                return Err(Error::new(
                    ErrorKind::UndefinedError,
                    "undefined value printed",
                ));
            }
            minijinja::escape_formatter(out, state, value)
        });
        crate::filters::register(&mut env);
        env.add_global("omit", OMIT);
        env.add_function(chains::CHAIN_FN, chains::chain);
        Templar { env }
    }

    pub fn env(&self) -> &Environment<'static> {
        &self.env
    }

    /// Templates every string inside `v` (deeply) in the given scope.
    pub fn template_value(&self, v: &Value, scope: &Arc<Scope>) -> Result<Value, String> {
        let ctx = MjValue::from_dyn_object(scope.clone());
        let out = self.template_value_mj(v, &ctx)?;
        to_json(&out).map_err(|e| {
            if e == "undefined value" {
                "the template result is undefined".into()
            } else {
                e
            }
        })
    }

    fn template_value_mj(&self, v: &Value, ctx: &MjValue) -> Result<MjValue, String> {
        match v {
            Value::String(s) if is_template(s) => {
                if let Some(expr) = single_expression(s) {
                    self.eval_in(expr, ctx)
                } else {
                    self.render_in(s, ctx).map(MjValue::from)
                }
            }
            Value::Array(items) if items.iter().any(has_template) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.template_value_mj(i, ctx)?);
                }
                Ok(MjValue::from(out))
            }
            Value::Object(m) if m.values().any(has_template) => {
                let mut out: indexmap::IndexMap<String, MjValue> = indexmap::IndexMap::new();
                for (k, val) in m {
                    let key = if is_template(k) {
                        self.render_in(k, ctx)?
                    } else {
                        k.clone()
                    };
                    out.insert(key, self.template_value_mj(val, ctx)?);
                }
                Ok(MjValue::from_iter(out))
            }
            other => Ok(MjValue::from_serialize(other)),
        }
    }

    /// Renders a template text (the `template` module, string arguments).
    pub fn render(&self, text: &str, scope: &Arc<Scope>) -> Result<String, String> {
        let ctx = MjValue::from_dyn_object(scope.clone());
        self.render_in(text, &ctx)
    }

    fn render_in(&self, text: &str, ctx: &MjValue) -> Result<String, String> {
        let text = chains::rewrite_template(text);
        let tmpl = self
            .env
            .template_from_str(&text)
            .map_err(|e| describe(&e, None))?;
        tmpl.render(ctx).map_err(|e| {
            describe(
                &e,
                Some(undefined_names(
                    tmpl.undeclared_variables(false),
                    || tmpl.undeclared_variables(true),
                    ctx,
                )),
            )
        })
    }

    /// Evaluates a bare expression (`when:`, `changed_when:`, `loop: "{{ x }}"`).
    pub fn eval(&self, expr: &str, scope: &Arc<Scope>) -> Result<Value, String> {
        let ctx = MjValue::from_dyn_object(scope.clone());
        let v = self.eval_in(expr, &ctx)?;
        to_json(&v).map_err(|e| {
            if e == "undefined value" {
                format!("'{expr}' is undefined")
            } else {
                e
            }
        })
    }

    fn eval_in(&self, expr: &str, ctx: &MjValue) -> Result<MjValue, String> {
        let rewritten = chains::rewrite_expr(expr);
        let compiled = self
            .env
            .compile_expression(&rewritten)
            .map_err(|e| describe(&e, None))?;
        let v = compiled.eval(ctx).map_err(|e| {
            describe(
                &e,
                Some(undefined_names(
                    compiled.undeclared_variables(false),
                    || compiled.undeclared_variables(true),
                    ctx,
                )),
            )
        })?;
        if v.is_undefined() {
            let missing = undefined_names(
                compiled.undeclared_variables(false),
                || compiled.undeclared_variables(true),
                ctx,
            );
            return Err(if missing.is_empty() {
                format!("'{expr}' is undefined")
            } else {
                format!("'{}' is undefined", missing.join("', '"))
            });
        }
        Ok(v)
    }

    /// A conditional (`when`, `failed_when`, `changed_when`, `assert`), Ansible style: a bare
    /// expression; strings such as "yes"/"false" coerce like `| bool`.
    pub fn eval_bool(&self, expr: &str, scope: &Arc<Scope>) -> Result<bool, String> {
        let e = expr.trim();
        let e = single_expression(e).unwrap_or(e);
        let ctx = MjValue::from_dyn_object(scope.clone());
        let v = self.eval_in(e, &ctx)?;
        if let Some(s) = v.as_str() {
            if let Some(b) = crate::words::to_bool(&Value::String(s.to_string())) {
                return Ok(b);
            }
        }
        Ok(v.is_true())
    }
}

fn has_template(v: &Value) -> bool {
    match v {
        Value::String(s) => is_template(s),
        Value::Array(a) => a.iter().any(has_template),
        Value::Object(m) => m.iter().any(|(k, v)| is_template(k) || has_template(v)),
        _ => false,
    }
}

/// Names a template uses that the scope does not define: the top-level ones, or else the first
/// missing step of a dotted path (`a.b` of `a.b.c` when `a` has no `b`).
fn undefined_names(
    names: HashSet<String>,
    nested: impl FnOnce() -> HashSet<String>,
    ctx: &MjValue,
) -> Vec<String> {
    let mut v: Vec<String> = names
        .into_iter()
        .filter(|n| ctx.get_attr(n).map(|x| x.is_undefined()).unwrap_or(true))
        .filter(|n| {
            !matches!(
                n.as_str(),
                "omit" | "lookup" | "query" | "q" | "range" | "dict" | "namespace" | "loop"
            )
        })
        .collect();
    if v.is_empty() {
        for path in nested() {
            let mut parts = path.split('.');
            let Some(first) = parts.next() else { continue };
            let mut cur = ctx.get_attr(first).unwrap_or(MjValue::UNDEFINED);
            let mut seen = first.to_string();
            for p in parts {
                if cur.is_undefined() {
                    break;
                }
                cur = cur.get_attr(p).unwrap_or(MjValue::UNDEFINED);
                seen.push('.');
                seen.push_str(p);
                if cur.is_undefined() {
                    v.push(seen.clone());
                    break;
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

fn describe(e: &Error, undefined: Option<Vec<String>>) -> String {
    let mut msg = match e.kind() {
        ErrorKind::UndefinedError => match undefined {
            Some(names) if !names.is_empty() => format!("'{}' is undefined", names.join("', '")),
            _ => "a value used in the template is undefined".to_string(),
        },
        _ => {
            let mut s = e
                .detail()
                .map(str::to_string)
                .unwrap_or_else(|| e.kind().to_string());
            if e.kind() == ErrorKind::SyntaxError {
                s = format!("template syntax error: {s}");
            }
            s
        }
    };
    if let Some(line) = e.line() {
        if line > 1 {
            msg.push_str(&format!(" (template line {line})"));
        }
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let t = inner.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = inner.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope(v: Value) -> (Arc<Templar>, Arc<Scope>) {
        let t = Arc::new(Templar::new());
        let s = Scope::new(t.clone(), v.as_object().cloned().unwrap());
        (t, s)
    }

    #[test]
    fn extra_variables_win_over_the_hosts() {
        let t = Arc::new(Templar::new());
        let host = Scope::new(
            t.clone(),
            serde_json::json!({"ansible_managed": "mine", "x": "{{ ansible_managed }}!"})
                .as_object()
                .cloned()
                .unwrap(),
        );
        let mut extra = Map::new();
        extra.insert("ansible_managed".into(), Value::from("Ansible managed"));
        let s = host.with_extra(extra);
        assert_eq!(
            t.render("{{ ansible_managed | comment }} {{ x }}", &s)
                .unwrap(),
            "#\n# Ansible managed\n# Ansible managed!"
        );
        assert_eq!(t.render("{{ x }}", &host).unwrap(), "mine!");
    }

    #[test]
    fn lazy_nested_vars_and_native_types() {
        let (t, s) = scope(
            json!({"port": 5432, "host": "db", "dsn": "postgresql://{{ host }}:{{ port }}", "p": "{{ port }}", "l": "{{ [1, 2] }}"}),
        );
        assert_eq!(
            t.template_value(&json!("{{ dsn }}/x"), &s).unwrap(),
            json!("postgresql://db:5432/x")
        );
        assert_eq!(
            t.template_value(&json!("{{ p }}"), &s).unwrap(),
            json!(5432)
        );
        assert_eq!(
            t.template_value(&json!({"a": ["{{ l }}"]}), &s).unwrap(),
            json!({"a": [[1, 2]]})
        );
    }

    #[test]
    fn undefined_is_an_error_but_default_works() {
        let (t, s) = scope(json!({"a": {"x": 1}}));
        let e = t.template_value(&json!("x={{ nope }}"), &s).unwrap_err();
        assert!(e.contains("'nope' is undefined"), "{e}");
        let e = t.template_value(&json!("{{ nope }}"), &s).unwrap_err();
        assert!(e.contains("'nope' is undefined"), "{e}");
        assert_eq!(
            t.template_value(&json!("{{ nope.b | default('d') }}"), &s)
                .unwrap(),
            json!("d")
        );
        assert_eq!(
            t.template_value(&json!("{{ a.y | d(7) }}"), &s).unwrap(),
            json!(7)
        );
        assert!(t.eval_bool("nope is defined", &s).is_ok_and(|b| !b));
    }

    #[test]
    fn undefined_fails_wherever_ansible_fails_it() {
        let (t, s) = scope(json!({"a": {"x": 1}, "n": 1}));
        for text in [
            "{{ typo | lower }}",
            "{{ typo ~ 'x' }}",
            "{% for i in typo %}{{ i }}{% endfor %}",
            "x{{ a.x.deeper }}",
        ] {
            let e = t.template_value(&json!(text), &s).unwrap_err();
            assert!(e.contains("is undefined"), "{text}: {e}");
        }
        let e = t
            .template_value(&json!("{{ typo | lower }}"), &s)
            .unwrap_err();
        assert!(e.contains("'typo'"), "{e}");
        let e = t.template_value(&json!("{{ a.y.z }}"), &s).unwrap_err();
        assert!(e.contains("'a.y' is undefined"), "{e}");
        for cond in ["not typo", "typo != 1", "typo.attr == 1", "a.y.z == 1"] {
            let e = t.eval_bool(cond, &s).unwrap_err();
            assert!(e.contains("undefined"), "{cond}: {e}");
        }
    }

    #[test]
    fn guarded_undefined_keeps_working() {
        let (t, s) = scope(json!({"a": {"x": 1}, "l": [{"k": 2}]}));
        for (text, want) in [
            ("{{ typo.attr | default('d') }}", json!("d")),
            ("{{ a.y.z | d(3) }}", json!(3)),
            ("{{ a['x'] | default(0) }}", json!(1)),
            ("{{ l[0].k | default(0) }}", json!(2)),
            ("{{ l[5].k | default(0) }}", json!(0)),
            ("{{ typo | default(omit) }}", json!(OMIT)),
            ("{{ 'yes' if typo.b is defined else 'no' }}", json!("no")),
            ("{% if a.q is undefined %}u{% endif %}", json!("u")),
        ] {
            assert_eq!(t.template_value(&json!(text), &s).unwrap(), want, "{text}");
        }
        assert!(!t.eval_bool("typo.b is defined", &s).unwrap());
        assert!(t.eval_bool("typo is not defined", &s).unwrap());
        assert!(t.eval_bool("a.x is defined and a.x == 1", &s).unwrap());
        let e = t
            .template_value(&json!("{{ typo.b | mandatory }}"), &s)
            .unwrap_err();
        assert!(e.contains("mandatory"), "{e}");
    }

    #[test]
    fn self_reference_is_reported() {
        let (t, s) = scope(json!({"x": "{{ x }}"}));
        let e = t.template_value(&json!("{{ x }}"), &s).unwrap_err();
        assert!(e.contains("recursive"), "{e}");
    }

    #[test]
    fn conditionals() {
        let (t, s) = scope(json!({"flag": "yes", "n": 3, "off": false}));
        assert!(t.eval_bool("flag | bool", &s).unwrap());
        assert!(t.eval_bool("n > 2", &s).unwrap());
        assert!(!t.eval_bool("off", &s).unwrap());
        assert!(t.eval_bool("{{ n == 3 }}", &s).unwrap());
        assert!(t.eval_bool("missing", &s).is_err());
    }

    #[test]
    fn password_lookup_is_stable_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (t, s) = scope(json!({"d": dir.path().to_str().unwrap()}));
        let a = t
            .template_value(
                &json!(
                    "{{ lookup('password', d ~ '/sec/pw length=24 chars=ascii_letters,digits') }}"
                ),
                &s,
            )
            .unwrap();
        let b = t
            .template_value(
                &json!("{{ lookup('password', d ~ '/sec/pw length=24') }}"),
                &s,
            )
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str().unwrap().len(), 24);
        assert!(a
            .as_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_alphanumeric()));
        let mode = std::fs::metadata(dir.path().join("sec/pw"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn python_methods() {
        let (t, s) = scope(json!({"csv": "a,b", "m": {"k": 1}}));
        assert_eq!(
            t.template_value(&json!("{{ csv.split(',') }}"), &s)
                .unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            t.template_value(&json!("{{ csv.startswith('a') }}"), &s)
                .unwrap(),
            json!(true)
        );
    }
}
