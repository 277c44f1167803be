//! Free local ports for a service a test starts as a separate process.
//!
//! Taken below the kernel's ephemeral range (32768 and up by default): a port from there can be
//! handed to any outgoing connection (every test opens many, to the broker and the database)
//! between the check and the service binding it, and the service then fails with "address in
//! use". Below it, only another test picking the same block could, and blocks are picked at random.

/// Lowest port handed out.
const LOWEST: u16 = 20_000;
/// One past the highest port handed out (below the default ephemeral range).
const HIGHEST: u16 = 32_000;

/// A block of `count` consecutive ports on 127.0.0.1 that are free now; returns the first.
pub fn free_port_block(count: u16) -> u16 {
    let count = count.max(1);
    let blocks = u128::from((HIGHEST - LOWEST) / count);
    loop {
        let block = u16::try_from(uuid::Uuid::new_v4().as_u128() % blocks).unwrap_or_default();
        let base = LOWEST + block * count;
        if (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// One free port on 127.0.0.1 (see [`free_port_block`]).
pub fn free_port() -> u16 {
    free_port_block(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_free_consecutive_and_below_the_ephemeral_range() {
        let base = free_port_block(5);
        assert!((LOWEST..HIGHEST - 4).contains(&base), "{base}");
        for port in base..base + 5 {
            assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        }
    }
}
