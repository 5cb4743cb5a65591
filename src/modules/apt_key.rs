//! `apt_key`: an OpenPGP public key APT trusts, as a key file (no `apt-key`, no `gpg`).
//!
//! ```yaml
//! - apt_key:
//!     url: https://download.docker.com/linux/debian/gpg
//!     id: 9DC858229FC7DD38854AE2D88D81803C0EBFCD88
//!     keyring: /etc/apt/keyrings/docker.gpg
//! ```
//! Ansible's `apt_key` drives `apt-key`, which Debian 13 no longer ships (Ansible's module fails
//! there). This one keeps the same arguments and meaning but manages the key files apt reads
//! itself, parsing the OpenPGP packets on the controller ([`keys_in`]: v4 fingerprints are
//! SHA-1 of the key packet, key ids their last 16 hex digits; v6/v5 SHA-256 and first 16):
//! - with `keyring`: the key is added to that file (created as binary OpenPGP, or ASCII-armored
//!   when it is named `*.asc` or already armored; other keys in it are kept);
//! - without: it goes to `/etc/apt/trusted.gpg.d/<KEYID>.gpg` (the long id of the first new
//!   key), and "already there" looks at `/etc/apt/trusted.gpg` and every
//!   `/etc/apt/trusted.gpg.d/*.gpg`/`*.asc`, as `apt-key list` did.
//!
//! The key comes from `data` (armored text), `file` (on the host), `url` or `keyserver` (with
//! `id`: `/pks/lookup?op=get&options=mr&search=0xID`; `hkp://` is http on port 11371, a bare
//! host too) — downloaded on the host with curl, wget or apt's own `apt-helper`. Probe: the
//! keyring files (one round trip), then, unless `id` already says the key is there, the key
//! (a second). `present` with an `id` found (8-hex ids compare with the last 8 digits, longer
//! ones with the last 16; subkeys count, as in `apt-key list`) is unchanged without fetching
//! anything; otherwise the keys of the fetched data whose fingerprints are missing are added,
//! and an `id` that is not among them fails. `absent` (needs `id`) removes the key (the primary
//! key and its packets) from every keyring file holding it, deleting a file left empty; an id
//! naming only a subkey fails, as `apt-key del` did. Check mode predicts exactly (the fetch is
//! read-only). Results: `id`, `fp` (the fingerprints added or removed).
//!
//! Deviations: expired keys count as present (`apt-key` skipped them in its listing);
//! `validate_certs: false` reaches curl/wget/apt-helper; `key` is accepted and ignored (as in
//! Ansible, deprecated).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use super::apt_repository::{parse_files, sources_probe, write_files_script, RawFile, Write};
use super::args::{de_opt_bool, de_opt_string};
use super::contract::{execute, NativeModule, Planned};
use super::{Args, FileDiff, Module, ModuleArgs, ModuleError, Outcome, TaskCtx};
use crate::connection::quote;
use crate::modules::args::Presence as State;

#[derive(Debug, Deserialize, ModuleArgs)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, deserialize_with = "de_opt_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    url: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    data: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    file: Option<String>,
    #[serde(default)]
    key: Option<Value>,
    #[serde(default, deserialize_with = "de_opt_string")]
    keyring: Option<String>,
    #[serde(default, deserialize_with = "de_opt_bool")]
    validate_certs: Option<bool>,
    #[serde(default, deserialize_with = "de_opt_string")]
    keyserver: Option<String>,
    #[serde(default)]
    state: Option<State>,
}

pub const TRUSTED: &str = "/etc/apt/trusted.gpg";
pub const TRUSTED_D: &str = "/etc/apt/trusted.gpg.d";

// ---- OpenPGP, just enough to name keys and move them between keyrings ----

/// One packet: its tag and the byte range it covers (header included).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Packet {
    tag: u8,
    start: usize,
    body: std::ops::Range<usize>,
}

