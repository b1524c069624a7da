//! Loopback ports for servers a test starts in another process, which
//! cannot be handed an already-bound listener.

use std::net::TcpListener;

/// `n` distinct loopback ports that were free a moment ago. All are bound
/// at once, so none is handed out twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("a bound address").port())
        .collect()
}

/// One loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_are_distinct_and_bindable() {
        let ports = free_ports(8);
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 8, "{ports:?}");
        for port in ports {
            assert_ne!(port, 0);
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
        TcpListener::bind(("127.0.0.1", free_port())).unwrap();
    }
}
