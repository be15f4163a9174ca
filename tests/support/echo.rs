//! A real upstream app for tests: answers every request with JSON describing what it received
//! (method, path, headers in order, body length, the body as text). `?set-cookie=NAME` makes it
//! try to set a cookie of that name, to check the gateway drops attempts on its own cookie.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Runs on its own thread and runtime (tests are async themselves); stops when dropped.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl EchoUpstream {
    pub fn start() -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                tokio::select! {
                    _ = stopped => {}
                    _ = serve(listener) => {}
                }
            });
        });
        EchoUpstream { addr, stop: Some(stop) }
    }
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let parsed = {
                    let mut headers = [httparse::EMPTY_HEADER; 96];
                    let mut req = httparse::Request::new(&mut headers);
                    match req.parse(&buf) {
                        Ok(httparse::Status::Complete(len)) => Some(describe(&req, len)),
                        Ok(httparse::Status::Partial) => None,
                        Err(_) => return,
                    }
                };
                let Some((len, body_len, method, path, headers)) = parsed else {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            buf.extend_from_slice(&chunk[..n]);
                            continue;
                        }
                    }
                };
                while buf.len() < len + body_len {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let received = String::from_utf8_lossy(&buf[len..len + body_len]).into_owned();
                let body = serde_json::json!({
                    "method": method,
                    "path": path,
                    "headers": headers,
                    "body_len": body_len,
                    "body": received,
                })
                .to_string();
                let mut extra = String::new();
                if let Some(name) = path.split("set-cookie=").nth(1) {
                    let name = name.split('&').next().unwrap_or("");
                    extra.push_str(&format!(
                        "set-cookie: {name}=from-upstream; Path=/\r\nset-cookie: app_pref=dark; Path=/\r\n"
                    ));
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n",
                    body.len()
                );
                buf.drain(..len + body_len);
                // One write: a head and body sent separately meet Nagle + delayed ACK.
                if stream.write_all(&[head.into_bytes(), body.into_bytes()].concat()).await.is_err() {
                    return;
                }
            }
        });
    }
}

type Described = (usize, usize, String, String, Vec<serde_json::Value>);

fn describe(req: &httparse::Request, len: usize) -> Described {
    let body_len = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let headers = req
        .headers
        .iter()
        .map(|h| serde_json::json!([h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value)]))
        .collect();
    (len, body_len, req.method.unwrap_or("").to_string(), req.path.unwrap_or("").to_string(), headers)
}

/// All values of header `name` the upstream saw.
pub fn seen(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .map(|hs| hs.iter().filter(|h| h[0] == name).filter_map(|h| h[1].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}