fn packets(b: &[u8]) -> Result<Vec<Packet>, String> {
    let mut v = Vec::new();
    let mut i = 0;
    let short = || "truncated OpenPGP packet".to_string();
    while i < b.len() {
        let h = b[i];
        if h & 0x80 == 0 {
            return Err(format!("not OpenPGP data (byte {i})"));
        }
        let at = |k: usize| b.get(i + k).copied().map(usize::from).ok_or_else(short);
        let (tag, hdr, len) = if h & 0x40 != 0 {
            let o1 = at(1)?;
            match o1 {
                0..=191 => (h & 0x3f, 2, o1),
                192..=223 => (h & 0x3f, 3, ((o1 - 192) << 8) + at(2)? + 192),
                255 => (
                    h & 0x3f,
                    6,
                    (at(2)? << 24) | (at(3)? << 16) | (at(4)? << 8) | at(5)?,
                ),
                _ => return Err("partial-length OpenPGP packets are not keys".into()),
            }
        } else {
            let tag = (h >> 2) & 0x0f;
            match h & 3 {
                0 => (tag, 2, at(1)?),
                1 => (tag, 3, (at(1)? << 8) | at(2)?),
                2 => (
                    tag,
                    5,
                    (at(1)? << 24) | (at(2)? << 16) | (at(3)? << 8) | at(4)?,
                ),
                _ => (tag, 1, b.len() - i - 1),
            }
        };
        let end = i + hdr + len;
        if end > b.len() {
            return Err(short());
        }
        v.push(Packet {
            tag,
            start: i,
            body: i + hdr..end,
        });
        i = end;
    }
    Ok(v)
}

/// A key's fingerprint and long key id (upper-case hex) from its key packet's body.
fn fingerprint(body: &[u8]) -> Option<(String, String)> {
    match body.first()? {
        4 => {
            let mut h = Sha1::new();
            h.update([0x99, (body.len() >> 8) as u8, body.len() as u8]);
            h.update(body);
            let fp = hex::encode_upper(h.finalize());
            let id = fp[fp.len() - 16..].to_string();
            Some((fp, id))
        }
        v @ (5 | 6) => {
            let mut h = Sha256::new();
            h.update([if *v == 5 { 0x9a } else { 0x9b }]);
            h.update((body.len() as u32).to_be_bytes());
            h.update(body);
            let fp = hex::encode_upper(h.finalize());
            let id = fp[..16].to_string();
            Some((fp, id))
        }
        // v3: the id is the low 64 bits of the RSA modulus; the fingerprint MD5 of n and e.
        2 | 3 => {
            let mpi = |at: usize| -> Option<(&[u8], usize)> {
                let bits = (usize::from(*body.get(at)?) << 8) | usize::from(*body.get(at + 1)?);
                let n = bits.div_ceil(8);
                Some((body.get(at + 2..at + 2 + n)?, at + 2 + n))
            };
            let (n, next) = mpi(8)?;
            let (e, _) = mpi(next)?;
            let id = hex::encode_upper(n.get(n.len().checked_sub(8)?..)?);
            let mut h = md5::Md5::new();
            h.update(n);
            h.update(e);
            Some((hex::encode_upper(h.finalize()), id))
        }
        _ => None,
    }
}

/// One transferable public key: the primary key and the packets up to the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub fingerprint: String,
    pub key_id: String,
    pub subkey_ids: Vec<String>,
    /// Its bytes in the (binary) keyring.
    pub range: std::ops::Range<usize>,
}

/// Pure: the public keys in binary OpenPGP data.
pub fn keys_in(b: &[u8]) -> Result<Vec<Key>, String> {
    let ps = packets(b)?;
    let mut keys: Vec<Key> = Vec::new();
    let mut in_public = false;
    for p in &ps {
        match p.tag {
            6 => {
                let (fp, id) = fingerprint(&b[p.body.clone()])
                    .ok_or_else(|| "unsupported OpenPGP key version".to_string())?;
                keys.push(Key {
                    fingerprint: fp,
                    key_id: id,
                    subkey_ids: Vec::new(),
                    range: p.start..p.body.end,
                });
                in_public = true;
            }
            // A secret key ends the previous public key and is not one itself.
            5 => in_public = false,
            _ if in_public => {
                let k = keys.last_mut().expect("in a key");
                k.range.end = p.body.end;
                if p.tag == 14 {
                    if let Some((_, id)) = fingerprint(&b[p.body.clone()]) {
                        k.subkey_ids.push(id);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(keys)
}

const ARMOR_BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const ARMOR_END: &str = "-----END PGP PUBLIC KEY BLOCK-----";

pub fn is_armored(b: &[u8]) -> bool {
    String::from_utf8_lossy(&b[..b.len().min(4096)]).contains("-----BEGIN PGP ")
}

/// Pure: the binary packets of every public key block in ASCII-armored text.
pub fn dearmor(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim);
    let mut blocks = 0;
    while lines.any(|l| l == ARMOR_BEGIN) {
        blocks += 1;
        let mut b64 = String::new();
        let mut headers = true;
        for l in lines.by_ref() {
            if l.starts_with("-----END PGP") {
                break;
            }
            if headers {
                if l.is_empty() {
                    headers = false;
                    continue;
                }
                if l.contains(": ") {
                    continue;
                }
                headers = false;
            }
            if l.starts_with('=') && l.len() == 5 {
                continue; // the CRC-24 line
            }
            b64.push_str(l);
        }
        out.extend(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("bad ASCII armor: {e}"))?,
        );
    }
    if blocks == 0 {
        return Err("no PGP PUBLIC KEY BLOCK in the key data".into());
    }
    Ok(out)
}

fn crc24(b: &[u8]) -> u32 {
    let mut crc: u32 = 0x00B7_04CE;
    for &x in b {
        crc ^= u32::from(x) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4CFB;
            }
        }
    }
    crc & 0x00FF_FFFF
}

/// Pure: binary key packets as an ASCII-armored public key block.
pub fn armor(b: &[u8]) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::STANDARD;
    let body = e.encode(b);
    let mut s = format!("{ARMOR_BEGIN}\n\n");
    for chunk in body.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    let c = crc24(b);
    s.push('=');
    s.push_str(&e.encode([(c >> 16) as u8, (c >> 8) as u8, c as u8]));
    s.push('\n');
    s.push_str(ARMOR_END);
    s.push('\n');
    s
}

