//! The built-in "whoami" demo upstream: a tiny HTTP/1.1 app on a free loopback port that shows
//! the request it received, identity headers included. It lets the dev config run alone and
//! shows what an app behind the gateway sees.

use std::net::SocketAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 64 * 1024;

pub struct Whoami {
    listener: Mutex<Option<std::net::TcpListener>>,
    pub addr: SocketAddr,
}

impl Whoami {
    /// Binds 127.0.0.1 on a free port now, so routes can point at it before the server runs.
    pub fn bind() -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(Whoami { listener: Mutex::new(Some(listener)), addr })
    }
}

#[async_trait]
impl BackgroundService for Whoami {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self.listener.lock().ok().and_then(|mut l| l.take());
        let Some(listener) = taken.and_then(|l| TcpListener::from_std(l).ok()) else {
            tracing::error!("whoami upstream could not start");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve_connection(stream));
                    }
                }
            }
        }
    }
}

async fn serve_connection(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let (response, keep_alive, consumed) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let body_len = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() < len + body_len {
                        break_read(&mut stream, &mut buf).await;
                        if buf.is_empty() {
                            return;
                        }
                        continue;
                    }
                    let close = req
                        .headers
                        .iter()
                        .any(|h| h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close"));
                    break (render(&req), !close, len + body_len);
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                    if !break_read(&mut stream, &mut buf).await {
                        return;
                    }
                }
                _ => return,
            }
        };
        buf.drain(..consumed);
        if stream.write_all(&response).await.is_err() || !keep_alive {
            return;
        }
    }
}

/// Reads more bytes; false at EOF or error.
async fn break_read(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn render(req: &httparse::Request) -> Vec<u8> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let wants_json = header("accept").is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
    let (ctype, body) = if wants_json {
        let map: serde_json::Map<String, serde_json::Value> =
            headers.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let v = serde_json::json!({
            "app": "whoami",
            "method": req.method.unwrap_or(""),
            "path": req.path.unwrap_or(""),
            "headers": map,
        });
        ("application/json", v.to_string())
    } else {
        ("text/html; charset=utf-8", html(req, &headers, header("x-dalea-email")))
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\ncache-control: no-store\r\n\r\n",
        body.len()
    );
    [head.into_bytes(), body.into_bytes()].concat()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn html(req: &httparse::Request, headers: &[(String, String)], email: Option<String>) -> String {
    let rows: String = headers
        .iter()
        .map(|(k, v)| {
            let mark = if k.starts_with("x-dalea-") { " class=\"id\"" } else { "" };
            format!("<tr{mark}><th>{}</th><td>{}</td></tr>", escape(k), escape(v))
        })
        .collect();
    let who = email.map_or("nobody (public route)".to_string(), |e| escape(&e));
    format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>whoami</title>\
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:860px;margin:32px auto;padding:0 20px;color:#1c2430}}\
table{{border-collapse:collapse;width:100%}}th,td{{text-align:left;padding:4px 10px;border-bottom:1px solid #e3e7ed;vertical-align:top;font-size:14px}}\
th{{white-space:nowrap;color:#5b6675;font-weight:500}}tr.id th,tr.id td{{background:#eef2fb;color:#1c2430}}</style>\
<h1>whoami</h1><p>The demo app behind the gateway. Signed in as <strong>{who}</strong>.</p>\
<p><a href=\"/.dalea/settings/security/sessions\">Settings → Security → Sessions</a></p>\
<p><code>{} {}</code></p><table>{rows}</table></html>",
        escape(req.method.unwrap_or("")),
        escape(req.path.unwrap_or("")),
    )
}
