//! The access log: one line per request (`combined` or JSON), written by a thread of its own
//! off the request path. The request path only queues a record; when the queue is full the
//! record is dropped and counted, never waited for. SIGUSR1 reopens the file (log rotation).
use std::{
    io::{BufWriter, Write},
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;

use crate::metrics::Global;

/// `[access_log]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `off`, `combined` (the Apache/nginx format) or `json` (one object per line).
    #[serde(default = "default_format")]
    pub format: Format,
    /// A file (appended to), or `stdout`.
    #[serde(default = "default_path")]
    pub path: String,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            format: default_format(),
            path: default_path(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Off,
    Combined,
    Json,
}

fn default_format() -> Format {
    Format::Off
}
fn default_path() -> String {
    "stdout".into()
}

/// One request, as logged.
#[derive(Debug)]
pub struct Record {
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: String,
    pub host: String,
    pub target: String,
    pub protocol: &'static str,
    pub status: u16,
    /// The response's Content-Length, when it had one.
    pub bytes: Option<u64>,
    pub duration: Duration,
    pub route: Option<String>,
    pub upstream: Option<String>,
    pub upstream_server: Option<String>,
    pub upstream_time: Option<Duration>,
    pub request_id: String,
    pub user_agent: String,
    pub referer: String,
}

/// The handle the request path uses.
pub struct AccessLog {
    tx: SyncSender<Record>,
    reopen: Arc<AtomicBool>,
    metrics: Arc<Global>,
}

const QUEUE: usize = 65_536;

impl AccessLog {
    /// Starts the writer thread; `None` when the log is off.
    pub fn start(config: &AccessLogConfig, metrics: Arc<Global>) -> std::io::Result<Option<Self>> {
        if config.format == Format::Off {
            return Ok(None);
        }
        let path = (config.path != "stdout").then(|| PathBuf::from(&config.path));
        let sink = open(path.as_ref())?;
        let (tx, rx) = sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        let format = config.format;
        std::thread::Builder::new()
            .name("proxy-access-log".into())
            .spawn(move || writer(&rx, sink, path.as_ref(), format, &flag))?;
        Ok(Some(Self {
            tx,
            reopen,
            metrics,
        }))
    }

    /// Queues a record; drops (and counts) it when the writer is behind.
    pub fn log(&self, record: Record) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.access_log_dropped.inc();
            }
        }
    }

    /// Asks the writer to reopen the file (after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }
}

fn open(path: Option<&PathBuf>) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match path {
        // Never through a link planted where the log goes (root opens it at start).
        Some(p) => Box::new(crate::safe_fs::open_append(p, 0o640)?),
        None => Box::new(std::io::stdout()),
    })
}

fn writer(
    rx: &Receiver<Record>,
    sink: Box<dyn Write + Send>,
    path: Option<&PathBuf>,
    format: Format,
    reopen: &AtomicBool,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(record) => {
                // Write everything queued, then flush once: prompt lines, batched writes.
                for r in std::iter::once(record).chain(rx.try_iter()) {
                    let line = match format {
                        Format::Json => json_line(&r),
                        _ => combined_line(&r),
                    };
                    let _ = out.write_all(line.as_bytes());
                }
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
        if reopen.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            match open(path) {
                Ok(sink) => out = BufWriter::with_capacity(64 * 1024, sink),
                Err(e) => tracing::error!(
                    "reopening the access log failed, writing on to the old file: {e}"
                ),
            }
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn parts(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil(i64::try_from(secs / 86_400).unwrap_or(0));
    let rem = secs % 86_400;
    (
        y,
        m,
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis(),
    )
}

/// `2026-11-24T09:30:01.123Z`
fn rfc3339(t: SystemTime) -> String {
    let (year, month, day, hour, min, sec, ms) = parts(t);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{min:02}:{sec:02}.{ms:03}Z")
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn quoted(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.replace('\\', "\\\\").replace('"', "\\\"")
    }
}

/// `client - - [24/Nov/2026:09:30:01 +0000] "GET /x HTTP/1.1" 200 1234 "referer" "agent"`
fn combined_line(r: &Record) -> String {
    let (year, month, day, hour, min, sec, _) = parts(r.time);
    format!(
        "{} - - [{day:02}/{}/{year:04}:{hour:02}:{min:02}:{sec:02} +0000] \"{} {} {}\" {} {} \"{}\" \"{}\"\n",
        r.client,
        MONTHS[usize::try_from(month)
            .unwrap_or(1)
            .saturating_sub(1)
            .min(11)],
        r.method,
        r.target,
        r.protocol,
        r.status,
        r.bytes.map_or_else(|| "-".to_owned(), |b| b.to_string()),
        quoted(&r.referer),
        quoted(&r.user_agent),
    )
}

fn json_line(r: &Record) -> String {
    let mut line = serde_json::json!({
        "time": rfc3339(r.time),
        "client": r.client.to_string(),
        "method": r.method,
        "host": r.host,
        "path": r.target,
        "protocol": r.protocol,
        "status": r.status,
        "bytes": r.bytes,
        "duration_ms": r.duration.as_secs_f64() * 1000.0,
        "route": r.route,
        "upstream": r.upstream,
        "upstream_server": r.upstream_server,
        "upstream_ms": r.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
        "request_id": r.request_id,
        "user_agent": r.user_agent,
        "referer": r.referer,
    })
    .to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            time: UNIX_EPOCH + Duration::from_millis(1_795_944_601_123),
            client: "192.0.2.1".parse().unwrap(),
            method: "GET".into(),
            host: "a.test".into(),
            target: "/x?y=1".into(),
            protocol: "HTTP/1.1",
            status: 200,
            bytes: Some(12),
            duration: Duration::from_micros(1500),
            route: Some("route[0]".into()),
            upstream: Some("app".into()),
            upstream_server: Some("10.0.0.1:80".into()),
            upstream_time: Some(Duration::from_millis(1)),
            request_id: "abc".into(),
            user_agent: "curl/8 \"x\"".into(),
            referer: String::new(),
        }
    }

    #[test]
    fn formats() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(record().time), "2026-11-29T09:30:01.123Z");
        let line = combined_line(&record());
        assert_eq!(
            line,
            "192.0.2.1 - - [29/Nov/2026:09:30:01 +0000] \"GET /x?y=1 HTTP/1.1\" 200 12 \"-\" \"curl/8 \\\"x\\\"\"\n"
        );
        let v: serde_json::Value = serde_json::from_str(&json_line(&record())).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["upstream_server"], "10.0.0.1:80");
    }
}
