//! HTTPS transport: signed `POST /v1/records` requests (PROTOCOL.md §2) from a pool of workers,
//! each answer tallied per record with its latency; and the supplier's batcher, which gathers
//! many devices' records into one request.

use crate::fleet::{Fault, Out};
use crate::motion::Rng;
use crate::roster::Member;
use crate::send::{SendArgs, now_ms};
use crate::tally::Tally;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};
use trackgate_proto::Secret;
use trackgate_proto::sign::{self, RequestParts};

/// One request: whose key signs it, the records in it, and whether its timestamp is stale.
pub struct Request {
    pub signer: Member,
    pub outs: Vec<Out>,
    pub stale: bool,
}

/// How far back a stale request's timestamp is (trackgate allows 300 s).
const STALE_BY_S: u64 = 600;

pub struct Transport;

impl Transport {
    /// Start `--concurrency` workers; they stop when the sender is dropped and the queue is empty.
    pub fn start(
        args: &SendArgs,
        ca: &[u8],
        tally: Tally,
    ) -> anyhow::Result<(mpsc::Sender<Request>, tokio::task::JoinHandle<anyhow::Result<()>>)> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca)?)
            .timeout(Duration::from_secs(60))
            .build()?;
        let workers = args.concurrency.max(1);
        let (tx, rx) = mpsc::channel::<Request>(workers * 2);
        let rx = Arc::new(Mutex::new(rx));
        let url = format!("{}/v1/records", args.url.trim_end_matches('/'));
        let handle = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..workers {
                let (client, rx, url, tally) = (client.clone(), rx.clone(), url.clone(), tally.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some(req) = next else { return };
                        send(&client, &url, req, &tally).await;
                    }
                }));
            }
            for t in tasks {
                t.await?;
            }
            Ok(())
        });
        Ok((tx, handle))
    }
}

async fn send(client: &reqwest::Client, url: &str, req: Request, tally: &Tally) {
    tally.sent(&req.outs);
    let body = format!(
        "[{}]",
        req.outs
            .iter()
            .map(|o| o.envelope.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let stale_fault = req.stale.then_some(Fault::Stale);
    let started = Instant::now();
    let answer = post(client, url, &req.signer, body, req.stale).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match answer {
        Ok((200, v)) => {
            let rejected: Vec<(usize, String)> = v["rejected"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        r["index"].as_u64().unwrap_or(u64::MAX) as usize,
                        r["reason"].as_str().unwrap_or("?").to_owned(),
                    )
                })
                .collect();
            tally.answered(
                &req.outs,
                v["accepted"].as_u64().unwrap_or(0),
                v["duplicates"].as_u64().unwrap_or(0),
                &rejected,
                ms,
            );
        }
        Ok((status, _)) => tally.refused(&req.outs, status.to_string(), stale_fault, ms),
        Err(_) => tally.refused(&req.outs, "error".into(), stale_fault, ms),
    }
}

pub async fn post(
    client: &reqwest::Client,
    url: &str,
    signer: &Member,
    body: String,
    stale: bool,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let secret = Secret::from_hex(&signer.secret)?;
    let mut ts_s = now_ms() / 1000;
    if stale {
        ts_s = ts_s.saturating_sub(STALE_BY_S);
    }
    let ts = ts_s.to_string();
    let parts = RequestParts {
        timestamp: &ts,
        method: "POST",
        path: "/v1/records",
        body: body.as_bytes(),
    };
    let sig = hex::encode(sign::request_signature(&secret, &parts));
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-tg-key", format!("{}/{}", signer.id, signer.kid))
        .header("x-tg-timestamp", ts)
        .header("x-tg-signature", sig)
        .body(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, v))
}

/// The supplier relay: gather records into batches of `batch`, or whatever arrived within
/// `linger` of a batch's first record, and hand each to the workers signed by the supplier.
pub async fn batch_supplier(
    mut rx: mpsc::Receiver<Out>,
    tx: mpsc::Sender<Request>,
    supplier: Member,
    batch: usize,
    linger: Duration,
    stale: f64,
    tally: Tally,
) -> anyhow::Result<()> {
    let mut rng = Rng::new(0xba7c4);
    let mut pending: Vec<Out> = Vec::with_capacity(batch);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                Ok(x) => x,
                Err(_) => {
                    flush(&mut pending, &tx, &supplier, &mut rng, stale, &tally).await?;
                    deadline = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        match next {
            Some(o) => {
                if pending.is_empty() {
                    deadline = Some(tokio::time::Instant::now() + linger);
                }
                pending.push(o);
                if pending.len() >= batch {
                    flush(&mut pending, &tx, &supplier, &mut rng, stale, &tally).await?;
                    deadline = None;
                }
            }
            None => {
                flush(&mut pending, &tx, &supplier, &mut rng, stale, &tally).await?;
                return Ok(());
            }
        }
    }
}

async fn flush(
    pending: &mut Vec<Out>,
    tx: &mpsc::Sender<Request>,
    supplier: &Member,
    rng: &mut Rng,
    stale: f64,
    tally: &Tally,
) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let stale = rng.unit() < stale;
    if stale {
        tally.request_fault(Fault::Stale);
    }
    let request = Request {
        signer: supplier.clone(),
        outs: std::mem::take(pending),
        stale,
    };
    tx.send(request)
        .await
        .map_err(|_| anyhow::anyhow!("the HTTPS workers stopped early"))
}
