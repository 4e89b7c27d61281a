use super::*;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: &str = "# TYPE x gauge\nx 1\n# EOF\n";

fn start(opts: HttpOptions, body: Option<&'static str>) -> MetricsServer {
    let addr = parse_listen_addr("127.0.0.1:0").unwrap();
    serve(addr, opts, move || async move { body.map(str::to_string) }).unwrap()
}

/// Sends `req`, reads to the end: (status, whole response text).
async fn exchange(addr: SocketAddr, req: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

#[tokio::test]
async fn a_scrape_gets_the_rendered_text_and_other_requests_get_their_errors() {
    let srv = start(HttpOptions::default(), Some(BODY));
    let addr = srv.local_addr();
    assert_ne!(addr.port(), 0);
    let (code, text) = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains(&format!("Content-Type: {OPENMETRICS_CONTENT_TYPE}\r\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("Content-Length: {}\r\n", BODY.len())),
        "{text}"
    );
    assert!(text.ends_with(&format!("\r\n\r\n{BODY}")), "{text}");
    let (code, _) = exchange(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
    assert_eq!(code, 200);
    let (code, text) = exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(code, 404, "{text}");
    let (code, _) = exchange(addr, b"GET /metricsx HTTP/1.1\r\n\r\n").await;
    assert_eq!(code, 404);
    let (code, text) = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(code, 405, "{text}");
    assert!(text.contains("Allow: GET\r\n"), "{text}");
    let (code, _) = exchange(addr, b"DELETE / HTTP/1.1\r\n\r\n").await;
    assert_eq!(code, 405);
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"hello\r\n\r\n",
        b"GET /metrics\r\n\r\n",
        b"GET /metrics SPDY/3\r\n\r\n",
        b"get /metrics HTTP/1.1\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
    ] {
        let (code, text) = exchange(addr, garbage).await;
        assert_eq!(code, 400, "{garbage:?}: {text}");
    }
}

#[tokio::test]
async fn an_oversized_head_is_refused_without_reading_it_all() {
    let opts = HttpOptions {
        max_head: 1024,
        ..HttpOptions::default()
    };
    let srv = start(opts, Some(BODY));
    let mut s = TcpStream::connect(srv.local_addr()).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    let header = format!("X-Junk: {}\r\n", "a".repeat(200));
    // Far more than the limit; the server answers (and closes) once past it,
    // so a later write may fail: that is the point.
    for _ in 0..100 {
        if s.write_all(header.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
}

#[tokio::test]
async fn a_slow_client_is_cut_off_after_the_read_timeout() {
    let opts = HttpOptions {
        read_timeout: Duration::from_millis(300),
        ..HttpOptions::default()
    };
    let srv = start(opts, Some(BODY));
    let t0 = Instant::now();
    let mut s = TcpStream::connect(srv.local_addr()).await.unwrap();
    // A byte every 100 ms never completes within the limit (slowloris).
    let drip = async {
        for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n" {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drip).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    // Cut off at the limit (the drip alone would take 3.3 s).
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // A client that connects and sends nothing is cut off too, and the
    // server still answers others meanwhile.
    let idle = TcpStream::connect(srv.local_addr()).await.unwrap();
    let (code, _) = exchange(srv.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(code, 200);
    drop(idle);
}

#[tokio::test]
async fn nothing_to_render_is_503() {
    let srv = start(HttpOptions::default(), None);
    let (code, _) = exchange(srv.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(code, 503);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_unanswered() {
    let opts = HttpOptions {
        max_connections: 1,
        read_timeout: Duration::from_secs(2),
        ..HttpOptions::default()
    };
    let srv = start(opts, Some(BODY));
    let _holder = TcpStream::connect(srv.local_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = TcpStream::connect(srv.local_addr()).await.unwrap();
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}

#[test]
fn listen_addresses_parse_or_say_what_to_give() {
    assert_eq!(
        parse_listen_addr("127.0.0.1:9464").unwrap(),
        "127.0.0.1:9464".parse().unwrap()
    );
    assert_eq!(parse_listen_addr("[::1]:0").unwrap().port(), 0);
    assert_eq!(parse_listen_addr("localhost:9464").unwrap().port(), 9464);
    for bad in ["9464", "nonsense", "127.0.0.1:99999", "", "127.0.0.1:port"] {
        let e = parse_listen_addr(bad).unwrap_err().to_string();
        assert!(
            e.contains("--metrics-listen") && e.contains("IP:PORT"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let first = start(HttpOptions::default(), Some(BODY));
        let e = serve(first.local_addr(), HttpOptions::default(), || async {
            None
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("cannot listen") && e.contains(&first.local_addr().to_string()),
            "{e}"
        );
    });
}

#[test]
fn request_lines_are_classified() {
    assert_eq!(
        classify(b"GET /metrics HTTP/1.1\r\nHost: a"),
        Request::Metrics
    );
    assert_eq!(classify(b"GET /x HTTP/1.1"), Request::NotFound);
    assert_eq!(
        classify(b"GET /metrics HTTP/1.1\nHost: a"),
        Request::Metrics
    );
    assert_eq!(
        classify(b"HEAD /metrics HTTP/1.1"),
        Request::MethodNotAllowed
    );
    assert_eq!(classify(b"GET  /metrics HTTP/1.1"), Request::Bad);
    assert_eq!(classify(b"\xff\xfe"), Request::Bad);
}
