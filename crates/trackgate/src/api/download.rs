//! Full-resolution downloads of a device's track over a range, for the operator who wants the raw
//! fixes: GeoJSON (a FeatureCollection of `Point` features, as the track pages give them), GPX 1.1
//! (one `trk` of one `trkseg`) or CSV. Streamed page by page from the store: memory stays flat
//! however long the range. A database failure part way ends the body abruptly (the client sees a
//! truncated transfer, never a short file that looks whole).

use super::geojson;
use super::location::{TrackRange, audit_read, visible_device};
use super::{ApiFailure, ApiState, Caller};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::fmt::Write as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use trackgate_proto::Measurement;
use trackgate_store::{Fix, TrackCursor};

/// Fixes read from the store per chunk of the body.
const PAGE: u32 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    GeoJson,
    Gpx,
    Csv,
}

impl Format {
    fn parse(s: Option<&str>) -> Result<Format, ApiFailure> {
        match s.unwrap_or("geojson") {
            "geojson" => Ok(Format::GeoJson),
            "gpx" => Ok(Format::Gpx),
            "csv" => Ok(Format::Csv),
            other => Err(ApiFailure::BadRequest(format!(
                "`format` must be geojson, gpx or csv, not {other:?}"
            ))),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::GeoJson => "geojson",
            Format::Gpx => "gpx",
            Format::Csv => "csv",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::GeoJson => "application/geo+json",
            Format::Gpx => "application/gpx+xml",
            Format::Csv => "text/csv; charset=utf-8; header=present",
        }
    }

    fn head(self, device: &str) -> String {
        match self {
            Format::GeoJson => "{\"type\":\"FeatureCollection\",\"features\":[".to_owned(),
            Format::Gpx => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                 <gpx version=\"1.1\" creator=\"trackgate\" xmlns=\"http://www.topografix.com/GPX/1/1\" \
                 xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
                 xsi:schemaLocation=\"http://www.topografix.com/GPX/1/1 http://www.topografix.com/GPX/1/1/gpx.xsd\">\n\
                 <trk><name>{}</name><trkseg>\n",
                xml_text(device)
            ),
            Format::Csv => {
                let mut h = "device_id,seq,ts,time".to_owned();
                for name in Measurement::NAMES {
                    h.push(',');
                    h.push_str(name);
                }
                h.push('\n');
                h
            }
        }
    }

    fn tail(self) -> &'static str {
        match self {
            Format::GeoJson => "]}\n",
            Format::Gpx => "</trkseg></trk>\n</gpx>\n",
            Format::Csv => "",
        }
    }

    /// One fix; `first` is the first of the whole body.
    fn write(self, out: &mut String, device: &str, f: &Fix, first: bool) {
        let (lat, lon) = f.position();
        match self {
            Format::GeoJson => {
                if !first {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(&geojson::fix(device, f)).unwrap_or_default());
                out.push('\n');
            }
            Format::Gpx => {
                // GPX wants longitudes in [-180, 180): the antimeridian is written as -180.
                let lon = if lon >= 180.0 { lon - 360.0 } else { lon };
                let _ = write!(out, "<trkpt lat=\"{lat}\" lon=\"{lon}\">");
                if let Some(alt) = f.measurement().alt {
                    let _ = write!(out, "<ele>{alt}</ele>");
                }
                let _ = writeln!(out, "<time>{}</time></trkpt>", rfc3339(f.ts()));
            }
            Format::Csv => {
                let _ = write!(out, "{device},{},{},{}", f.seq(), f.ts(), rfc3339(f.ts()));
                for v in f.measurement().values() {
                    out.push(',');
                    if let Some(v) = v {
                        let _ = write!(out, "{v}");
                    }
                }
                out.push('\n');
            }
        }
    }
}

