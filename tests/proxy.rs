//! A fault-injecting HTTP proxy in front of moto: forwards requests, except those a rule picks
//! to fail with an HTTP status, to hang, to lose their connection (before the request reaches
//! the server, or after it was applied), or to break the response body mid-way. Used for
//! failures the emulator cannot produce.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::util::{block_on, rt};

type BoxErr = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxErr>;
type Upstream = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

/// What the proxy does with a request.
pub enum Action {
    Forward,
    Fail(u16),
    Hang,
    /// Forward after this many milliseconds.
    Delay(u64),
    /// Hold the request until the flag is set, then forward it.
    Gate(Arc<std::sync::atomic::AtomicBool>),
    /// Forward, but break the response body's connection after this many bytes (at most half
    /// the body, so that it is always cut short).
    CutBody(usize),
    /// Close the connection without forwarding or answering (a reset before any response).
    Reset,
    /// Forward and wait for the server's whole answer (the request is applied), then close the
    /// connection without answering: the client cannot tell whether it happened.
    LoseResponse,
}

/// What a rule sees of a request. `body` is filled for DynamoDB requests (they carry an
/// `x-amz-target` header and a small JSON body); it is empty for S3 requests.
pub struct Req<'a> {
    pub method: &'a Method,
    pub pq: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl Req<'_> {
    /// The DynamoDB operation (`GetItem`, `UpdateItem`, …), if this is a DynamoDB request.
    pub fn dynamo_op(&self) -> Option<&str> {
        let t = self.headers.get("x-amz-target")?.to_str().ok()?;
        t.strip_prefix("DynamoDB_20120810.")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn body_has(&self, needle: &str) -> bool {
        std::str::from_utf8(self.body).is_ok_and(|b| b.contains(needle))
    }
}

pub type Rule = Arc<dyn Fn(&Method, &str) -> Action + Send + Sync>;
pub type FullRule = Arc<dyn Fn(&Req) -> Action + Send + Sync>;

pub struct Proxy {
    pub endpoint: String,
}

/// Start a proxy to `upstream` (http://host:port) applying `rule` to each request's method
/// and path-and-query.
pub fn start(upstream: &str, rule: Rule) -> Proxy {
    start_full(upstream, Arc::new(move |r: &Req| rule(r.method, r.pq)))
}

/// Start a proxy whose rule also sees the request's headers (and a DynamoDB request's body).
pub fn start_full(upstream: &str, rule: FullRule) -> Proxy {
    let listener = block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.to_string();
    let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
    rt().spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (rule, client, upstream) = (rule.clone(), client.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (rule, client, upstream) = (rule.clone(), client.clone(), upstream.clone());
                    async move { handle(req, &rule, &client, &upstream).await }
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
    rule: &FullRule,
    client: &Upstream,
    upstream: &str,
) -> Result<Response<Body>, std::io::Error> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    let (body, seen): (Body, Bytes) = if parts.headers.contains_key("x-amz-target") {
        let b = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (Full::new(b.clone()).map_err(|e| match e {}).boxed(), b)
    } else {
        (
            body.map_err(|e| Box::new(e) as BoxErr).boxed(),
            Bytes::new(),
        )
    };
    let action = rule(&Req {
        method: &parts.method,
        pq: &pq,
        headers: &parts.headers,
        body: &seen,
    });
    let req = Request::from_parts(parts, body);
    match action {
        Action::Fail(status) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>injected failure {status}</Message></Error>"
            );
            Ok(Response::builder()
                .status(status)
                .header("content-type", "application/xml")
                .body(Full::new(Bytes::from(xml)).map_err(|e| match e {}).boxed())
                .unwrap())
        }
        Action::Hang => std::future::pending().await,
        Action::Reset => Err(std::io::Error::other(
            "connection reset by the fault proxy before forwarding",
        )),
        Action::LoseResponse => {
            let resp = forward(req, pq, client, upstream).await;
            let _ = resp.into_body().collect().await;
            Err(std::io::Error::other(
                "response lost by the fault proxy (the request was applied)",
            ))
        }
        Action::Delay(ms) => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(forward(req, pq, client, upstream).await)
        }
        Action::Forward => Ok(forward(req, pq, client, upstream).await),
        Action::Gate(open) => {
            while !open.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Ok(forward(req, pq, client, upstream).await)
        }
        Action::CutBody(n) => {
            let resp = forward(req, pq, client, upstream).await;
            let (parts, body) = resp.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let head = bytes.slice(..n.min(bytes.len() / 2));
            type Item = Result<hyper::body::Frame<Bytes>, BoxErr>;
            use futures::StreamExt;
            // The head goes out first (flushed), then the connection breaks.
            let frames = futures::stream::iter([Ok::<_, BoxErr>(hyper::body::Frame::data(head))])
                .chain(futures::stream::once(async {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Err::<hyper::body::Frame<Bytes>, _>(
                        "connection reset by the fault proxy".into(),
                    )
                }))
                .map(|i: Item| i);
            let body = http_body_util::StreamBody::new(frames);
            Ok(Response::from_parts(parts, BodyExt::boxed(body)))
        }
    }
}

async fn forward(
    req: Request<Body>,
    pq: String,
    client: &Upstream,
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
