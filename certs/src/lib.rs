//! Development TLS for the whole system.
//!
//! On first run [`ensure_dev`] creates a local CA (`ca.pem`/`ca.key`) and a server
//! certificate signed by it (`server.pem`/`server.key`) in a data directory, covering
//! `localhost`, `127.0.0.1` and any advertised address. Later runs reuse them, and only
//! reissue the server certificate (with the same CA) when the set of names changes, so a
//! browser that trusts the CA once keeps trusting it. [`server_config`] loads either these
//! or real certificates given by the operator.
//!
//! The CA carries name constraints (RFC 5280 §4.2.1.10): it can vouch only for `localhost`,
//! the host's own names, loopback and private addresses, and the public addresses it was
//! made for. Should its key leak, it cannot impersonate any other site to a browser that
//! trusts it. A name outside that scope makes a new CA (to be trusted again).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::net::IpAddr;

use ipnet::IpNet;
use rcgen::{BasicConstraints, CertificateParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors of certificate generation and loading.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// rcgen failed to generate or sign.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file held no usable certificate or key.
    #[error("{0}: no usable certificate or private key in PEM file")]
    Pem(PathBuf),
    /// rustls refused the certificate/key pair.
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
}

/// Paths of a certificate chain and its key.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// PEM certificate (chain).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM of the CA that signed `cert`, when it is our development CA.
    pub ca: Option<PathBuf>,
}

const CA_NAME: &str = "Conference local development CA";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io { path: path.to_path_buf(), source }
}

fn write_private(path: &Path, contents: &str) -> Result<(), CertError> {
    write_secret_file(path, contents).map_err(io_err(path))
}

/// Writes a file that only its owner may read (mode 0600 on Unix), atomically: the contents
/// go to a new file created with that mode in the same directory, which then replaces `path`.
/// The secret is never readable by others, not even for a moment, and a crash leaves either
/// the old file or the new one.
pub fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let name = path.file_name().ok_or_else(|| std::io::Error::other("no file name"))?;
    let tmp = path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(contents.as_bytes())?;
        f.sync_all()
    });
    match written.and_then(|()| fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Address blocks every development CA may vouch for: loopback, private, shared (CGNAT),
/// link-local and unique-local addresses, which are never another site's.
const LOCAL_NETS: &[&str] = &["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10"];

/// What a CA made for `names` may vouch for: `localhost`, each DNS name, the local blocks and
/// each other address on its own.
fn ca_scope(names: &[String]) -> Vec<String> {
    let mut scope: Vec<String> = vec!["localhost".into()];
    scope.extend(LOCAL_NETS.iter().map(|n| n.to_string()));
    for n in names {
        let entry = match n.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip).to_string(),
            Err(_) => n.clone(),
        };
        if !in_scope(&scope, n) && !scope.contains(&entry) {
            scope.push(entry);
        }
    }
    scope
}

/// Whether `name` falls inside `scope` as name constraints read it: an address inside one
/// of its blocks, or a DNS name equal to one of its names or under it.
fn in_scope(scope: &[String], name: &str) -> bool {
    match name.parse::<IpAddr>() {
        Ok(ip) => scope.iter().filter_map(|s| s.parse::<IpNet>().ok()).any(|net| net.contains(&ip)),
        Err(_) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            scope.iter().filter(|s| s.parse::<IpNet>().is_err()).any(|s| name == *s || name.ends_with(&format!(".{s}")))
        }
    }
}

fn ca_params(scope: &[String]) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.distinguished_name.push(DnType::OrganizationName, "conference dev");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let permitted = scope
        .iter()
        .map(|s| match s.parse::<IpNet>() {
            Ok(net) => GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(net.addr(), net.prefix_len())),
            Err(_) => GeneralSubtree::DnsName(s.clone()),
        })
        .collect();
    p.name_constraints = Some(NameConstraints { permitted_subtrees: permitted, excluded_subtrees: Vec::new() });
    Ok(p)
}