/// Binary packets of key data that may be armored.
pub fn binary(b: &[u8]) -> Result<Vec<u8>, String> {
    if is_armored(b) {
        dearmor(&String::from_utf8_lossy(b))
    } else {
        Ok(b.to_vec())
    }
}

/// Pure: an `id` argument normalised (no `0x`, upper case), or Ansible's error.
pub fn parse_id(id: &str) -> Result<String, String> {
    let t = id.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let t: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    if !t.chars().all(|c| c.is_ascii_hexdigit()) || t.is_empty() {
        return Err(format!("Invalid key_id: {id}"));
    }
    if t.len() != 8 && t.len() < 16 {
        return Err(format!(
            "Invalid key_id {id}: key_id must be 8, 16, or 16+ hexadecimal characters in length"
        ));
    }
    Ok(t.to_ascii_uppercase())
}

/// Does `id` (normalised) name this key id? 8 digits compare with the last 8, else the last 16.
pub fn id_matches(id: &str, key_id: &str) -> bool {
    if id.len() == 8 {
        key_id.ends_with(id)
    } else {
        key_id == &id[id.len() - 16..]
    }
}

fn key_matches(id: &str, k: &Key) -> bool {
    id_matches(id, &k.key_id) || k.subkey_ids.iter().any(|s| id_matches(id, s))
}

// ---- the module ----

/// A keyring file on the host, parsed.
#[derive(Debug, Clone)]
pub struct Keyring {
    pub path: String,
    pub real: String,
    pub armored: bool,
    /// Binary packets.
    pub bytes: Vec<u8>,
    pub keys: Vec<Key>,
}

impl Keyring {
    fn from_raw(f: RawFile) -> Result<Self, String> {
        let armored = is_armored(&f.bytes);
        let bytes = binary(&f.bytes).map_err(|e| format!("{}: {e}", f.path))?;
        let keys = keys_in(&bytes).map_err(|e| format!("{}: {e}", f.path))?;
        Ok(Keyring {
            path: f.path,
            real: f.real,
            armored,
            bytes,
            keys,
        })
    }
    fn encoded(&self, bytes: &[u8]) -> Vec<u8> {
        if self.armored {
            armor(bytes).into_bytes()
        } else {
            bytes.to_vec()
        }
    }
}

/// What the probe saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The keyring files that exist (the `keyring`, or apt's trusted set).
    pub keyrings: Vec<Keyring>,
    /// Key files that could not be read as keys (path: why); they are left alone.
    pub unreadable: Vec<String>,
    /// The key data from `data`/`file`/`url`/`keyserver` (`None`: not fetched — the `id` was
    /// found; `Err`: the fetch failed).
    pub source: Option<Result<Vec<u8>, String>>,
}

/// A planned write of one keyring file (`new: None`: delete it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrite {
    pub path: String,
    pub real: String,
    pub new: Option<Vec<u8>>,
    pub created: bool,
}

