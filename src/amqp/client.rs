//! The Rust client (crate `translation-client`) on a connection opened with a worker's
//! `amqp` settings, TLS client certificates included: the gateway's link and the
//! TLS tests use it.

use lapin::ConnectionProperties;
use translation_client::{Client, ClientError, ClientOptions};

use super::session::{connect, BrokerError};
use crate::config::AmqpConfig;

/// Why [`connect_client`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    /// Connecting with the `amqp` settings failed (TLS files, handshake, login; URL
    /// redacted).
    #[error(transparent)]
    Connect(#[from] BrokerError),
    /// The connection came up, the client's channels or reply queue did not.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Connects a [`Client`] with a worker's `amqp` settings: `url`, and for `amqps://` the
/// CA bundle and client certificate of `tls_*_file`.
pub async fn connect_client(
    cfg: &AmqpConfig,
    options: ClientOptions,
) -> Result<Client, ClientSetupError> {
    let props = ConnectionProperties::default()
        .with_connection_name(options.connection_name.as_str().into());
    let connection = connect(cfg, props).await?;
    Ok(Client::on_connection(connection, options).await?)
}