/// Names (DNS names or IP addresses) the development server certificate must cover.
pub fn default_names(extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    for n in extra {
        if !n.is_empty() && !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// Creates (first run) or reuses (later runs) the development CA and server certificate in `dir`.
///
/// Returns the paths and whether anything was newly generated.
pub fn ensure_dev(dir: &Path, names: &[String]) -> Result<(CertPaths, bool), CertError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ca_pem = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    let names_path = dir.join("server.names");
    let scope_path = dir.join("ca.scope");
    let wanted = names.join("\n");
    let mut generated = false;
    // A CA from before name constraints, or one whose scope misses a name, is replaced.
    let scope: Vec<String> = fs::read_to_string(&scope_path).unwrap_or_default().lines().map(str::to_string).collect();
    let covered = !scope.is_empty() && names.iter().all(|n| in_scope(&scope, n));

    let ca_key = if ca_pem.exists() && ca_key_path.exists() && covered {
        let pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
        KeyPair::from_pem(&pem)?
    } else {
        let key = KeyPair::generate()?;
        let scope = ca_scope(names);
        let ca = ca_params(&scope)?.self_signed(&key)?;
        fs::write(&ca_pem, ca.pem()).map_err(io_err(&ca_pem))?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        fs::write(&scope_path, scope.join("\n")).map_err(io_err(&scope_path))?;
        // A new CA invalidates any server certificate signed by an old one.
        let _ = fs::remove_file(&names_path);
        generated = true;
        tracing::info!(ca = %ca_pem.display(), "generated a local development CA");
        key
    };

    let current = fs::read_to_string(&names_path).unwrap_or_default();
    if current != wanted || !cert.exists() || !key.exists() {
        let scope: Vec<String> = fs::read_to_string(&scope_path).map_err(io_err(&scope_path))?.lines().map(str::to_string).collect();
        let issuer = Issuer::new(ca_params(&scope)?, &ca_key);
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, names.first().map(String::as_str).unwrap_or("localhost"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let server_key = KeyPair::generate()?;
        let server = params.signed_by(&server_key, &issuer)?;
        let ca_text = fs::read_to_string(&ca_pem).map_err(io_err(&ca_pem))?;
        fs::write(&cert, format!("{}{}", server.pem(), ca_text)).map_err(io_err(&cert))?;
        write_private(&key, &server_key.serialize_pem())?;
        fs::write(&names_path, &wanted).map_err(io_err(&names_path))?;
        generated = true;
        tracing::info!(names = ?names, "issued a development server certificate");
    }
    Ok((CertPaths { cert, key, ca: Some(ca_pem) }, generated))
}

/// How to make a browser or the system trust the development CA.
pub fn trust_instructions(ca: &Path) -> String {
    format!(
        "To trust the development CA ({ca}):\n  \
         Debian/Ubuntu: sudo cp {ca} /usr/local/share/ca-certificates/conference-dev.crt && sudo update-ca-certificates\n  \
         Chrome/Chromium: Settings > Privacy and security > Security > Manage certificates > Authorities > Import {ca}\n  \
         Firefox: Settings > Certificates > View Certificates > Authorities > Import {ca}",
        ca = ca.display()
    )
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let data = fs::read(path).map_err(io_err(path))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice()).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(CertError::Pem(path.to_path_buf()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let data = fs::read(path).map_err(io_err(path))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| CertError::Pem(path.to_path_buf()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls server configuration from PEM files, with ALPN for HTTP/1.1 (and h2).
pub fn server_config(paths: &CertPaths) -> Result<rustls::ServerConfig, CertError> {
    let certs = read_certs(&paths.cert)?;
    let key = read_key(&paths.key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A rustls client configuration that trusts `ca` (the development CA or a private CA).
pub fn client_config(ca: &Path) -> Result<rustls::ClientConfig, CertError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots.add(c)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn secret_files_are_only_ever_the_owners() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("certs-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secrets.toml");
        // An older file readable by everyone is replaced, not chmod-ed in place.
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::write_secret_file(&path, "api_secret = \"s\"\n").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "api_secret = \"s\"\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file is left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let names = default_names(&["10.1.2.3".into()]);
        let (p, generated) = ensure_dev(dir.path(), &names).unwrap();
        assert!(generated);
        let first = fs::read(&p.cert).unwrap();
        let (_, generated) = ensure_dev(dir.path(), &names).unwrap();
        assert!(!generated, "second run must reuse");
        assert_eq!(first, fs::read(&p.cert).unwrap());
        server_config(&p).unwrap();
        client_config(p.ca.as_ref().unwrap()).unwrap();
    }

    #[test]
    fn new_names_in_scope_reissue_the_server_cert_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = ensure_dev(dir.path(), &default_names(&[])).unwrap();
        let ca_before = fs::read(p.ca.as_ref().unwrap()).unwrap();
        // A LAN address is inside every development CA's scope: same CA.
        let (p2, generated) = ensure_dev(dir.path(), &default_names(&["10.9.8.7".into()])).unwrap();
        assert!(generated);
        assert_eq!(ca_before, fs::read(p2.ca.as_ref().unwrap()).unwrap());
        // A public address is not: a new CA, scoped to it as well.
        let (p3, _) = ensure_dev(dir.path(), &default_names(&["192.0.2.7".into()])).unwrap();
        assert_ne!(ca_before, fs::read(p3.ca.as_ref().unwrap()).unwrap());
        verify(&p3, "192.0.2.7").unwrap();
    }

    /// Verifies the certificate at `paths` for `name` against its development CA.
    fn verify(paths: &CertPaths, name: &str) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(read_certs(paths.ca.as_ref().unwrap()).unwrap().remove(0)).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
        let chain = read_certs(&paths.cert).unwrap();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        verifier.verify_server_cert(&chain[0], &chain[1..], &server, &[], rustls::pki_types::UnixTime::now()).map(|_| ())
    }

    #[test]
    fn the_ca_cannot_vouch_for_other_sites_even_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = ensure_dev(dir.path(), &default_names(&["203.0.113.5".into(), "myhost".into()])).unwrap();
        for name in ["localhost", "127.0.0.1", "203.0.113.5", "myhost"] {
            verify(&p, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // Someone with the CA's key signs certificates for other sites.
        let ca_key = KeyPair::from_pem(&fs::read_to_string(dir.path().join("ca.key")).unwrap()).unwrap();
        let scope: Vec<String> = fs::read_to_string(dir.path().join("ca.scope")).unwrap().lines().map(str::to_string).collect();
        let issuer = Issuer::new(ca_params(&scope).unwrap(), &ca_key);
        for rogue in ["bank.example", "8.8.8.8", "evil.localhost.example"] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![rogue.to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
            let forged = dir.path().join("forged.pem");
            fs::write(&forged, format!("{}{}", cert.pem(), fs::read_to_string(p.ca.as_ref().unwrap()).unwrap())).unwrap();
            let paths = CertPaths { cert: forged, key: p.key.clone(), ca: p.ca.clone() };
            let err = verify(&paths, rogue).expect_err(rogue);
            assert!(format!("{err:?}").contains("NameConstraint"), "{rogue}: refused for its name constraints, not {err:?}");
        }
    }

    #[test]
    fn garbage_pem_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        fs::write(&bad, "not a pem").unwrap();
        let paths = CertPaths { cert: bad.clone(), key: bad, ca: None };
        assert!(matches!(server_config(&paths), Err(CertError::Pem(_))));
    }
}