/// Pure: the keyring writes for `present`, and the fingerprints added.
pub fn plan_present(
    keyring: Option<&str>,
    existing: &[Keyring],
    data: &[u8],
    id: Option<&str>,
) -> Result<(Vec<KeyWrite>, Vec<String>), String> {
    let bin = binary(data)?;
    let new_keys = keys_in(&bin)?;
    if new_keys.is_empty() {
        return Err("no OpenPGP public key in the key data".into());
    }
    if let Some(id) = id {
        if !new_keys.iter().any(|k| key_matches(id, k)) {
            return Err(format!(
                "key {id} is not in the key data (its keys: {}); key does not seem to have been added",
                new_keys
                    .iter()
                    .map(|k| k.key_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let have = |fp: &str| {
        existing
            .iter()
            .any(|r| r.keys.iter().any(|k| k.fingerprint == fp))
    };
    let missing: Vec<&Key> = new_keys.iter().filter(|k| !have(&k.fingerprint)).collect();
    if missing.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let path = match keyring {
        Some(k) => k.to_string(),
        None => format!("{TRUSTED_D}/{}.gpg", missing[0].key_id),
    };
    let mut packets: Vec<u8> = Vec::new();
    for k in &missing {
        packets.extend_from_slice(&bin[k.range.clone()]);
    }
    let fps = missing.iter().map(|k| k.fingerprint.clone()).collect();
    let write = match existing.iter().find(|r| r.path == path || r.real == path) {
        Some(r) => {
            let mut all = r.bytes.clone();
            all.extend(packets);
            KeyWrite {
                path: r.path.clone(),
                real: r.real.clone(),
                new: Some(r.encoded(&all)),
                created: false,
            }
        }
        None => KeyWrite {
            new: Some(if path.ends_with(".asc") {
                armor(&packets).into_bytes()
            } else {
                packets
            }),
            real: path.clone(),
            path,
            created: true,
        },
    };
    Ok((vec![write], fps))
}

/// Pure: the keyring writes for `absent`, and the fingerprints removed.
pub fn plan_absent(existing: &[Keyring], id: &str) -> Result<(Vec<KeyWrite>, Vec<String>), String> {
    let mut writes = Vec::new();
    let mut fps = Vec::new();
    for r in existing {
        let (gone, kept): (Vec<&Key>, Vec<&Key>) =
            r.keys.iter().partition(|k| id_matches(id, &k.key_id));
        if gone.is_empty() {
            if r.keys.iter().any(|k| key_matches(id, k)) {
                return Err(format!(
                    "{id} is a subkey in {}: the key was not removed (check that the id is correct and *not* a subkey)",
                    r.path
                ));
            }
            continue;
        }
        let mut rest = Vec::new();
        let mut pos = 0;
        for k in &gone {
            rest.extend_from_slice(&r.bytes[pos..k.range.start]);
            pos = k.range.end;
        }
        rest.extend_from_slice(&r.bytes[pos..]);
        fps.extend(gone.iter().map(|k| k.fingerprint.clone()));
        writes.push(KeyWrite {
            path: r.path.clone(),
            real: r.real.clone(),
            new: (!kept.is_empty() || !rest.is_empty()).then(|| r.encoded(&rest)),
            created: false,
        });
    }
    Ok((writes, fps))
}

/// The keyserver lookup URL for `id`.
pub fn keyserver_url(keyserver: &str, id: &str) -> String {
    let ks = keyserver.trim().trim_end_matches('/');
    let base = if let Some(h) = ks.strip_prefix("hkp://") {
        if h.contains(':') {
            format!("http://{h}")
        } else {
            format!("http://{h}:11371")
        }
    } else if let Some(h) = ks.strip_prefix("hkps://") {
        format!("https://{h}")
    } else if ks.starts_with("http://") || ks.starts_with("https://") {
        ks.to_string()
    } else if ks.contains(':') {
        format!("http://{ks}")
    } else {
        format!("http://{ks}:11371")
    };
    format!("{base}/pks/lookup?op=get&options=mr&search=0x{id}")
}

/// Shell printing the content of `url` as base64 (curl, else wget, else apt-helper).
pub fn fetch_script(url: &str, validate: bool) -> String {
    let q = quote(url);
    let (k, nc, av) = if validate {
        ("", "", "")
    } else {
        (
            " -k",
            " --no-check-certificate",
            " -o Acquire::https::Verify-Peer=false -o Acquire::https::Verify-Host=false",
        )
    };
    format!(
        "t=$(mktemp) || exit 1; \
         if command -v curl >/dev/null 2>&1; then curl -fsSL{k} --max-time 120 -o \"$t\" -- {q}; \
         elif command -v wget >/dev/null 2>&1; then wget -q{nc} -T 120 -O \"$t\" -- {q}; \
         elif [ -x /usr/lib/apt/apt-helper ]; then rm -f \"$t\"; /usr/lib/apt/apt-helper{av} download-file {q} \"$t\" >/dev/null; \
         else echo 'no curl, wget or apt-helper on the host' >&2; false; fi; \
         rc=$?; [ $rc = 0 ] && {{ echo 'C|'; base64 < \"$t\"; echo 'E|'; }}; rm -f \"$t\"; exit $rc"
    )
}

pub struct AptKey;

#[async_trait]
impl Module for AptKey {
    literal_params!("apt_key");
    fn names(&self) -> &'static [&'static str] {
        &["apt_key"]
    }
    fn arg_names(&self) -> &'static [&'static str] {
        Params::accepted()
    }
    async fn run(&self, args: &Args, ctx: &TaskCtx<'_>) -> Result<Outcome, ModuleError> {
        execute(self, args, ctx).await
    }
}

impl Params {
    fn id(&self) -> Result<Option<String>, ModuleError> {
        self.id
            .as_deref()
            .map(parse_id)
            .transpose()
            .map_err(ModuleError::Args)
    }
    fn check(&self) -> Result<(), ModuleError> {
        let given = [
            self.data.is_some(),
            self.file.is_some(),
            self.keyserver.is_some(),
            self.url.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ModuleError::Args(
                "apt_key: parameters are mutually exclusive: data|file|keyserver|url".into(),
            ));
        }
        let id = self.id()?;
        if self.state.unwrap_or_default() == State::Absent {
            if id.is_none() {
                return Err(ModuleError::Args("apt_key: key is required (id)".into()));
            }
        } else if !given.iter().any(|g| *g) {
            return Err(ModuleError::Args(
                "apt_key: needed a URL but was not specified (one of data, file, keyserver, url)"
                    .into(),
            ));
        }
        if self.keyserver.is_some() && id.is_none() {
            return Err(ModuleError::Args("apt_key: keyserver needs id".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl NativeModule for AptKey {
    type Params = Params;
    type Observed = Observed;
    type Plan = Vec<KeyWrite>;
    const NAME: &'static str = "apt_key";

    async fn probe(&self, p: &Params, ctx: &TaskCtx<'_>) -> Result<Observed, ModuleError> {
        p.check()?;
        let id = p.id()?;
        let paths = match &p.keyring {
            Some(k) => quote(k),
            None => format!("{TRUSTED} {TRUSTED_D}/*.gpg {TRUSTED_D}/*.asc"),
        };
        let mut script = sources_probe(&paths);
        if let Some(f) = &p.file {
            script.push_str(&format!(
                "; if [ -f {q} ]; then echo 'KF|'; base64 < {q}; echo 'KE|'; else echo 'KX|'; fi",
                q = quote(f)
            ));
        }
        let r = ctx.sh(&script).await?;
        let mut seen = Observed::default();
        for f in parse_files(&r.stdout)? {
            let path = f.path.clone();
            match Keyring::from_raw(f) {
                Ok(k) => seen.keyrings.push(k),
                Err(e) if p.keyring.as_deref() == Some(path.as_str()) => {
                    return Err(ModuleError::Controller(format!("apt_key: keyring {e}")))
                }
                Err(e) => seen.unreadable.push(e),
            }
        }
        let decode = |b64: &str| {
            use base64::Engine;
            let b: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("bad base64 from the host: {e}"))
        };
        let present = p.state.unwrap_or_default() == State::Present;
        let found = id.as_deref().is_some_and(|id| {
            seen.keyrings
                .iter()
                .any(|r| r.keys.iter().any(|k| key_matches(id, k)))
        });
        if !present || found {
            return Ok(seen);
        }
        seen.source = Some(if let Some(d) = &p.data {
            Ok(d.as_bytes().to_vec())
        } else if let Some(f) = &p.file {
            let out = &r.stdout;
            match (out.find("KF|\n"), out.find("KE|")) {
                (Some(a), Some(z)) => decode(&out[a + 4..z]),
                _ => Err(format!("key file {f} not found on the host")),
            }
        } else {
            let url = match (&p.url, &p.keyserver, &id) {
                (Some(u), _, _) => u.clone(),
                (None, Some(ks), Some(id)) => keyserver_url(ks, id),
                _ => unreachable!("checked"),
            };
            let r = ctx
                .sh(&fetch_script(&url, p.validate_certs.unwrap_or(true)))
                .await?;
            match (r.rc, r.stdout.find("C|\n"), r.stdout.find("E|")) {
                (0, Some(a), Some(z)) => decode(&r.stdout[a + 3..z]),
                _ => Err(format!(
                    "Failed to download key at {url}: {}",
                    r.stderr.trim()
                )),
            }
        });
        Ok(seen)
    }

    fn plan(
        &self,
        p: &Params,
        seen: &Observed,
        diff: bool,
    ) -> Result<Planned<Vec<KeyWrite>>, ModuleError> {
        let _ = &p.key;
        p.check()?;
        let id = p.id()?;
        let present = p.state.unwrap_or_default() == State::Present;
        let planned = if present {
            match &seen.source {
                None => Ok((Vec::new(), Vec::new())),
                Some(Err(e)) => Err(e.clone()),
                Some(Ok(data)) => {
                    plan_present(p.keyring.as_deref(), &seen.keyrings, data, id.as_deref())
                }
            }
        } else {
            plan_absent(&seen.keyrings, id.as_deref().unwrap_or_default())
        };
        let (writes, fps) = match planned {
            Ok(x) => x,
            Err(m) => return Ok(Planned::nothing(Outcome::failed(m))),
        };
        let changed = !writes.is_empty();
        let mut out = Outcome::changed(changed).with("fp", json!(fps));
        if let Some(id) = &id {
            out = out.with("id", id.clone());
        }
        if diff {
            let names =
                |fps: &[String]| -> String { fps.iter().map(|f| format!("{f}\n")).collect() };
            for w in &writes {
                out.diffs.push(FileDiff {
                    path: w.path.clone(),
                    before: if present { String::new() } else { names(&fps) },
                    after: if present { names(&fps) } else { String::new() },
                });
            }
        }
        Ok(Planned::when(changed, writes, out))
    }

    /// Check mode: later apt tasks of the run learn that the sources would change (their
    /// scratch lists lack what the change brings).
    async fn simulate(
        &self,
        _p: &Params,
        _c: Vec<KeyWrite>,
        predicted: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        super::apt::note_sources_changed(ctx.host);
        Ok(predicted)
    }

    async fn apply(
        &self,
        _p: &Params,
        writes: Vec<KeyWrite>,
        out: Outcome,
        ctx: &TaskCtx<'_>,
    ) -> Result<Outcome, ModuleError> {
        let ws: Vec<Write<'_>> = writes
            .iter()
            .map(|w| Write {
                real: &w.real,
                new: w.new.as_deref(),
                // apt reads keys as the unprivileged _apt user.
                mode: w.created.then_some(0o644),
            })
            .collect();
        let r = ctx.sh(&write_files_script(&ws, None)?).await?;
        if r.rc != 0 {
            let mut f = Outcome::failed(format!(
                "apt_key: writing the keyring failed: {}",
                r.stderr.trim()
            ));
            f.data = out.data;
            return Ok(f);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with gpg 2.4 (Debian 13): `--quick-gen-key ... ed25519`, `--armor --export`.
    const KEY_A: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEaxYJExYJKwYBBAHaRw8BAQdASqiIl3XfHQ/AqAYiWywnYtKZKrOztQjQOshd
Mqde2wi0G2hmcGxheSB0ZXN0IDx0QGV4YW1wbGUub3JnPoiQBBMWCgA4FiEEbetk
cOsAZrkIUuV5+LTMSZ+G7QsFAmsWCRMCGwMFCwkIBwIGFQoJCAsCBBYCAwECHgEC
F4AACgkQ+LTMSZ+G7QsqmAD/QjpAiEII5LGS+ZQKe4Qnap4pJhBYy1bWlvh+hwuT
y4wA/3jpIxQNpR75kRf2cKDY7ngzZEv3ttWApCuhneV420cB
=tVUV
-----END PGP PUBLIC KEY BLOCK-----
";
    const FP_A: &str = "6DEB6470EB0066B90852E579F8B4CC499F86ED0B";
    const KEY_B: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEaxYJExYJKwYBBAHaRw8BAQdAz9Gy7vABIjYMbHpFLPMEizHt1qFSlHtRszps
W1nQJQu0HGhmcGxheSBvdGhlciA8b0BleGFtcGxlLm9yZz6IkAQTFgoAOBYhBL5A
Mu6Pps/37855uh1Cqyvwsxa0BQJrFgkTAhsDBQsJCAcCBhUKCQgLAgQWAgMBAh4B
AheAAAoJEB1Cqyvwsxa0idYA/1Whwye8WGwHf/DBr57mqOlF05BJPrclQ8qSWlRg
4cENAQCabM2ypYDriuBRM+yvj1DSkTU4dfTwcOc2DyY564VyBA==
=r7Wo
-----END PGP PUBLIC KEY BLOCK-----
";
    const FP_B: &str = "BE4032EE8FA6CFF7EFCE79BA1D42AB2BF0B316B4";
    /// `gpg --export` of both (binary), base64.
    const BOTH: &str = "mDMEaxYJExYJKwYBBAHaRw8BAQdASqiIl3XfHQ/AqAYiWywnYtKZKrOztQjQOshdMqde2wi0G2hmcGxheSB0ZXN0IDx0QGV4YW1wbGUub3JnPoiQBBMWCgA4FiEEbetkcOsAZrkIUuV5+LTMSZ+G7QsFAmsWCRMCGwMFCwkIBwIGFQoJCAsCBBYCAwECHgECF4AACgkQ+LTMSZ+G7QsqmAD/QjpAiEII5LGS+ZQKe4Qnap4pJhBYy1bWlvh+hwuTy4wA/3jpIxQNpR75kRf2cKDY7ngzZEv3ttWApCuhneV420cBmDMEaxYJExYJKwYBBAHaRw8BAQdAz9Gy7vABIjYMbHpFLPMEizHt1qFSlHtRszpsW1nQJQu0HGhmcGxheSBvdGhlciA8b0BleGFtcGxlLm9yZz6IkAQTFgoAOBYhBL5AMu6Pps/37855uh1Cqyvwsxa0BQJrFgkTAhsDBQsJCAcCBhUKCQgLAgQWAgMBAh4BAheAAAoJEB1Cqyvwsxa0idYA/1Whwye8WGwHf/DBr57mqOlF05BJPrclQ8qSWlRg4cENAQCabM2ypYDriuBRM+yvj1DSkTU4dfTwcOc2DyY564VyBA==";

    fn both() -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(BOTH)
            .unwrap()
    }

    fn ring(path: &str, bytes: Vec<u8>, armored: bool) -> Keyring {
        Keyring {
            path: path.into(),
            real: path.into(),
            armored,
            keys: keys_in(&bytes).unwrap(),
            bytes,
        }
    }

    #[test]
    fn every_arg_is_accepted() {
        let m = crate::modules::testutil::every_arg::<Params>();
        assert!(serde_json::from_value::<Params>(Value::Object(m)).is_ok());
        assert!(serde_json::from_value::<Params>(json!({"url": "x", "keyrnig": "y"})).is_err());
    }

    #[test]
    fn fingerprints_as_gpg_prints_them() {
        let a = keys_in(&dearmor(KEY_A).unwrap()).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].fingerprint, FP_A);
        assert_eq!(a[0].key_id, "F8B4CC499F86ED0B");
        let ks = keys_in(&both()).unwrap();
        assert_eq!(
            ks.iter()
                .map(|k| k.fingerprint.as_str())
                .collect::<Vec<_>>(),
            [FP_A, FP_B]
        );
        // The second key starts where the first ends: gpg's export is the two concatenated.
        assert_eq!(ks[0].range.end, ks[1].range.start);
        assert_eq!(
            &both()[ks[1].range.clone()],
            dearmor(KEY_B).unwrap().as_slice()
        );
    }

    #[test]
    fn armor_round_trips_with_gpgs_checksum() {
        let bin = dearmor(KEY_A).unwrap();
        let a = armor(&bin);
        assert!(a.contains("\n=tVUV\n"), "{a}");
        assert_eq!(dearmor(&a).unwrap(), bin);
        // Two blocks in one text.
        assert_eq!(dearmor(&format!("{KEY_A}{KEY_B}")).unwrap(), both());
        assert!(dearmor("hello").is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id("0x9f86ed0b").unwrap(), "9F86ED0B");
        assert!(parse_id("12345").is_err());
        assert!(parse_id("xyzxyzxy").is_err());
        assert!(id_matches("9F86ED0B", "F8B4CC499F86ED0B"));
        assert!(id_matches(FP_A, "F8B4CC499F86ED0B"));
        assert!(id_matches("F8B4CC499F86ED0B", "F8B4CC499F86ED0B"));
        assert!(!id_matches("1D42AB2BF0B316B4", "F8B4CC499F86ED0B"));
        assert_eq!(
            keyserver_url("keyserver.ubuntu.com", "ABCD1234"),
            "http://keyserver.ubuntu.com:11371/pks/lookup?op=get&options=mr&search=0xABCD1234"
        );
        assert_eq!(
            keyserver_url("hkps://keys.openpgp.org", "AB"),
            "https://keys.openpgp.org/pks/lookup?op=get&options=mr&search=0xAB"
        );
        assert!(keyserver_url("hkp://keyserver.ubuntu.com:80", "AB")
            .starts_with("http://keyserver.ubuntu.com:80/pks"));
    }

    #[test]
    fn present_adds_only_missing_keys() {
        // New keyring file: binary, or armored for *.asc.
        let (w, fps) =
            plan_present(Some("/etc/apt/keyrings/a.gpg"), &[], KEY_A.as_bytes(), None).unwrap();
        assert_eq!(fps, [FP_A]);
        assert_eq!(
            w[0].new.as_deref(),
            Some(dearmor(KEY_A).unwrap().as_slice())
        );
        assert!(w[0].created);
        let (w, _) =
            plan_present(Some("/etc/apt/keyrings/a.asc"), &[], KEY_A.as_bytes(), None).unwrap();
        assert!(String::from_utf8_lossy(w[0].new.as_deref().unwrap()).starts_with(ARMOR_BEGIN));
        // Without keyring: trusted.gpg.d/<KEYID>.gpg.
        let (w, _) = plan_present(None, &[], KEY_A.as_bytes(), Some("9F86ED0B")).unwrap();
        assert_eq!(w[0].path, "/etc/apt/trusted.gpg.d/F8B4CC499F86ED0B.gpg");
        // Already there (in any trusted file): nothing.
        let a = ring(
            "/etc/apt/trusted.gpg.d/x.gpg",
            dearmor(KEY_A).unwrap(),
            false,
        );
        let (w, _) = plan_present(None, std::slice::from_ref(&a), KEY_A.as_bytes(), None).unwrap();
        assert!(w.is_empty());
        // Appended to an existing keyring, keeping its key.
        let (w, fps) = plan_present(
            Some("/etc/apt/trusted.gpg.d/x.gpg"),
            &[a],
            KEY_B.as_bytes(),
            Some(FP_B),
        )
        .unwrap();
        assert_eq!(fps, [FP_B]);
        assert_eq!(w[0].new.as_deref(), Some(both().as_slice()));
        assert!(!w[0].created);
        // An id the data does not hold.
        let e = plan_present(None, &[], KEY_A.as_bytes(), Some("1D42AB2BF0B316B4")).unwrap_err();
        assert!(e.contains("not in the key data"));
        assert!(plan_present(None, &[], b"<html>", None).is_err());
    }

    #[test]
    fn absent_removes_the_key_and_empty_files() {
        let r = ring("/etc/apt/trusted.gpg.d/both.asc", both(), true);
        let (w, fps) = plan_absent(std::slice::from_ref(&r), "F8B4CC499F86ED0B").unwrap();
        assert_eq!(fps, [FP_A]);
        let left = String::from_utf8(w[0].new.clone().unwrap()).unwrap();
        assert_eq!(dearmor(&left).unwrap(), dearmor(KEY_B).unwrap());
        let a = ring("/k/a.gpg", dearmor(KEY_A).unwrap(), false);
        let (w, _) = plan_absent(&[a.clone(), r], "9F86ED0B").unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].new, None);
        let (w, _) = plan_absent(&[a], "1D42AB2BF0B316B4").unwrap();
        assert!(w.is_empty());
    }

    #[test]
    fn contract_plan_on_recorded_probe() {
        let p: Params = serde_json::from_value(json!({
            "url": "https://example.org/key.asc", "id": FP_A, "keyring": "/etc/apt/keyrings/a.gpg"
        }))
        .unwrap();
        // The id was found: nothing fetched, nothing to do.
        let a = ring("/etc/apt/keyrings/a.gpg", dearmor(KEY_A).unwrap(), false);
        let seen = Observed {
            keyrings: vec![a],
            ..Default::default()
        };
        let pl = AptKey.plan(&p, &seen, false).unwrap();
        assert!(pl.changes.is_none() && !pl.outcome.changed);
        let seen = Observed {
            source: Some(Ok(KEY_A.as_bytes().to_vec())),
            ..Default::default()
        };
        let pl = AptKey.plan(&p, &seen, true).unwrap();
        assert!(pl.outcome.changed);
        assert_eq!(pl.outcome.data["fp"], json!([FP_A]));
        let seen = Observed {
            source: Some(Err("Failed to download key at x: 404".into())),
            ..Default::default()
        };
        let pl = AptKey.plan(&p, &seen, false).unwrap();
        assert!(pl.outcome.failed && pl.outcome.msg.contains("404"));
        let bad: Params = serde_json::from_value(json!({"url": "x", "data": "y"})).unwrap();
        assert!(bad.check().is_err());
        let absent: Params = serde_json::from_value(json!({"state": "absent"})).unwrap();
        assert!(absent.check().is_err());
    }
}
