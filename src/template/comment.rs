//! Ansible's `comment` filter: wraps text as a comment block, as templates do with
//! `{{ ansible_managed | comment }}`.
//!
//! Styles `plain` (`# `, the default), `erlang` (`% `), `c` (`// `), `cblock` (`/*` … ` */`) and
//! `xml` (`<!--` … `-->`); keyword arguments override the style's parts: `decoration` (put
//! before each line), `prefix`/`postfix` (the lines above and below, by default the decoration
//! without trailing spaces), `prefix_count`/`postfix_count`, `beginning`/`end` (first and last
//! line), `newline`.
//!
//! `{{ 'a\nb' | comment }}` → `#\n# a\n# b\n#`.

use minijinja::value::Kwargs;
use minijinja::{Error, ErrorKind};

pub fn comment(text: String, style: Option<String>, kw: Kwargs) -> Result<String, Error> {
    let style = style.unwrap_or_else(|| "plain".into());
    let (beginning, decoration, end) = match style.as_str() {
        "plain" => ("", "# ", ""),
        "erlang" => ("", "% ", ""),
        "c" => ("", "// ", ""),
        "cblock" => ("/*", " * ", " */"),
        "xml" => ("<!--", " - ", "-->"),
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("comment: unknown style {other:?} (plain, erlang, c, cblock, xml)"),
            ))
        }
    };
    let s = |key: &str, default: &str| -> Result<String, Error> {
        Ok(kw
            .get::<Option<String>>(key)?
            .unwrap_or_else(|| default.to_string()))
    };
    let decoration = s("decoration", decoration)?;
    // prefix and postfix default to the decoration in use, trailing spaces removed
    let edge = decoration.trim_end().to_string();
    let newline = s("newline", "\n")?;
    let beginning = s("beginning", beginning)?;
    let end = s("end", end)?;
    let prefix = s("prefix", &edge)?;
    let postfix = s("postfix", &edge)?;
    let prefix_count = kw.get::<Option<usize>>("prefix_count")?.unwrap_or(1);
    let postfix_count = kw.get::<Option<usize>>("postfix_count")?.unwrap_or(1);
    kw.assert_all_used()?;

    let mut out = String::new();
    if !beginning.is_empty() {
        out.push_str(&beginning);
        out.push_str(&newline);
    }
    if !prefix.is_empty() {
        let line = if prefix == newline {
            newline.clone()
        } else {
            format!("{prefix}{newline}")
        };
        out.push_str(&line.repeat(prefix_count));
    }
    let body = format!(
        "{decoration}{}",
        text.replace(&newline, &format!("{newline}{decoration}"))
    );
    // a line holding only the decoration loses its trailing spaces
    out.push_str(&body.replace(
        &format!("{decoration}{newline}"),
        &format!("{}{newline}", decoration.trim_end()),
    ));
    for _ in 0..postfix_count {
        out.push_str(&newline);
        out.push_str(&postfix);
    }
    if !end.is_empty() {
        out.push_str(&newline);
        out.push_str(&end);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::template::{Scope, Templar};
    use serde_json::json;
    use std::sync::Arc;

    fn render(expr: &str) -> Result<String, String> {
        let t = Arc::new(Templar::new());
        let s = Scope::new(t.clone(), serde_json::Map::new());
        t.template_value(&json!(format!("{{{{ {expr} }}}}")), &s)
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn styles() {
        assert_eq!(
            render("'Ansible managed' | comment").unwrap(),
            "#\n# Ansible managed\n#"
        );
        assert_eq!(render("'a\\n\\nb' | comment").unwrap(), "#\n# a\n#\n# b\n#");
        assert_eq!(render("'x' | comment('c')").unwrap(), "//\n// x\n//");
        assert_eq!(render("'x' | comment('erlang')").unwrap(), "%\n% x\n%");
        assert_eq!(
            render("'x' | comment('cblock')").unwrap(),
            "/*\n *\n * x\n *\n */"
        );
        assert_eq!(
            render("'x' | comment('xml')").unwrap(),
            "<!--\n -\n - x\n -\n-->"
        );
    }

    #[test]
    fn parts_override_the_style() {
        assert_eq!(
            render("'x' | comment(decoration='; ', prefix='', postfix_count=2)").unwrap(),
            "; x\n;\n;"
        );
        assert_eq!(
            render("'x' | comment('plain', prefix='#' * 5, postfix='#' * 5)").unwrap(),
            "#####\n# x\n#####"
        );
        let e = render("'x' | comment('lisp')").unwrap_err();
        assert!(e.contains("unknown style \"lisp\""), "{e}");
        let e = render("'x' | comment(decorations='; ')").unwrap_err();
        assert!(e.contains("decorations"), "{e}");
    }
}
