//! A fault-injecting HTTP/1.1 proxy on loopback, in front of a real service (moto, a registry,
//! S3): it passes requests through, or for a while answers them itself (429/503 throttling, any
//! canned error), refuses connections, drops them without an answer, passes them and loses the
//! answer, resets them in the middle of a body, stalls them, or cuts an answer's body short, so
//! that tests see how the agent behaves when a service is slow, throttles or is down, then comes
//! back. [`Stats::injected`] counts the faults it injected.
//!
//! ```no_run
//! use std::time::Duration;
//! use buildagent_tests::fault_proxy::{Fault, FaultProxy, Until};
//!
//! // Throttle for 2 s, refuse connections for 3 s, then pass everything through.
//! let proxy = FaultProxy::start(
//!     "127.0.0.1:45000",
//!     vec![
//!         (Fault::aws_json_error(400, "ThrottlingException", "Rate exceeded"), Until::Elapsed(Duration::from_secs(2))),
//!         (Fault::Refuse, Until::Elapsed(Duration::from_secs(3))),
//!     ],
//! );
//! let endpoint = proxy.url(); // http://127.0.0.1:<port>, for AWS_ENDPOINT_URL_*
//! // ... run the agent against `endpoint` ...
//! let stats = proxy.stats();
//! assert!(stats.answered > 0 && stats.passed > 0);
//! ```
//!
//! How it works: one thread accepts connections (non-blocking, polled every 10 ms so that it can
//! close and reopen its socket), one thread per connection reads each request's head, decides by
//! the phase current at that moment, reads the body (`Content-Length` or chunked; half of it
//! for a [`Fault::Reset`] of a request with a body), and for [`Fault::Pass`] sends it to the upstream on a fresh connection with `Connection: close`,
//! relaying the answer read to its end. Phases run in order from [`FaultProxy::start`], each
//! until its [`Until`]; after the last one every request passes.
//!
//! Bounded and self-stopping: everything ends when the [`FaultProxy`] is dropped, or after
//! [`MAX_LIFETIME`] whatever happens; connections idle for 60 s are closed; request heads are
//! limited to 64 KiB. Loopback only: it listens on 127.0.0.1 and refuses a non-loopback
//! upstream.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The proxy stops by itself this long after it started, even if it is never dropped.
pub const MAX_LIFETIME: Duration = Duration::from_secs(15 * 60);

const IDLE: Duration = Duration::from_secs(60);
const MAX_HEAD: usize = 64 * 1024;

/// What the proxy does with a request (or a connection) during a phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Pass requests to the upstream unchanged.
    Pass,
    /// Answer every request with this status, headers and body, without passing it on.
    Answer {
        /// The status code (429, 503...).
        status: u16,
        /// Extra header fields (`Content-Length` and `Connection` are added).
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
    },
    /// Refuse connections: the listening socket is closed (connecting fails with
    /// `ECONNREFUSED`), and open connections are closed at their next request.
    Refuse,
    /// Read each request, then close the connection without an answer (the client sees the
    /// connection end in the middle of an exchange).
    Drop,
    /// Reset the connection in the middle of a body: a request with a body (an upload) is read
    /// half-way, then the connection is reset; a request without one (a download) is passed on
    /// and half of the answer's body is relayed before the reset (half of its head when it has
    /// no body).
    Reset,
    /// Read each request, then send nothing for this long (longer than the client's timeout),
    /// then close the connection.
    Stall(Duration),
    /// Pass the request on and relay the answer's head (with its full `Content-Length`) and
    /// half of its body, then close the connection cleanly: a body cut short (an answer without
    /// a body is cut in the middle of its head).
    Truncate,
    /// Pass each request to the upstream, then close the connection without its answer: the
    /// request took effect, and the client cannot know it (it will send it again).
    LoseAnswer,
}

impl Fault {
    /// An answer with `status` and an empty body (`429 Too Many Requests`, `503`...).
    pub fn status(status: u16) -> Fault {
        Fault::Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `429 Too Many Requests` with `Retry-After: seconds`.
    pub fn too_many_requests(seconds: u64) -> Fault {
        Fault::Answer {
            status: 429,
            headers: vec![("Retry-After".into(), seconds.to_string())],
            body: Vec::new(),
        }
    }

    /// An S3 (REST-XML) error: `status` with `<Error><Code>code</Code>...`, as S3 sends
    /// `SlowDown` (503) or `InternalError` (500).
    pub fn s3_error(status: u16, code: &str) -> Fault {
        Fault::Answer {
            status,
            headers: vec![("Content-Type".into(), "application/xml".into())],
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                 <Message>injected by the fault proxy</Message><RequestId>fault-proxy</RequestId></Error>"
            )
            .into_bytes(),
        }
    }

