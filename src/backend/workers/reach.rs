//! How the pilots reach the driver ([`Reach`]): its listener directly, or, with remote
//! submission over SSH (feature `remote`), a relay on the login node that carries their
//! connections over the executor's SSH connection (see `backend::transport::relay`).

use std::net::TcpListener;
use std::path::Path;

use crate::backend::queue::Queue;
use crate::error::{Error, TaskError};

use super::pilot::split_address;

/// Where the pilots connect.
pub(crate) struct Reach {
    /// `host:port` of the driver's listener.
    listening: String,
    /// With remote submission: the relay's settings and the relay once started.
    #[cfg(feature = "remote")]
    relayed: Option<Relayed>,
}

#[cfg(feature = "remote")]
struct Relayed {
    /// What the relay binds on the login node (`pilot_address`; empty: its host name).
    bind: String,
    /// The driver's listener, where the relay's connections go.
    to: std::net::SocketAddr,
    /// The secret file here, which goes up for the pilots with the first submission.
    secret: std::path::PathBuf,
    relay: std::sync::Mutex<Option<crate::backend::transport::relay::Relay>>,
}

/// `host:port`, with brackets around an IPv6 host.
fn joined(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Reach {
    /// Opens the driver's listener: on `address` (the `pilot_address` setting, default this
    /// host's name), or with `remote` submission on this machine's loopback, `address` then
    /// being what the relay binds on the login node. `secret` is the pilots' secret file.
    pub(crate) fn listen(
        address: Option<&str>,
        remote: bool,
        secret: &Path,
    ) -> Result<(TcpListener, Reach), Error> {
        let (host, port) = match (remote, address) {
            (false, Some(a)) => split_address(a).map_err(Error::Config)?,
            (false, None) => (crate::worker::hostname(), 0),
            // The builder checked the relay's address.
            (true, _) => ("127.0.0.1".to_string(), 0),
        };
        let listener = TcpListener::bind((host.as_str(), port)).map_err(|e| {
            Error::Config(format!(
                "block_allocation: cannot listen for pilots on {host}:{port}: {e} (set the \
                 address the pilots connect to with pilot_address)"
            ))
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Config(format!("block_allocation: {e}")))?;
        #[cfg(not(feature = "remote"))]
        let _ = secret;
        let reach = Reach {
            listening: joined(&host, local.port()),
            #[cfg(feature = "remote")]
            relayed: remote.then(|| Relayed {
                bind: address.unwrap_or_default().to_string(),
                to: local,
                secret: secret.to_path_buf(),
                relay: std::sync::Mutex::new(None),
            }),
        };
        Ok((listener, reach))
    }

    /// The address for the pilots of a new submission: the listener's, or the relay's,
    /// starting it (and sending the secret up) the first time, or again when it died. `exe`
    /// is the staged worker binary where the jobs see it.
    #[cfg_attr(not(feature = "remote"), allow(unused_variables))]
    pub(crate) fn address(
        &self,
        rt: &tokio::runtime::Runtime,
        queue: &Queue,
        exe: &Path,
    ) -> Result<String, TaskError> {
        #[cfg(feature = "remote")]
        if let Some(r) = &self.relayed {
            let mut relay = r.relay.lock().unwrap();
            if let Some(old) = relay.as_ref().filter(|old| !old.alive()) {
                queue.warn(format!(
                    "the pilots' relay on the login node ({}) ended: starting another",
                    old.address()
                ));
                *relay = None;
            }
            if relay.is_none() {
                let failed = |detail: String| TaskError::Launch {
                    kind: crate::error::LaunchErrorKind::Other,
                    what: "the pilots' relay on the login node".into(),
                    detail,
                };
                rt.block_on(
                    queue
                        .transport()
                        .upload(std::slice::from_ref(&r.secret), false),
                )
                .map_err(|e| failed(e.to_string()))?;
                *relay = Some(
                    rt.block_on(queue.transport().relay(exe, &r.bind, r.to))
                        .map_err(failed)?,
                );
            }
            return Ok(relay.as_ref().expect("started above").address().to_string());
        }
        Ok(self.listening.clone())
    }

    /// The address as messages and `pitch render` show it (a relay that has not started
    /// yet: its bind address and a placeholder port).
    pub(crate) fn shown(&self) -> String {
        #[cfg(feature = "remote")]
        if let Some(r) = &self.relayed {
            if let Some(relay) = r.relay.lock().unwrap().as_ref() {
                return relay.address().to_string();
            }
            let bind = if r.bind.is_empty() {
                "LOGIN-HOST"
            } else {
                &r.bind
            };
            return match split_address(bind) {
                Ok((host, 0)) if host.contains(':') => format!("[{host}]:RELAY-PORT"),
                Ok((host, 0)) => format!("{host}:RELAY-PORT"),
                _ => bind.to_string(),
            };
        }
        self.listening.clone()
    }

    /// The executor ended: the relay stops and the secret's copy on the login node goes.
    #[cfg_attr(not(feature = "remote"), allow(unused_variables))]
    pub(crate) fn close(&self, rt: &tokio::runtime::Runtime, queue: &Queue) {
        #[cfg(feature = "remote")]
        if let Some(r) = &self.relayed {
            let started = r.relay.lock().unwrap().take().is_some();
            if started {
                rt.block_on(queue.transport().remove(std::slice::from_ref(&r.secret)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_local_listener_is_shown_as_it_listens_and_bad_addresses_are_refused() {
        let secret = PathBuf::from("/nowhere/secret");
        let (l, reach) = Reach::listen(Some("127.0.0.1"), false, &secret).unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(reach.shown(), format!("127.0.0.1:{port}"));
        let e = Reach::listen(Some("h:x"), false, &secret).err().unwrap();
        assert!(e.to_string().contains("bad port"), "{e}");
    }

    #[cfg(feature = "remote")]
    #[test]
    fn a_relayed_reach_listens_on_loopback_and_shows_the_relay_to_be() {
        let secret = PathBuf::from("/nowhere/secret");
        let (l, reach) = Reach::listen(None, true, &secret).unwrap();
        assert!(l.local_addr().unwrap().ip().is_loopback());
        assert_eq!(reach.shown(), "LOGIN-HOST:RELAY-PORT");
        let (_, reach) = Reach::listen(Some("login1"), true, &secret).unwrap();
        assert_eq!(reach.shown(), "login1:RELAY-PORT");
        let (_, reach) = Reach::listen(Some("login1:4100"), true, &secret).unwrap();
        assert_eq!(reach.shown(), "login1:4100");
    }
}
