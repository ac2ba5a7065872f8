//! A fault-injecting HTTP proxy in front of moto: forwards requests, except those a rule picks
//! to fail with an HTTP status or to hang. Used for failures the emulator cannot produce.

#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::util::{block_on, rt};

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What the proxy does with a request.
pub enum Action {
    Forward,
    Fail(u16),
    Hang,
    /// Forward after this many milliseconds.
    Delay(u64),
    /// Forward, but break the response body's connection after this many bytes.
    CutBody(usize),
}

pub type Rule = Arc<dyn Fn(&Method, &str) -> Action + Send + Sync>;

pub struct Proxy {
    pub endpoint: String,
}

/// Start a proxy to `upstream` (http://host:port) applying `rule` to each request's method
/// and path-and-query.
pub fn start(upstream: &str, rule: Rule) -> Proxy {
    let listener = block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.to_string();
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build_http();
    rt().spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (rule, client, upstream) = (rule.clone(), client.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (rule, client, upstream) = (rule.clone(), client.clone(), upstream.clone());
                    async move { Ok::<_, Infallible>(handle(req, &rule, &client, &upstream).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Proxy { endpoint }
}

async fn handle(
    req: Request<Incoming>,
    rule: &Rule,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Incoming>,
    upstream: &str,
) -> Response<Body> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    match rule(req.method(), &pq) {
        Action::Fail(status) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>injected failure {status}</Message></Error>"
            );
            Response::builder()
                .status(status)
                .header("content-type", "application/xml")
                .body(Full::new(Bytes::from(xml)).map_err(|e| match e {}).boxed())
                .unwrap()
        }
        Action::Hang => std::future::pending().await,
        Action::Delay(ms) => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            forward(req, pq, client, upstream).await
        }
        Action::Forward => forward(req, pq, client, upstream).await,
        Action::CutBody(n) => {
            let resp = forward(req, pq, client, upstream).await;
            let (parts, body) = resp.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let head = bytes.slice(..n.min(bytes.len()));
            type Item = Result<hyper::body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
            use futures::StreamExt;
            // The head goes out first (flushed), then the connection breaks.
            let frames =
                futures::stream::iter([Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    hyper::body::Frame::data(head),
                )])
                .chain(futures::stream::once(async {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Err::<hyper::body::Frame<Bytes>, _>(
                        "connection reset by the fault proxy".into(),
                    )
                }))
                .map(|i: Item| i);
            let body = http_body_util::StreamBody::new(frames);
            Response::from_parts(parts, BodyExt::boxed(body))
        }
    }
}

async fn forward(
    req: Request<Incoming>,
    pq: String,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Incoming>,
    upstream: &str,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    parts.uri = format!("{upstream}{pq}").parse().unwrap();
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(|b| b.map_err(|e| Box::new(e) as _).boxed()),
        Err(e) => Response::builder()
            .status(502)
            .body(
                Full::new(Bytes::from(e.to_string()))
                    .map_err(|e| match e {})
                    .boxed(),
            )
            .unwrap(),
    }
}