/// Unix ms as RFC 3339 in UTC, to the millisecond.
fn rfc3339(ts_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

/// `GET /v1/devices/{id}/track/download?from=&to=&format=geojson|gpx|csv`: every fix with
/// `from <= ts < to` (Unix ms; the last 24 hours by default), oldest first, as a file. Audited
/// as `read.download`.
pub async fn download(
    State(s): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
) -> Result<Response, ApiFailure> {
    let TrackRange { from, to } = TrackRange::parse(&q.from, &q.to)?;
    let format = Format::parse(q.format.as_deref())?;
    let d = visible_device(&s, &caller, &id).await?;
    audit_read(
        &s,
        &caller,
        "read.download",
        Some(&d.assignment.org_id),
        Some(format!("{id} {from}..{to} {}", format.extension())),
    )
    .await?;
    let filename = format!("{id}-{from}-{to}.{}", format.extension());
    let pages = Pages {
        state: s,
        device: id,
        from,
        to,
        after: None,
        format,
        stage: Stage::Head,
        wrote: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(pages, Pages::next));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response())
}

enum Stage {
    Head,
    Body,
    Done,
}

/// The body's state: where the next page starts.
struct Pages {
    state: ApiState,
    device: String,
    from: i64,
    to: i64,
    after: Option<TrackCursor>,
    format: Format,
    stage: Stage,
    wrote: bool,
}

impl Pages {
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Pages)> {
        match self.stage {
            Stage::Head => {
                self.stage = Stage::Body;
                let head = self.format.head(&self.device);
                Some((Ok(Bytes::from(head)), self))
            }
            Stage::Body => {
                let page = match self
                    .state
                    .store
                    .track(&self.device, self.from, self.to, self.after, PAGE)
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!(error = %e, device = %self.device, "track download: database error; the body ends unfinished");
                        self.stage = Stage::Done;
                        return Some((Err(std::io::Error::other("database error")), self));
                    }
                };
                let mut out = String::with_capacity(page.points.len() * 160);
                for f in &page.points {
                    self.format.write(&mut out, &self.device, f, !self.wrote);
                    self.wrote = true;
                }
                match page.next {
                    Some(c) => self.after = Some(c),
                    None => {
                        out.push_str(self.format.tail());
                        self.stage = Stage::Done;
                    }
                }
                Some((Ok(Bytes::from(out)), self))
            }
            Stage::Done => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(seq: i64, ts: i64, alt: Option<f64>) -> Fix {
        let m = Measurement {
            lat: Some(52.5),
            lon: Some(13.25),
            alt,
            bat: Some(80.0),
            ..Measurement::default()
        };
        Fix::new(seq, ts, m).unwrap()
    }

    fn body(format: Format, fixes: &[Fix]) -> String {
        let mut out = format.head("d<1>");
        for (i, f) in fixes.iter().enumerate() {
            format.write(&mut out, "d<1>", f, i == 0);
        }
        out.push_str(format.tail());
        out
    }

    #[test]
    fn csv_has_a_header_and_a_row_per_fix_with_empty_cells_for_what_is_absent() {
        let out = body(
            Format::Csv,
            &[fix(1, 1_796_178_716_123, None), fix(2, 1_796_178_717_000, Some(34.5))],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "device_id,seq,ts,time,lat,lon,alt,spd,hdg,acc,bat,tmp");
        assert_eq!(
            lines[1],
            "d<1>,1,1796178716123,2026-12-02T02:31:56.123Z,52.5,13.25,,,,,80,"
        );
        assert_eq!(
            lines[2],
            "d<1>,2,1796178717000,2026-12-02T02:31:57Z,52.5,13.25,34.5,,,,80,"
        );
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn geojson_is_one_collection_and_gpx_escapes_the_name() {
        let out = body(Format::GeoJson, &[fix(1, 1000, None), fix(2, 2000, None)]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["features"].as_array().unwrap().len(), 2);
        assert_eq!(v["features"][1]["properties"]["seq"], 2);
        let empty: serde_json::Value = serde_json::from_str(&body(Format::GeoJson, &[])).unwrap();
        assert_eq!(empty["features"], serde_json::json!([]));
        let gpx = body(Format::Gpx, &[fix(1, 1000, Some(3.0))]);
        assert!(gpx.contains("<name>d&lt;1&gt;</name>"), "{gpx}");
        assert!(
            gpx.contains("<trkpt lat=\"52.5\" lon=\"13.25\"><ele>3</ele><time>1970-01-01T00:00:01Z</time></trkpt>"),
            "{gpx}"
        );
    }
}
