//! `trackgate device import`: fleet provisioning from lines of `<device id> <key id> <64 hex>`.
//! Errors name the line and what is wrong with it, never the secret.

use anyhow::{Context, bail};
use std::io::BufRead;
use trackgate_proto::Secret;
use trackgate_store::Store;

/// Devices committed per transaction.
const CHUNK: usize = 10_000;

/// One line: `(device id, key id, secret)`; `None` for a blank line or a `#` comment.
pub fn parse_line(line: &str) -> anyhow::Result<Option<(String, String, Secret)>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [id, kid, hex] = parts[..] else {
        bail!(
            "expected `<device id> <key id> <64 hex characters>`, found {} fields",
            parts.len()
        );
    };
    let secret = Secret::from_hex(hex).map_err(|_| anyhow::anyhow!("the key of {id} is not 64 hex characters"))?;
    Ok(Some((id.to_owned(), kid.to_owned(), secret)))
}

/// Import every line of `input`; the number of devices imported.
pub async fn devices(store: &Store, input: impl BufRead, supplier: Option<&str>) -> anyhow::Result<u64> {
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut done = 0u64;
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        if let Some(d) = parse_line(&line).with_context(|| format!("line {}", n + 1))? {
            chunk.push(d);
        }
        if chunk.len() == CHUNK {
            commit(store, &mut chunk, supplier, &mut done).await?;
        }
    }
    commit(store, &mut chunk, supplier, &mut done).await?;
    Ok(done)
}

async fn commit(
    store: &Store,
    chunk: &mut Vec<(String, String, Secret)>,
    supplier: Option<&str>,
    done: &mut u64,
) -> anyhow::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    store
        .import_devices(chunk, supplier)
        .await
        .with_context(|| format!("importing after {done} devices (those are committed)"))?;
    *done += chunk.len() as u64;
    chunk.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_and_bad_ones_named_without_their_secret() {
        let hex = "ab".repeat(32);
        let (id, kid, _) = parse_line(&format!("  TRK-1 k1 {hex} ")).unwrap().unwrap();
        assert_eq!((id.as_str(), kid.as_str()), ("TRK-1", "k1"));
        assert!(parse_line("# comment").unwrap().is_none());
        assert!(parse_line("").unwrap().is_none());
        let short = "cd".repeat(20);
        let e = parse_line(&format!("TRK-2 k1 {short}")).unwrap_err().to_string();
        assert!(e.contains("TRK-2") && !e.contains(&short), "{e}");
        assert!(parse_line("TRK-3 k1").unwrap_err().to_string().contains("2 fields"));
    }
}
