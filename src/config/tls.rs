//! TLS and secret files named by `amqp.*` and `redis.*` keys: checked against the
//! URL scheme, read with a size cap, and never quoted in errors or `{:?}`.

use std::path::{Path, PathBuf};

use super::ConfigError;

/// The TLS files of one connection (`amqp.tls_*` or `redis.tls_*`); empty paths are unset.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `amqp` or `redis`, for messages.
    pub section: &'static str,
    /// Extra (AMQP) or replacement (Redis) trust anchors.
    pub ca_file: PathBuf,
    /// Client certificate chain for mutual TLS.
    pub cert_file: PathBuf,
    /// Private key of `cert_file`.
    pub key_file: PathBuf,
}

/// PEM contents of [`TlsFiles`], read and checked for the expected PEM blocks.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsPem {
    /// CA certificates (PEM), when a CA file is set.
    pub ca: Option<String>,
    /// Client certificate chain (PEM), when mutual TLS is set up.
    pub client_cert: Option<Vec<u8>>,
    /// The client's private key (PEM), with `client_cert`.
    pub client_key: Option<Vec<u8>>,
}

// Never prints the key (nor the certificates: only whether they are set).
impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |b: bool| if b { "<set>" } else { "<unset>" };
        f.debug_struct("TlsPem")
            .field("ca", &set(self.ca.is_some()))
            .field("client_cert", &set(self.client_cert.is_some()))
            .field("client_key", &set(self.client_key.is_some()))
            .finish()
    }
}

impl TlsPem {
    /// Whether nothing is set (plain system-root TLS, or no TLS at all).
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client_cert.is_none()
    }
}

/// Largest TLS or URL file read: real CA bundles are a few hundred KB (the Mozilla
/// bundle is about 220 KB); anything bigger is the wrong file, not a certificate.
const MAX_SECRET_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a file named by `key`, refusing oversized ones. Errors never carry contents.
fn read_named_file(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let err = |message: String| ConfigError::File {
        key,
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(err(format!(
            "is {} bytes, more than the {MAX_SECRET_FILE_BYTES} a URL or PEM file may have",
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))
}

impl TlsFiles {
    /// The dotted keys of the CA, certificate and key files, for messages.
    fn keys(&self) -> (&'static str, &'static str, &'static str) {
        match self.section {
            "amqp" => (
                "amqp.tls_ca_file",
                "amqp.tls_cert_file",
                "amqp.tls_key_file",
            ),
            _ => (
                "redis.tls_ca_file",
                "redis.tls_cert_file",
                "redis.tls_key_file",
            ),
        }
    }

    /// Whether any TLS file is set.
    pub fn any_set(&self) -> bool {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .iter()
            .any(|p| !p.as_os_str().is_empty())
    }

    /// Reads the files that are set. Blocking (file I/O): call it before the async
    /// runtime or on its blocking pool. Each file must hold the PEM blocks it is for;
    /// rustls parses them fully when connecting.
    pub fn read(&self) -> Result<TlsPem, ConfigError> {
        let (ca_key, cert_key, key_key) = self.keys();
        let read = |key: &'static str, path: &Path, marker: &str, what: &str| {
            if path.as_os_str().is_empty() {
                return Ok(None);
            }
            let bytes = read_named_file(key, path)?;
            let pem_marker = |m: &str| bytes.windows(m.len()).any(|w| w == m.as_bytes());
            if !(pem_marker("-----BEGIN ") && pem_marker(marker)) {
                return Err(ConfigError::File {
                    key,
                    path: path.to_path_buf(),
                    message: format!("holds no PEM {what} (no \"{marker}\" block)"),
                });
            }
            Ok(Some(bytes))
        };
        let ca = read(ca_key, &self.ca_file, "CERTIFICATE-----", "certificate")?
            .map(|b| {
                String::from_utf8(b).map_err(|_| ConfigError::File {
                    key: ca_key,
                    path: self.ca_file.clone(),
                    message: "is not a text (PEM) file".into(),
                })
            })
            .transpose()?;
        let client_cert = read(cert_key, &self.cert_file, "CERTIFICATE-----", "certificate")?;
        let client_key = read(key_key, &self.key_file, "PRIVATE KEY-----", "private key")?;
        Ok(TlsPem {
            ca,
            client_cert,
            client_key,
        })
    }

    /// Checks the keys against the URL scheme: TLS files need a TLS URL, and a client
    /// certificate needs its key (and the reverse).
    pub(super) fn validate(&self, tls_url: bool, scheme: &str) -> Result<(), ConfigError> {
        let (ca_key, cert_key, key_key) = self.keys();
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        for (key, path) in [
            (ca_key, &self.ca_file),
            (cert_key, &self.cert_file),
            (key_key, &self.key_file),
        ] {
            if set(path) && !tls_url {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    message: format!(
                        "is set but {}.url does not start with {scheme}://: TLS files apply \
                         only to TLS connections (use {scheme}://, or clear {key})",
                        self.section
                    ),
                });
            }
        }
        if set(&self.cert_file) != set(&self.key_file) {
            return Err(ConfigError::Invalid {
                key: cert_key.into(),
                message: format!("and {key_key} must be set together (mutual TLS)"),
            });
        }
        Ok(())
    }
}

/// The trimmed contents of the URL file `path` named by `key` (`*.url_file`):
/// credentials mounted as a file, e.g. a Kubernetes Secret volume. An empty or
/// non-UTF-8 file is an error naming the key, without the contents.
pub(super) fn read_url_file(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let bytes = read_named_file(key, path)?;
    let err = |message: &str| ConfigError::File {
        key,
        path: path.to_path_buf(),
        message: message.into(),
    };
    let text = String::from_utf8(bytes).map_err(|_| err("is not UTF-8 text"))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(err("is empty"));
    }
    Ok(trimmed.to_owned())
}
