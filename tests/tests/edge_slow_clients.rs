//! Slow clients and connection limits, on loopback: slow-header connections must not slow a
//! normal client down, the header deadline must close them although they keep sending, and a
//! client cannot open more connections than its limit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use integration_tests::edge::{EdgeAgent, RecordingUpstream, send_raw};

/// Number of slow-header connections held open at once.
const SLOW_CONNECTIONS: usize = 500;
/// Header deadline of the agent under test.
const HEADER_TIMEOUT_SECONDS: u64 = 10;
/// Requests the normal client sends while the slow connections are open.
const NORMAL_REQUESTS: usize = 200;

/// Sends one keep-alive request on `stream` and reads the response; returns its latency.
fn timed_request(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    stream
        .write_all(b"GET /normal HTTP/1.1\r\nhost: api.example\r\n\r\n")
        .expect("send a normal request");
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    // The recording upstream's body ends the response; read until it arrived.
    while !response.ends_with(integration_tests::edge::RECORDING_BODY.as_bytes()) {
        let count = stream.read(&mut buffer).expect("read the normal response");
        assert!(count > 0, "the proxy closed the normal client's connection");
        response.extend_from_slice(&buffer[..count]);
    }
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&response)
    );
    start.elapsed()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

/// Returns whether the server closed `stream`: a read returns end of stream or a reset.
fn is_closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set the read timeout");
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            // A response before the close, such as a 408, is fine: keep reading.
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_headers_do_not_slow_normal_client() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("slow-headers", upstream.addr, |config| {
        config.http.header_read_timeout_seconds = HEADER_TIMEOUT_SECONDS;
        // Every test connection comes from 127.0.0.1.
        config.http.max_connections_per_client = 2 * SLOW_CONNECTIONS as u32;
    });

    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW_CONNECTIONS)
        .map(|_| {
            let mut stream = TcpStream::connect(agent.addr).expect("open a slow connection");
            stream
                .write_all(b"GET /slow HTTP/1.1\r\nhost: api.example\r\n")
                .expect("send the start of a head");
            stream
        })
        .collect();

    // The normal client runs while the slow ones keep trickling header lines, each one well
    // inside any per-read timeout, so only a total deadline can stop them.
    let mut normal = TcpStream::connect(agent.addr).expect("connect the normal client");
    let mut latencies = Vec::with_capacity(NORMAL_REQUESTS);
    let mut trickle_index = 0;
    for _ in 0..NORMAL_REQUESTS {
        latencies.push(timed_request(&mut normal));
        for _ in 0..(SLOW_CONNECTIONS / 50) {
            let _ = slow[trickle_index % SLOW_CONNECTIONS].write_all(b"x-slow: 1\r\n");
            trickle_index += 1;
        }
    }
    let normal_done = opened.elapsed();
    latencies.sort();
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);
    println!(
        "{NORMAL_REQUESTS} normal requests beside {SLOW_CONNECTIONS} slow connections: \
         p50 {p50:?}, p99 {p99:?}, max {:?}, done {normal_done:?} after the slow ones opened",
        latencies[latencies.len() - 1]
    );
    assert!(
        normal_done < Duration::from_secs(HEADER_TIMEOUT_SECONDS),
        "the normal requests took {normal_done:?}, so the slow connections may have closed \
         before the measurement ended"
    );
    assert!(
        p99 < Duration::from_millis(100),
        "p99 {p99:?} is not under 100 ms"
    );

    // Keep trickling until past the deadline, then every slow connection must be closed.
    let deadline = Duration::from_secs(HEADER_TIMEOUT_SECONDS) + Duration::from_secs(1);
    while opened.elapsed() < deadline {
        for stream in slow.iter_mut() {
            let _ = stream.write_all(b"x-slow: 1\r\n");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Accepting 500 connections takes a moment on a loaded machine, and each deadline starts
    // at its accept: allow a few seconds of slack.
    let give_up = opened + deadline + Duration::from_secs(5);
    let mut still_open = slow.len();
    while still_open > 0 && Instant::now() < give_up {
        slow.retain_mut(|stream| !is_closed(stream));
        still_open = slow.len();
    }
    println!(
        "{still_open} of {SLOW_CONNECTIONS} slow connections open {:?} after they opened",
        opened.elapsed()
    );
    assert_eq!(
        still_open, 0,
        "slow connections outlived the header deadline"
    );
    assert!(
        upstream
            .requests()
            .iter()
            .all(|request| request.request_line != "GET /slow HTTP/1.1"),
        "a slow request reached the upstream"
    );
}

#[test]
fn connections_per_client_are_limited() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("connection-limit", upstream.addr, |config| {
        config.http.max_connections_per_client = 2;
    });

    let mut first = TcpStream::connect(agent.addr).expect("first connection");
    let mut second = TcpStream::connect(agent.addr).expect("second connection");
    first
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n")
        .expect("start a head");
    second
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n")
        .expect("start a head");
    // Give the agent time to accept and count both.
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(agent.addr).expect("third connection");

    assert!(is_closed(&mut third), "the third connection stayed open");
    assert!(!is_closed(&mut first), "the first connection was closed");
    drop(first);
    drop(second);
    std::thread::sleep(Duration::from_millis(200));
    let exchange = send_raw(
        agent.addr,
        b"GET /after HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(exchange.statuses(), [200], "{}", exchange.response);
}
