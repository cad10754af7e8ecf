//! Pilot jobs with remote submission: the compute nodes cannot reach the driver (a laptop
//! behind the login node), so a relay on the login node takes the pilots' connections and
//! carries them over the executor's SSH connection, multiplexed on the standard input and
//! output of one long-lived command (`__pitch-worker relay BIND`, the staged worker binary).
//! No port is forwarded: sshd's `AllowTcpForwarding` and `GatewayPorts` do not matter, and
//! nothing but the relay listens on the login node.
//!
//! The relay ([`serve`]) binds `BIND` (the `pilot_address` setting, default the login node's
//! host name, any free port), prints [`MARKER`] and the address pilots connect to on its own
//! line, then speaks frames: `kind` (one byte: [`OPEN`], [`DATA`], [`CLOSE`]), the connection
//! number (u32, big-endian), the payload's length (u32) and the payload (data only). It opens
//! a connection number for each pilot that connects; either side closes it. The relay exits
//! when its standard input ends: the SSH channel closed (the executor ended, the driver or its
//! connection died).
//!
//! The driver's side ([`Relay`]) reads the frames from the SSH command, connects each new
//! connection to the pilots' listener on this machine's loopback and copies both ways; the
//! secret is checked end to end by the driver, as without a relay (the relay never sees it).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The line the relay prints before its address, and then frames.
pub(crate) const MARKER: &str = "PITCH-RELAY ";
/// A pilot connected (relay to driver).
const OPEN: u8 = b'O';
/// Bytes of a connection.
const DATA: u8 = b'D';
/// A connection ended (either way).
const CLOSE: u8 = b'C';
/// The most bytes one frame carries.
const CHUNK: usize = 64 * 1024;
/// How long the relay may take to say its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes one frame.
fn write_frame(w: &mut dyn Write, kind: u8, conn: u32, data: &[u8]) -> std::io::Result<()> {
    let mut head = [0u8; 9];
    head[0] = kind;
    head[1..5].copy_from_slice(&conn.to_be_bytes());
    head[5..9].copy_from_slice(&(data.len() as u32).to_be_bytes());
    w.write_all(&head)?;
    w.write_all(data)?;
    w.flush()
}

/// Reads one frame: `None` at the end of the stream.
fn read_frame(r: &mut dyn Read) -> std::io::Result<Option<(u8, u32, Vec<u8>)>> {
    let mut head = [0u8; 9];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let conn = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes"));
    let len = u32::from_be_bytes(head[5..9].try_into().expect("4 bytes")) as usize;
    if !matches!(head[0], OPEN | DATA | CLOSE) || len > CHUNK {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a relay frame (kind {}, length {len})", head[0]),
        ));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    Ok(Some((head[0], conn, data)))
}

/// One end of the multiplexed stream: its writer and its connections.
struct Mux {
    out: Mutex<Box<dyn Write + Send>>,
    conns: Mutex<HashMap<u32, TcpStream>>,
}

impl Mux {
    fn send(&self, kind: u8, conn: u32, data: &[u8]) -> std::io::Result<()> {
        write_frame(&mut **self.out.lock().unwrap(), kind, conn, data)
    }

