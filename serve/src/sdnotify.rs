//! systemd's notify protocol (`sd_notify(3)`), without libsystemd: one
//! datagram per message to the socket named by `NOTIFY_SOCKET` (a path, or
//! `@name` for an abstract socket). Without `NOTIFY_SOCKET` (not started by
//! systemd with `Type=notify`) every send is a no-op.
//!
//! `WATCHDOG_USEC` (with `WATCHDOG_PID`, when set, naming this process) asks
//! for `WATCHDOG=1` at least that often; [`Notifier::watchdog_interval`] is
//! half of it, as systemd recommends.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go; cheap to share.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd sets (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> io::Result<Self> {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty());
        let watchdog_pid_ok = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.trim().parse::<u32>().ok()).is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0 && watchdog_pid_ok)
            .map(|usec| Duration::from_micros(usec / 2));
        let target = match socket {
            None => None,
            Some(name) => {
                let name = name.to_string_lossy().into_owned();
                let addr = if let Some(abstract_name) = name.strip_prefix('@') {
                    use std::os::linux::net::SocketAddrExt;
                    SocketAddr::from_abstract_name(abstract_name.as_bytes())?
                } else {
                    SocketAddr::from_pathname(&name)?
                };
                Some((UnixDatagram::unbound()?, addr))
            }
        };
        Ok(Notifier { target, watchdog })
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1` (half of `WATCHDOG_USEC`), when asked to.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines).
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.target {
            None => Ok(()),
            Some((socket, addr)) => socket.send_to_addr(state.as_bytes(), addr).map(|_| ()),
        }
    }
}

/// A `STATUS=` value: one line, at most 200 characters (what `systemctl status` shows).
pub fn status_line(text: &str) -> String {
    let one: String = text.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    one.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_datagram_socket_and_status_stays_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier {
            target: Some((UnixDatagram::unbound().expect("socket"), SocketAddr::from_pathname(&path).expect("addr"))),
            watchdog: None,
        };
        notifier.send(&format!("READY=1\nSTATUS={}", status_line("two\nlines"))).expect("send");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(std::str::from_utf8(&buf[..n]).expect("utf8"), "READY=1\nSTATUS=two lines");
    }
}
