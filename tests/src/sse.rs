//! A Server-Sent Events reader for the operators' live stream, `GET /v1/stream`.

use crate::Server;
use serde_json::Value;

/// A Server-Sent Events reader over a streaming response.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    /// Open the stream and wait for its `ready` event.
    pub async fn open(s: &Server, c: &reqwest::Client, token: &str) -> Sse {
        let resp = c.get(s.url("/v1/stream")).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut sse = Sse {
            resp,
            buf: String::new(),
        };
        let (event, _) = sse.next().await.expect("a ready event");
        assert_eq!(event, "ready");
        sse
    }
    /// The next event (name, data), skipping keep-alive comments; None when the stream ends.
    pub async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if block.lines().all(|l| l.starts_with(':') || l.is_empty()) {
                    continue;
                }
                return Some((event, data));
            }
            let chunk = self.resp.chunk().await.ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Device ids of the next `n` position events.
    pub async fn positions(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let (event, data) = self.next().await.expect("stream ended early");
            assert_eq!(event, "position");
            let f: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(f["type"], "Feature");
            out.push(f["id"].as_str().unwrap().to_owned());
        }
        out.sort();
        out
    }

    /// The next position event's GeoJSON feature.
    pub async fn position(&mut self) -> Value {
        let (event, data) = self.next().await.expect("stream ended early");
        assert_eq!(event, "position");
        serde_json::from_str(&data).unwrap()
    }
}
