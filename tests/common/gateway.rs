//! An HTTP gateway running in the test process on an ephemeral port, and the HTTP
//! client the tests reach it with.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use translation_worker::config::Config;
use translation_worker::gateway::{Gateway, GatewayError, GatewayHandle};

/// A gateway running in this process on an ephemeral port.
pub struct RunningGateway {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its client and metrics.
    pub handle: GatewayHandle,
    /// Cancelled by [`RunningGateway::stop`].
    pub shutdown: CancellationToken,
    /// The serving task.
    pub task: tokio::task::JoinHandle<Result<(), GatewayError>>,
}

impl RunningGateway {
    /// Binds and serves `config` on an ephemeral port (not waiting for the broker).
    pub async fn start(mut config: Config) -> Self {
        config.gateway.listen = "127.0.0.1:0".into();
        let gateway = Gateway::bind(&config).await.expect("gateway binds");
        let addr = gateway.local_addr().expect("bound address");
        let handle = gateway.handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gateway.run(shutdown.clone()));
        Self {
            base: format!("http://{addr}"),
            handle,
            shutdown,
            task,
        }
    }

    /// [`RunningGateway::start`], then waits until `/healthz` says the broker is up.
    pub async fn start_healthy(config: Config) -> Self {
        let gw = Self::start(config).await;
        gw.wait_healthy(&http_client()).await;
        gw
    }

    /// The URL of `path` on this gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self, http: &reqwest::Client) -> String {
        http.get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics body")
    }

    /// Waits until `/healthz` says the broker connection is up.
    pub async fn wait_healthy(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(self.url("/healthz")).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "gateway never became healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Cancels the gateway and waits (20 s at most) for it to stop without error.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("gateway stops")
            .expect("gateway task")
            .expect("gateway served without error");
    }
}

/// An HTTP client for the gateway.
pub fn http_client() -> reqwest::Client {
    // No proxy: the gateway is on loopback, whatever HTTP_PROXY says.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client")
}

/// Status, `Retry-After` and JSON body of a response.
pub async fn answer(r: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = r.status();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ASCII Retry-After").to_owned());
    let body = r.text().await.expect("body");
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status}: {e}: {body}"));
    (status, retry, value)
}
