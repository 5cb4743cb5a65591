//! `#[derive(ModuleArgs)]`: a module's accepted argument names, and the ones it requires, read
//! from its serde `Params` struct, so no module keeps a hand-written list beside its type.
//!
//! Why a derive and not serde introspection: serde only reveals a struct's field names through
//! `deserialize_struct`, and a struct with `#[serde(flatten)]` fields (the shared owner/group/mode
//! attributes) deserializes as a map, which hides them. The derive sees the fields themselves.
//!
//! It follows the serde attributes that change which keys deserialize: `rename` (the deserialize
//! name), `alias`, `flatten` (the inner type's names, which must derive `ModuleArgs` too), `skip`
//! and `skip_deserializing`. A field is required when it is neither `Option<_>` nor `default`
//! (field or struct). `rename_all` and generic structs are refused rather than guessed at.
//!
//! The generated impl names `crate::modules::args::ModuleArgs`: the derive serves hfplay only.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Fields, LitStr, Type};

#[proc_macro_derive(ModuleArgs, attributes(serde))]
pub fn derive_module_args(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// What the serde attributes of one field say about its keys.
#[derive(Default)]
struct FieldAttrs {
    rename: Option<String>,
    aliases: Vec<String>,
    flatten: bool,
    skip: bool,
    default: bool,
}

/// Struct-level serde attributes that matter here.
#[derive(Default)]
struct StructAttrs {
    default: bool,
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        // The lists live in statics, which a generic impl would share between instantiations.
        return Err(syn::Error::new_spanned(
            &input.generics,
            "ModuleArgs: generic structs are not supported",
        ));
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            name,
            "ModuleArgs: only structs with named fields",
        ));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(
            name,
            "ModuleArgs: only structs with named fields",
        ));
    };
    let st = struct_attrs(input)?;

    // Own fields give literal names; a flattened field's type gives its lists at run time.
    let mut accepted: Vec<Part> = Vec::new();
    let mut required: Vec<Part> = Vec::new();
    for f in &fields.named {
        let a = field_attrs(f)?;
        if a.skip {
            continue;
        }
        let ty = &f.ty;
        if a.flatten {
            accepted.push(Part::Flat(ty.clone()));
            required.push(Part::Flat(ty.clone()));
            continue;
        }
        let Some(ident) = &f.ident else { continue };
        // serde keeps a raw identifier's name without the `r#`.
        let key = a
            .rename
            .clone()
            .unwrap_or_else(|| ident.to_string().trim_start_matches("r#").to_string());
        let mut names = vec![key];
        names.extend(a.aliases.iter().cloned());
        accepted.extend(names.iter().map(|n| Part::Name(quote!(#n))));
        if !(a.default || st.default || is_option(ty)) {
            required.push(Part::Name(quote!(&[#(#names),*])));
        }
    }
    let accepted = list(&accepted, quote!(&'static str), quote!(accepted));
    let required = list(&required, quote!(&'static [&'static str]), quote!(required));
    Ok(quote! {
        impl crate::modules::args::ModuleArgs for #name {
            fn accepted() -> &'static [&'static str] {
                #accepted
            }
            fn required() -> &'static [&'static [&'static str]] {
                #required
            }
        }
    })
}

/// One entry of a generated list: a literal item, or a flattened type's whole list.
enum Part {
    Name(Tokens),
    Flat(Type),
}

/// A `&'static [item]` expression: a literal slice, or, when a flattened type's list has to be
/// chained in (only known at run time), a vector built once.
fn list(parts: &[Part], item: Tokens, method: Tokens) -> Tokens {
    if parts.iter().all(|p| matches!(p, Part::Name(_))) {
        let items = parts.iter().filter_map(|p| match p {
            Part::Name(t) => Some(t),
            Part::Flat(_) => None,
        });
        return quote! { &[#(#items),*] };
    }
    let pushes = parts.iter().map(|p| match p {
        Part::Name(t) => quote! { v.push(#t); },
        Part::Flat(ty) => quote! {
            v.extend_from_slice(<#ty as crate::modules::args::ModuleArgs>::#method());
        },
    });
    quote! {
        static LIST: ::std::sync::OnceLock<::std::vec::Vec<#item>> = ::std::sync::OnceLock::new();
        LIST.get_or_init(|| {
            let mut v: ::std::vec::Vec<#item> = ::std::vec::Vec::new();
            #(#pushes)*
            v
        })
    }
}

fn struct_attrs(input: &DeriveInput) -> syn::Result<StructAttrs> {
    let mut st = StructAttrs::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename_all") || meta.path.is_ident("rename_all_fields") {
                return Err(meta.error("ModuleArgs: rename_all is not supported"));
            }
            if meta.path.is_ident("default") {
                st.default = true;
            }
            skip_value(&meta)
        })?;
    }
    Ok(st)
}

fn field_attrs(f: &syn::Field) -> syn::Result<FieldAttrs> {
    let mut a = FieldAttrs::default();
    for attr in f.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            let p = &meta.path;
            if p.is_ident("rename") {
                if meta.input.peek(syn::token::Paren) {
                    // `rename(serialize = "..", deserialize = "..")`: only the latter is a key.
                    return meta.parse_nested_meta(|inner| {
                        if inner.path.is_ident("deserialize") {
                            a.rename = Some(inner.value()?.parse::<LitStr>()?.value());
                            Ok(())
                        } else {
                            skip_value(&inner)
                        }
                    });
                }
                a.rename = Some(meta.value()?.parse::<LitStr>()?.value());
                return Ok(());
            }
            if p.is_ident("alias") {
                a.aliases.push(meta.value()?.parse::<LitStr>()?.value());
                return Ok(());
            }
            if p.is_ident("flatten") {
                a.flatten = true;
            } else if p.is_ident("skip") || p.is_ident("skip_deserializing") {
                a.skip = true;
            } else if p.is_ident("default") {
                a.default = true;
            }
            skip_value(&meta)
        })?;
    }
    Ok(a)
}

/// Consumes an attribute's `= "value"` or `(...)` that this derive does not read.
fn skip_value(meta: &syn::meta::ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<LitStr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_value(&inner))?;
    }
    Ok(())
}

/// `Option<_>` (by its last path segment, as serde itself decides a missing field is `None`).
fn is_option(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "Option"))
}
