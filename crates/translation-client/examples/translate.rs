//! The Rust client in a few lines: `cargo run -p translation-client --example translate -- 감사합니다 "좋은 아침"`
//! (with a worker running: `scripts/run.sh`). TW_AMQP__URL and TW_AMQP__EXCHANGE
//! select another broker or exchange.

use std::time::Duration;

use translation_client::{Client, ClientError, ClientOptions, TranslateRequest, DEFAULT_AMQP_URL};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TW_AMQP__URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.into());
    let exchange = std::env::var("TW_AMQP__EXCHANGE").unwrap_or_else(|_| "translation".into());
    let texts: Vec<String> = std::env::args().skip(1).collect();
    let client = Client::connect(
        &url,
        ClientOptions {
            exchange,
            timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        },
    )
    .await?;
    // One job per text, all in flight at once on the one connection.
    let calls = texts.iter().map(|text| {
        let client = client.clone();
        let request = TranslateRequest::new("ko", "en", [text.as_str()]);
        async move { client.translate(request).await }
    });
    for (text, result) in texts
        .iter()
        .zip(futures_util::future::join_all(calls).await)
    {
        match result {
            Ok(reply) => println!("{text} → {}", reply.translations[0]),
            Err(ClientError::Rejected { code, message, .. }) => {
                eprintln!("{text}: rejected ({code}): {message}")
            }
            Err(e) => eprintln!("{text}: {e}"),
        }
    }
    client.close().await;
    Ok(())
}