    /// A registry (distribution API) error: `status` with `{"errors":[{"code":...}]}`.
    pub fn registry_error(status: u16, code: &str) -> Fault {
        Fault::Answer {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: format!(
                r#"{{"errors":[{{"code":"{code}","message":"injected by the fault proxy"}}]}}"#
            )
            .into_bytes(),
        }
    }

    /// An AWS JSON-protocol error (CloudWatch Logs, ECR, Secrets Manager...): `status` with
    /// `{"__type": kind, "message": message}`, as the services send `ThrottlingException` (400)
    /// or `ServiceUnavailableException` (503).
    pub fn aws_json_error(status: u16, kind: &str, message: &str) -> Fault {
        Fault::aws_json(
            status,
            &format!(r#"{{"__type":"{kind}","message":"{message}"}}"#),
        )
    }

    /// An AWS JSON-protocol answer with this exact body (for errors with extra fields, such as
    /// `InvalidSequenceTokenException`'s `expectedSequenceToken`).
    pub fn aws_json(status: u16, body: &str) -> Fault {
        let kind = body
            .split("\"__type\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("")
            .to_string();
        Fault::Answer {
            status,
            headers: vec![
                ("Content-Type".into(), "application/x-amz-json-1.1".into()),
                ("x-amzn-ErrorType".into(), kind),
                ("x-amzn-RequestId".into(), "fault-proxy".into()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }
}

/// The phases of a schedule, run in order.
pub type Phases = Vec<(Fault, Until)>;

/// How long a phase lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// This long after the phase began.
    Elapsed(Duration),
    /// Until this many requests were handled in it (not for [`Fault::Refuse`], which sees
    /// none: it then ends at once).
    Requests(u64),
}

/// What the proxy did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests passed to the upstream and answered by it.
    pub passed: u64,
    /// Requests answered by the proxy ([`Fault::Answer`]).
    pub answered: u64,
    /// Requests (or connections) dropped without an answer ([`Fault::Drop`], [`Fault::Refuse`]
    /// on an open connection), and requests the upstream could not be reached for.
    pub dropped: u64,
    /// Times the listening socket was closed for a [`Fault::Refuse`] phase.
    pub refusals: u64,
    /// Connections reset in the middle of a body ([`Fault::Reset`]).
    pub resets: u64,
    /// Requests left without an answer for a [`Fault::Stall`]'s time.
    pub stalls: u64,
    /// Answers whose body was cut short ([`Fault::Truncate`]).
    pub truncations: u64,
    /// Requests passed to the upstream and answered by it, whose answer was not relayed
    /// ([`Fault::LoseAnswer`]).
    pub lost_answers: u64,
}

impl Stats {
    /// Every fault injected: answers, drops, refusals, resets, stalls, truncations and lost
    /// answers.
    pub fn injected(&self) -> u64 {
        self.answered
            + self.dropped
            + self.refusals
            + self.resets
            + self.stalls
            + self.truncations
            + self.lost_answers
    }
}

struct Schedule {
    phases: Vec<(Fault, Until)>,
    index: usize,
    began: Instant,
    requests: u64,
    /// When the last phase ended.
    ended: Option<std::time::SystemTime>,
}

impl Schedule {
    /// The fault now, moving through finished phases.
    fn current(&mut self) -> Fault {
        while let Some((fault, until)) = self.phases.get(self.index) {
            let over = match until {
                Until::Elapsed(d) => self.began.elapsed() >= *d,
                Until::Requests(n) => *fault == Fault::Refuse || self.requests >= *n,
            };
            if !over {
                return fault.clone();
            }
            self.index += 1;
            self.began = Instant::now();
            self.requests = 0;
        }
        self.ended.get_or_insert_with(std::time::SystemTime::now);
        Fault::Pass
    }
}

struct Shared {
    upstream: SocketAddr,
    /// Each schedule with the text a request's head must hold for it (`None`: any request); a
    /// request goes to the first schedule it matches.
    schedules: Vec<(Option<String>, Mutex<Schedule>)>,
    stats: Mutex<Stats>,
    stop: AtomicBool,
    started: Instant,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.started.elapsed() >= MAX_LIFETIME
    }

    /// The fault for one request with this head (counted in the phase of the first schedule
    /// it matches; [`Fault::Pass`] when it matches none).
    fn request(&self, head: &str) -> Fault {
        let head = head.to_ascii_lowercase();
        let Some((_, schedule)) = self
            .schedules
            .iter()
            .find(|(only, _)| only.as_ref().is_none_or(|o| head.contains(o.as_str())))
        else {
            return Fault::Pass;
        };
        let mut schedule = schedule.lock().unwrap_or_else(|p| p.into_inner());
        let fault = schedule.current();
        schedule.requests += 1;
        fault
    }

    /// Runs `f` on every schedule.
    fn each<T>(&self, mut f: impl FnMut(&mut Schedule) -> T) -> Vec<T> {
        self.schedules
            .iter()
            .map(|(_, s)| f(&mut s.lock().unwrap_or_else(|p| p.into_inner())))
            .collect()
    }

    fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A running proxy (see the module docs); stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (a free port) in front of `upstream` (`host:port` on
    /// loopback, or an `http://host:port` URL), running `phases` in order, then passing all.
    pub fn start(upstream: &str, phases: Vec<(Fault, Until)>) -> FaultProxy {
        FaultProxy::start_matching(upstream, None, phases)
    }

    /// As [`FaultProxy::start`], but the phases see only the requests whose head contains
    /// `only` (without regard to case), such as `X-Amz-Target: Logs_20140328.PutLogEvents`;
    /// every other request passes and does not count. ([`Fault::Refuse`] still closes the
    /// socket for all.)
    pub fn start_matching(
        upstream: &str,
        only: Option<&str>,
        phases: Vec<(Fault, Until)>,
    ) -> FaultProxy {
        FaultProxy::start_schedules(upstream, vec![(only, phases)])
    }

    /// Several independent schedules: each request goes to the first whose text its head
    /// contains (without regard to case; `None` matches every request), and runs in that
    /// schedule's phases; a request that matches none passes and does not count. Such as
    /// `PUT /v2/app/manifests/` for a registry's manifest uploads and `PATCH /v2/` for its blob
    /// uploads, each with faults of its own.
    pub fn start_schedules(upstream: &str, schedules: Vec<(Option<&str>, Phases)>) -> FaultProxy {
        let authority = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .split('/')
            .next()
            .unwrap_or(upstream);
        let upstream = authority
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .unwrap_or_else(|| panic!("fault proxy: cannot resolve the upstream {authority}"));
        assert!(
            upstream.ip().is_loopback(),
            "fault proxy: the upstream {upstream} is not on loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy: a loopback port");
        let addr = listener.local_addr().expect("fault proxy: its address");
        let shared = Arc::new(Shared {
            upstream,
            schedules: schedules
                .into_iter()
                .map(|(only, phases)| {
                    let schedule = Schedule {
                        phases,
                        index: 0,
                        began: Instant::now(),
                        requests: 0,
                        ended: None,
                    };
                    (only.map(str::to_ascii_lowercase), Mutex::new(schedule))
                })
                .collect(),
            stats: Mutex::default(),
            stop: AtomicBool::new(false),
            started: Instant::now(),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("fault-proxy".into())
                .spawn(move || accept_loop(listener, addr, shared))
                .expect("fault proxy: a thread")
        };
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it did so far.
    pub fn stats(&self) -> Stats {
        *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the last phase ended (wall-clock time, as events carry), if it has (of every
    /// schedule: the latest end).
    pub fn faults_ended_at(&self) -> Option<std::time::SystemTime> {
        let ends = self.shared.each(|schedule| {
            schedule.current();
            schedule.ended
        });
        ends.iter()
            .copied()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    /// Whether every phase of every schedule is over (requests pass from now on).
    pub fn faults_over(&self) -> bool {
        self.shared
            .each(|schedule| {
                schedule.current() == Fault::Pass && schedule.index >= schedule.phases.len()
            })
            .iter()
            .all(|over| *over)
    }

    /// Ends every phase now: from here on every request passes (the faults "stop", for the
    /// run that must then succeed).
    pub fn stop_faults(&self) {
        self.shared.each(|schedule| {
            schedule.index = schedule.phases.len();
            schedule.current();
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    let mut listener = Some(listener);
    while !shared.stopped() {
        let refusing = shared
            .each(|schedule| schedule.current() == Fault::Refuse)
            .contains(&true);
        match (&listener, refusing) {
            (Some(_), true) => {
                // Closing the socket is what makes connecting fail with ECONNREFUSED.
                listener = None;
                shared.count(|s| s.refusals += 1);
            }
            (None, false) => {
                // std sets SO_REUSEADDR: the same port can be bound again at once.
                listener = TcpListener::bind(addr).ok();
            }
            _ => {}
        }
        let Some(l) = &listener else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = l.set_nonblocking(true);
        match l.accept() {
            Ok((client, _)) => {
                let shared = shared.clone();
                let _ = thread::Builder::new()
                    .name("fault-proxy-conn".into())
                    .spawn(move || {
                        let _ = serve(client, &shared);
                    });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// One request read whole.
struct Request {
    /// The head without the final empty line, with `Connection: close`, without `Expect`.
    head: Vec<u8>,
    body: Vec<u8>,
    /// The client asked for `Connection: close`.
    close: bool,
}

/// What a [`Fault::Pass`]-like exchange relays of the answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Relay {
    Whole,
    /// Half of the body, then a reset.
    HalfThenReset,
    /// Half of the body, then a clean close.
    HalfThenClose,
}

fn serve(client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(IDLE))?;
    client.set_write_timeout(Some(IDLE))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    while !shared.stopped() {
        let Some(lines) = read_head(&mut reader)? else {
            return Ok(());
        };
        let fault = shared.request(&lines.join("\r\n"));
        if header(&lines, "Expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        if fault == Fault::Reset && has_body(&lines) {
            // Half of the upload, then a reset: the rest stays unread.
            let length: usize = header(&lines, "Content-Length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(2);
            let mut half = vec![0; length / 2];
            let _ = reader.read_exact(&mut half);
            shared.count(|s| s.resets += 1);
            reset(&client);
            return Ok(());
        }
        let request = complete_request(&mut reader, lines)?;
        let relay = match fault {
            Fault::Pass => Relay::Whole,
            Fault::Reset => Relay::HalfThenReset,
            Fault::Truncate => Relay::HalfThenClose,
            Fault::Answer {
                status,
                headers,
                body,
            } => {
                shared.count(|s| s.answered += 1);
                let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
                for (name, value) in &headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                client.write_all(head.as_bytes())?;
                client.write_all(&body)?;
                if request.close {
                    return Ok(());
                }
                continue;
            }
            Fault::Stall(duration) => {
                shared.count(|s| s.stalls += 1);
                let until = Instant::now() + duration;
                while Instant::now() < until && !shared.stopped() {
                    thread::sleep(Duration::from_millis(10));
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            Fault::LoseAnswer => {
                if forward(&request, shared.upstream).is_ok() {
                    shared.count(|s| s.lost_answers += 1);
                } else {
                    shared.count(|s| s.dropped += 1);
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            Fault::Drop | Fault::Refuse => {
                shared.count(|s| s.dropped += 1);
                let _ = client.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
        };
        let (response, body_at, delimited) = match forward(&request, shared.upstream) {
            Ok(answer) => answer,
            Err(_) => {
                shared.count(|s| s.dropped += 1);
                return Ok(());
            }
        };
        let body_len = response.len() - body_at;
        if relay == Relay::Whole {
            shared.count(|s| s.passed += 1);
            client.write_all(&response)?;
            if !delimited || request.close {
                return Ok(());
            }
            continue;
        }
        // Half of the body, then the cut; an answer without a body is cut in its head.
        let cut = if body_len < 2 {
            body_at / 2
        } else {
            body_at + body_len / 2
        };
        let _ = client.write_all(&response[..cut]);
        let _ = client.flush();
        if relay == Relay::HalfThenReset {
            shared.count(|s| s.resets += 1);
            // Let the client read what was sent before the reset discards it.
            thread::sleep(Duration::from_millis(50));
            reset(&client);
        } else {
            shared.count(|s| s.truncations += 1);
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
        return Ok(());
    }
    Ok(())
}

/// Whether a request head announces a body.
fn has_body(lines: &[String]) -> bool {
    header(lines, "Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        || header(lines, "Content-Length").is_some_and(|v| v.trim() != "0")
}

/// Closes the connection with a reset (`SO_LINGER` 0): the client's next read fails with
/// `ECONNRESET`, not a clean end.
fn reset(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        #[repr(C)]
        struct Linger {
            on: i32,
            seconds: i32,
        }
        extern "C" {
            fn setsockopt(fd: i32, level: i32, name: i32, value: *const Linger, len: u32) -> i32;
        }
        const SOL_SOCKET: i32 = 1;
        const SO_LINGER: i32 = 13;
        let linger = Linger { on: 1, seconds: 0 };
        // SAFETY: a valid descriptor of a socket this function borrows, and a `struct linger`
        // of the size given.
        unsafe {
            setsockopt(
                stream.as_raw_fd(),
                SOL_SOCKET,
                SO_LINGER,
                &linger,
                std::mem::size_of::<Linger>() as u32,
            );
        }
    }
    // Closing the clone ends nothing while the reader's copy is open: shut down both ways.
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Fault",
    }
}

/// Reads the head lines up to the empty line (`None` at a clean end of the connection).
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    let mut size = 0;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a cut head"))
            };
        }
        size += n;
        if size > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a head over 64 KiB",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // A stray empty line between requests.
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines.iter().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A body delimited by `Content-Length`, chunked encoding (kept encoded), or nothing.
fn read_body(reader: &mut impl BufRead, lines: &[String]) -> io::Result<Vec<u8>> {
    let chunked = header(lines, "Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            body.extend_from_slice(size_line.as_bytes());
            let size =
                usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a bad chunk size"))?;
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line)?;
                    body.extend_from_slice(line.as_bytes());
                    if line.trim().is_empty() {
                        return Ok(body);
                    }
                }
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
        }
    }
    let length: usize = header(lines, "Content-Length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// The rest of a request whose head was read: its body, and the head as sent upstream.
fn complete_request(reader: &mut BufReader<TcpStream>, lines: Vec<String>) -> io::Result<Request> {
    let body = read_body(reader, &lines)?;
    let close = header(&lines, "Connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let mut head = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let name = line.split(':').next().unwrap_or("").trim();
        if i > 0
            && (name.eq_ignore_ascii_case("Connection")
                || name.eq_ignore_ascii_case("Expect")
                || name.eq_ignore_ascii_case("Keep-Alive"))
        {
            continue;
        }
        head.extend_from_slice(line.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n");
    Ok(Request { head, body, close })
}

/// Sends the request on a fresh upstream connection and reads the answer to its end: the
/// bytes, where its body starts in them, and whether they say where they end (a length or
/// chunks; else only the end of the connection does, and the client's must be closed too).
fn forward(request: &Request, upstream: SocketAddr) -> io::Result<(Vec<u8>, usize, bool)> {
    let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    up.set_read_timeout(Some(IDLE))?;
    up.set_write_timeout(Some(IDLE))?;
    up.write_all(&request.head)?;
    up.write_all(b"\r\n")?;
    up.write_all(&request.body)?;
    let mut reader = BufReader::new(up);
    let lines = read_head(&mut reader)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"))?;
    let mut response = Vec::new();
    for line in &lines {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("Connection") || name.eq_ignore_ascii_case("Keep-Alive") {
            continue;
        }
        response.extend_from_slice(line.as_bytes());
        response.extend_from_slice(b"\r\n");
    }
    response.extend_from_slice(b"\r\n");
    let body_at = response.len();
    let head_request = request.head.starts_with(b"HEAD ");
    let status: u16 = lines[0]
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let no_body = head_request || status == 204 || status == 304 || (100..200).contains(&status);
    let delimited = no_body
        || header(&lines, "Content-Length").is_some()
        || header(&lines, "Transfer-Encoding").is_some_and(|v| v.contains("chunked"));
    if no_body {
        return Ok((response, body_at, true));
    }
    if delimited {
        response.extend_from_slice(&read_body(&mut reader, &lines)?);
    } else {
        reader.read_to_end(&mut response)?;
    }
    Ok((response, body_at, delimited))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP server answering `body` to every request, for the proxy's own tests.
    fn server(body: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().take(50) {
                let Ok(stream) = stream else { continue };
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut stream = stream;
                    while let Ok(Some(lines)) = read_head(&mut reader) {
                        let _ = read_body(&mut reader, &lines);
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                    }
                });
            }
        });
        addr
    }

    fn get(addr: SocketAddr) -> io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn phases_answer_refuse_drop_then_pass() {
        let upstream = server("upstream");
        let proxy = FaultProxy::start(
            &upstream.to_string(),
            vec![
                (Fault::status(503), Until::Requests(2)),
                (Fault::Drop, Until::Requests(1)),
                (Fault::LoseAnswer, Until::Requests(1)),
                (Fault::Refuse, Until::Elapsed(Duration::from_millis(300))),
            ],
        );
        let addr = proxy.addr();
        assert!(get(addr).unwrap().starts_with("HTTP/1.1 503 "));
        assert!(get(addr).unwrap().starts_with("HTTP/1.1 503 "));
        // Dropped: the connection ends without an answer.
        assert_eq!(get(addr).unwrap_or_default(), "");
        // Passed, but the answer is lost on the way back.
        assert_eq!(get(addr).unwrap_or_default(), "");
        // Now refusing, for 300 ms from the first look at the schedule.
        let refused_until = Instant::now() + Duration::from_secs(5);
        let mut saw_refusal = false;
        loop {
            match get(addr) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => saw_refusal = true,
                Ok(answer) if answer.ends_with("upstream") => break,
                _ => {}
            }
            assert!(Instant::now() < refused_until, "the proxy never passed");
            thread::sleep(Duration::from_millis(20));
        }
        assert!(saw_refusal);
        assert!(proxy.faults_over());
        let stats = proxy.stats();
        assert_eq!(
            (stats.answered, stats.refusals, stats.lost_answers),
            (2, 1, 1)
        );
        assert!(stats.dropped >= 1 && stats.passed >= 1, "{stats:?}");
    }

    /// Sends `request` on a fresh connection and reads until the end or an error: the bytes,
    /// and the error's kind if it ended in one.
    fn exchange(addr: SocketAddr, request: &[u8]) -> (Vec<u8>, Option<io::ErrorKind>) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if let Err(e) = s.write_all(request) {
            return (Vec::new(), Some(e.kind()));
        }
        let mut out = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Some(e.kind())),
            }
        }
    }

    #[test]
    fn resets_stalls_and_cut_bodies_are_injected_per_schedule_and_counted() {
        const BODY: &str = "0123456789abcdef0123456789abcdef";
        let upstream = server(BODY);
        let proxy = FaultProxy::start_schedules(
            &upstream.to_string(),
            vec![
                (
                    Some("GET /download"),
                    vec![
                        (Fault::Truncate, Until::Requests(1)),
                        (Fault::Reset, Until::Requests(1)),
                    ],
                ),
                (
                    Some("POST /upload"),
                    vec![(Fault::Reset, Until::Requests(1))],
                ),
                (
                    None,
                    vec![(Fault::Stall(Duration::from_millis(200)), Until::Requests(1))],
                ),
            ],
        );
        let addr = proxy.addr();
        let get = b"GET /download HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        // Cut short: the whole head (which promises 32 bytes), 16 of them, a clean end.
        let (cut, error) = exchange(addr, get);
        let text = String::from_utf8_lossy(&cut).into_owned();
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        assert!(text.ends_with("\r\n\r\n0123456789abcdef"), "{text}");
        assert_eq!(error, None);
        // Reset after half of the body: never the whole body.
        let (reset, _) = exchange(addr, get);
        assert!(!String::from_utf8_lossy(&reset).ends_with(BODY));
        // An upload reset half-way: no answer.
        let mut upload =
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n".to_vec();
        upload.extend(std::iter::repeat_n(b'u', 200_000));
        let (answer, _) = exchange(addr, &upload);
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
        // Any other request: stalled, then closed without an answer.
        let (stalled, _) = exchange(
            addr,
            b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(stalled.is_empty());
        assert!(proxy.faults_over());
        let stats = proxy.stats();
        assert_eq!(
            (
                stats.truncations,
                stats.resets,
                stats.stalls,
                stats.injected()
            ),
            (1, 2, 1, 4),
            "{stats:?}"
        );
        // Then everything passes whole.
        let (whole, _) = exchange(addr, get);
        assert!(String::from_utf8_lossy(&whole).ends_with(BODY));
        // And `stop_faults` ends phases that have not run.
        let endless = FaultProxy::start(
            &upstream.to_string(),
            vec![(Fault::status(503), Until::Elapsed(Duration::from_secs(600)))],
        );
        assert!(!endless.faults_over());
        endless.stop_faults();
        assert!(endless.faults_over());
        let (passed, _) = exchange(endless.addr(), get);
        assert!(String::from_utf8_lossy(&passed).ends_with(BODY));
    }
}
