//! Development TLS for the whole system.
//!
//! On first run [`ensure_dev`] creates a local CA (`ca.pem`/`ca.key`) and a server
//! certificate signed by it (`server.pem`/`server.key`) in a data directory, covering
//! `localhost`, `127.0.0.1` and any advertised address. Later runs reuse them, and only
//! reissue the server certificate (with the same CA) when the set of names changes, so a
//! browser that trusts the CA once keeps trusting it. [`server_config`] loads either these
//! or real certificates given by the operator.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
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

fn ca_params() -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.distinguished_name.push(DnType::OrganizationName, "conference dev");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
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
    let wanted = names.join("\n");
    let mut generated = false;

    let ca_key = if ca_pem.exists() && ca_key_path.exists() {
        let pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
        KeyPair::from_pem(&pem)?
    } else {
        let key = KeyPair::generate()?;
        let ca = ca_params()?.self_signed(&key)?;
        fs::write(&ca_pem, ca.pem()).map_err(io_err(&ca_pem))?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        // A new CA invalidates any server certificate signed by an old one.
        let _ = fs::remove_file(&names_path);
        generated = true;
        tracing::info!(ca = %ca_pem.display(), "generated a local development CA");
        key
    };

    let current = fs::read_to_string(&names_path).unwrap_or_default();
    if current != wanted || !cert.exists() || !key.exists() {
        let issuer = Issuer::new(ca_params()?, &ca_key);
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
    fn new_names_reissue_the_server_cert_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = ensure_dev(dir.path(), &default_names(&[])).unwrap();
        let ca_before = fs::read(p.ca.as_ref().unwrap()).unwrap();
        let (p2, generated) = ensure_dev(dir.path(), &default_names(&["192.0.2.7".into()])).unwrap();
        assert!(generated);
        assert_eq!(ca_before, fs::read(p2.ca.as_ref().unwrap()).unwrap());
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