    /// Copies `stream` (connection `conn`) into frames until it ends; then the other side
    /// is told, unless it closed the connection first.
    fn copy_out(&self, conn: u32, mut stream: TcpStream) -> std::io::Result<()> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.send(DATA, conn, &buf[..n])?,
            }
        }
        let _ = stream.shutdown(Shutdown::Both);
        if self.conns.lock().unwrap().remove(&conn).is_some() {
            self.send(CLOSE, conn, &[])?;
        }
        Ok(())
    }

    /// Data for connection `conn`: written to its stream (a stream that fails is closed).
    fn deliver(&self, conn: u32, data: &[u8]) -> std::io::Result<()> {
        let stream = self
            .conns
            .lock()
            .unwrap()
            .get(&conn)
            .and_then(|s| s.try_clone().ok());
        if let Some(mut s) = stream {
            if s.write_all(data).is_err() {
                self.close(conn);
                self.send(CLOSE, conn, &[])?;
            }
        }
        Ok(())
    }

    /// The other side closed `conn`.
    fn close(&self, conn: u32) {
        if let Some(s) = self.conns.lock().unwrap().remove(&conn) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Reads the other side's frames until they end or this side's output fails; `open`
    /// takes each connection the other side opens.
    fn run(
        self: &Arc<Self>,
        input: &mut dyn Read,
        open: &dyn Fn(&Arc<Mux>, u32) -> std::io::Result<()>,
    ) {
        while let Ok(Some((kind, conn, data))) = read_frame(input) {
            let sent = match kind {
                OPEN => open(self, conn),
                DATA => self.deliver(conn, &data),
                _ => {
                    self.close(conn);
                    Ok(())
                }
            };
            if sent.is_err() {
                break;
            }
        }
    }

    fn close_all(&self) {
        for (_, s) in self.conns.lock().unwrap().drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// `__pitch-worker relay BIND` on the login node: see the module's documentation. Returns
/// the exit status.
pub(crate) fn serve(bind: &str) -> i32 {
    match relay(bind) {
        Ok(()) => 0,
        Err(e) => {
            crate::worker::say(&format!("pitch relay: {e}"));
            2
        }
    }
}

fn relay(bind: &str) -> Result<(), String> {
    let bind = if bind.is_empty() {
        crate::worker::hostname()
    } else {
        bind.to_string()
    };
    let (host, port) = crate::backend::workers::pilot::split_address(&bind)?;
    let listener = TcpListener::bind((host.as_str(), port))
        .map_err(|e| format!("cannot listen on {host}:{port} (pilot_address): {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{MARKER}{address}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to the driver: {e}"))?;
    let mux = Arc::new(Mux {
        out: Mutex::new(Box::new(stdout)),
        conns: Mutex::new(HashMap::new()),
    });
    // The driver's frames; their end (the SSH channel closed) ends the relay.
    let m = mux.clone();
    std::thread::spawn(move || {
        // The driver opens no connection: one it names is refused.
        m.run(&mut BufReader::new(std::io::stdin()), &|m, conn| {
            m.send(CLOSE, conn, &[])
        });
        std::process::exit(0);
    });
    let next = AtomicU32::new(0);
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // Out of descriptors, say: not a busy loop.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let conn = next.fetch_add(1, Ordering::Relaxed);
        let Ok(ours) = stream.try_clone() else {
            continue;
        };
        mux.conns.lock().unwrap().insert(conn, ours);
        if mux.send(OPEN, conn, &[]).is_err() {
            // The driver is gone.
            std::process::exit(0);
        }
        let m = mux.clone();
        std::thread::spawn(move || {
            if m.copy_out(conn, stream).is_err() {
                std::process::exit(0);
            }
        });
    }
    Err("the listener failed".into())
}

/// The driver's end of a relay: connections it announces go to `to`, the pilots' listener.
pub(crate) struct Relay {
    address: String,
    mux: Arc<Mux>,
    alive: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    /// Ends the SSH command (and so the relay); called once.
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Relay {
    /// Takes over a started relay command: `input` its output, `output` its input, `stop`
    /// what ends it, `errors` what it printed on its error stream so far (for messages).
    /// Waits for the address it prints.
    pub(crate) fn start(
        input: Box<dyn Read + Send>,
        output: Box<dyn Write + Send>,
        to: SocketAddr,
        stop: Box<dyn FnOnce() + Send>,
        errors: Arc<Mutex<String>>,
    ) -> Result<Relay, String> {
        let mux = Arc::new(Mux {
            out: Mutex::new(output),
            conns: Mutex::new(HashMap::new()),
        });
        let alive = Arc::new(AtomicBool::new(true));
        let (tx, rx) = std::sync::mpsc::channel();
        let (m, a) = (mux.clone(), alive.clone());
        let reader = std::thread::Builder::new()
            .name("pitch-relay".into())
            .spawn(move || {
                let mut input = BufReader::new(input);
                // A chatty shell start-up file may print before the relay.
                let mut line = String::new();
                let address = loop {
                    line.clear();
                    match input.read_line(&mut line) {
                        Ok(0) | Err(_) => break None,
                        Ok(_) => {
                            if let Some(a) = line.trim_end().strip_prefix(MARKER) {
                                break Some(a.to_string());
                            }
                        }
                    }
                };
                let started = address.is_some();
                let _ = tx.send(address);
                if started {
                    m.run(&mut input, &|m, conn| connect(m, conn, to));
                }
                a.store(false, Ordering::SeqCst);
                m.close_all();
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let mut relay = Relay {
            address: String::new(),
            mux,
            alive,
            reader: Some(reader),
            stop: Some(stop),
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(address)) => {
                relay.address = address;
                Ok(relay)
            }
            answer => {
                relay.close();
                let said = errors.lock().unwrap().trim().to_string();
                let why = match answer {
                    Ok(_) => "it ended without saying its address".to_string(),
                    Err(_) => format!("it said no address within {START_TIMEOUT:?}"),
                };
                Err(if said.is_empty() {
                    format!("{why} (and nothing else)")
                } else {
                    format!("{why}: {said}")
                })
            }
        }
    }

    /// `host:port` on the login node, where the pilots connect.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Whether the relay still runs (its stream has not ended).
    pub(crate) fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Ends the relay command and every connection through it.
    pub(crate) fn close(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
        self.mux.close_all();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.close();
    }
}

/// Starts the relay `line` on a session of its own (the built-in client): a thread pumps
/// the command's channel to one end of a socket pair, whose other end is the [`Relay`]'s
/// stream. libssh2 locks a session for each call, so one thread serves the channel, both
/// ways, without blocking. Ending it (the executor closes) disconnects the session, which
/// ends the relay's input; so does the death of this process.
pub(crate) fn over_libssh2(
    session: ssh2::Session,
    line: &str,
    to: SocketAddr,
) -> Result<Relay, String> {
    let mut channel = session
        .channel_session()
        .map_err(|e| format!("cannot open an SSH channel: {e}"))?;
    channel
        .exec(line)
        .map_err(|e| format!("cannot start the relay: {e}"))?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| format!("cannot create a socket pair: {e}"))?;
    let errors = Arc::new(Mutex::new(String::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (e, s) = (errors.clone(), stop.clone());
    let pump = std::thread::Builder::new()
        .name("pitch-relay-ssh".into())
        .spawn(move || pump(&session, &mut channel, theirs, &s, &e))
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let input = ours
        .try_clone()
        .map_err(|e| format!("cannot clone a socket: {e}"))?;
    let shut = ours
        .try_clone()
        .map_err(|e| format!("cannot clone a socket: {e}"))?;
    Relay::start(
        Box::new(input),
        Box::new(ours),
        to,
        Box::new(move || {
            stop.store(true, Ordering::SeqCst);
            let _ = shut.shutdown(Shutdown::Both);
            let _ = pump.join();
        }),
        errors,
    )
}

/// Copies between the relay command's `channel` and `local` until either ends or `stop`;
/// the relay's error stream goes to `errors`. Then the session is closed.
fn pump(
    session: &ssh2::Session,
    channel: &mut ssh2::Channel,
    mut local: std::os::unix::net::UnixStream,
    stop: &AtomicBool,
    errors: &Mutex<String>,
) {
    use std::io::ErrorKind::{Interrupted, WouldBlock};
    use std::os::fd::AsRawFd;
    let pending = |e: &std::io::Error| matches!(e.kind(), WouldBlock | Interrupted);
    session.set_keepalive(false, 30);
    session.set_blocking(false);
    let _ = local.set_nonblocking(true);
    let (mut down, mut up): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; CHUNK];
    'pump: while !stop.load(Ordering::SeqCst) {
        let mut moved = false;
        if down.is_empty() {
            match channel.read(&mut buf) {
                Ok(0) if channel.eof() => break,
                Ok(n) => {
                    down.extend_from_slice(&buf[..n]);
                    moved |= n > 0;
                }
                Err(e) if pending(&e) => {}
                Err(_) => break,
            }
        }
        if let Ok(n @ 1..) = channel.stderr().read(&mut buf) {
            let mut e = errors.lock().unwrap();
            if e.len() < CHUNK {
                e.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            moved = true;
        }
        while !down.is_empty() {
            match local.write(&down) {
                Ok(n) => {
                    down.drain(..n);
                    moved = true;
                }
                Err(e) if pending(&e) => break,
                Err(_) => break 'pump,
            }
        }
        if up.is_empty() {
            match local.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    up.extend_from_slice(&buf[..n]);
                    moved = true;
                }
                Err(e) if pending(&e) => {}
                Err(_) => break,
            }
        }
        while !up.is_empty() {
            match channel.write(&up) {
                Ok(n) => {
                    up.drain(..n);
                    moved = true;
                }
                Err(e) if pending(&e) => break,
                Err(_) => break 'pump,
            }
        }
        let _ = session.keepalive_send();
        if !moved {
            let mut fds = [
                libc::pollfd {
                    fd: session.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: local.as_raw_fd(),
                    events: if up.is_empty() { libc::POLLIN } else { 0 },
                    revents: 0,
                },
            ];
            // Short: data libssh2 already read for the channel does not wake the poll.
            // SAFETY: two valid pollfds.
            unsafe {
                libc::poll(fds.as_mut_ptr(), 2, 20);
            }
        }
    }
    let _ = local.shutdown(Shutdown::Both);
    session.set_blocking(true);
    session.set_timeout(2000);
    // What the relay said last (why it did not start).
    let mut rest = String::new();
    if channel.eof() && channel.stderr().read_to_string(&mut rest).is_ok() {
        errors.lock().unwrap().push_str(&rest);
    }
    let _ = channel.send_eof();
    let _ = channel.close();
    let _ = session.disconnect(None, "the executor ended", None);
}

/// The driver's side of a connection the relay opened: connected to `to`, and copied
/// back in frames by a thread of its own; one that cannot be made is closed at once.
fn connect(mux: &Arc<Mux>, conn: u32, to: SocketAddr) -> std::io::Result<()> {
    let Ok((ours, stream)) = TcpStream::connect(to).and_then(|s| Ok((s.try_clone()?, s))) else {
        return mux.send(CLOSE, conn, &[]);
    };
    let _ = stream.set_nodelay(true);
    mux.conns.lock().unwrap().insert(conn, ours);
    let m = mux.clone();
    let spawned = std::thread::Builder::new()
        .name("pitch-relay-conn".into())
        .spawn(move || {
            let _ = m.copy_out(conn, stream);
        });
    if spawned.is_err() {
        mux.close(conn);
        return mux.send(CLOSE, conn, &[]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, OPEN, 7, &[]).unwrap();
        write_frame(&mut buf, DATA, 7, b"hello").unwrap();
        write_frame(&mut buf, CLOSE, u32::MAX, &[]).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap(), Some((OPEN, 7, vec![])));
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((DATA, 7, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), Some((CLOSE, u32::MAX, vec![])));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let mut bad = &b"X\0\0\0\0\0\0\0\0"[..];
        assert!(read_frame(&mut bad).is_err());
        let mut huge = Vec::new();
        write_frame(&mut huge, DATA, 1, &[]).unwrap();
        huge[5..9].copy_from_slice(&(CHUNK as u32 + 1).to_be_bytes());
        assert!(read_frame(&mut &huge[..]).is_err());
    }

    /// The relay binary's side run here as a child (`sh` in place of ssh would need the
    /// binary): the two halves of the protocol are exercised against each other through
    /// pipes instead, with a real listener behind.
    #[test]
    fn connections_cross_the_stream_both_ways_and_close() {
        // The "driver's" listener: echoes in upper case, then closes.
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = target.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = target.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf.to_ascii_uppercase()).unwrap();
        });
        // Frames the "relay" sends, through a socket pair standing for the SSH channel.
        let (driver_end, mut relay_end) = std::os::unix::net::UnixStream::pair().unwrap();
        let (read_half, write_half) = (driver_end.try_clone().unwrap(), driver_end);
        let errors = Arc::new(Mutex::new(String::new()));
        relay_end
            .write_all(b"motd noise\nPITCH-RELAY login:4242\n")
            .unwrap();
        let stopped = Arc::new(AtomicBool::new(false));
        let s = stopped.clone();
        let shut = relay_end.try_clone().unwrap();
        let mut relay = Relay::start(
            Box::new(read_half),
            Box::new(write_half),
            to,
            Box::new(move || {
                s.store(true, Ordering::SeqCst);
                let _ = shut.shutdown(Shutdown::Both);
            }),
            errors,
        )
        .unwrap();
        assert_eq!(relay.address(), "login:4242");
        write_frame(&mut relay_end, OPEN, 3, &[]).unwrap();
        write_frame(&mut relay_end, DATA, 3, b"hello").unwrap();
        let mut r = relay_end.try_clone().unwrap();
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((DATA, 3, b"HELLO".to_vec()))
        );
        // The listener's side closed: the relay is told.
        assert_eq!(read_frame(&mut r).unwrap(), Some((CLOSE, 3, vec![])));
        server.join().unwrap();
        // A connection the driver cannot make is closed at once.
        write_frame(&mut relay_end, OPEN, 4, &[]).unwrap();
        assert_eq!(read_frame(&mut r).unwrap(), Some((CLOSE, 4, vec![])));
        assert!(relay.alive());
        relay.close();
        assert!(stopped.load(Ordering::SeqCst) && !relay.alive());
    }

    #[test]
    fn a_relay_that_never_says_its_address_is_an_error_with_its_words() {
        let (driver_end, relay_end) = std::os::unix::net::UnixStream::pair().unwrap();
        let errors = Arc::new(Mutex::new("exec: no such file".to_string()));
        drop(relay_end);
        let e = Relay::start(
            Box::new(driver_end.try_clone().unwrap()),
            Box::new(driver_end),
            "127.0.0.1:9".parse().unwrap(),
            Box::new(|| {}),
            errors,
        )
        .err()
        .unwrap();
        assert_eq!(e, "it ended without saying its address: exec: no such file");
    }
}
